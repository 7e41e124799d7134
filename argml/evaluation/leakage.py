"""Near-duplicate audit of the published split: how close each test face is to its nearest training face.

UTKFace holds byte-identical and near-identical photos (the same picture re-encoded, re-cropped or
retouched). The labels stage drops byte-identical copies before splitting; this audit measures what is left,
in the pretrained FaceNet embedding (512-d, unit length), computed from the head features the features stage
cached.

Threshold: a test face has a *near-twin* in training when its cosine to the nearest training original is at
least the `quantile` of the cosines between training originals and their own augmented copies (rotation,
mirror flip, noise, noise + flip): it is at least as close to a training face as a typical augmented copy is
to its source. That is the similarity a model sees when augmentation runs before the split (the report's
protocol), so faces above it are faces the model has, in effect, trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from argml.core.images import read_aligned
from argml.core.errors import BadInput
from argml.core.labels import RACES, TASKS, VARIANTS
from argml.data.augment import copy_source
from argml.evaluation import metrics
from argml.model import facenet, features

LABEL_KEYS = ("age_years", "age_bin", "gender", "race")  # compared between a test face and its neighbour


def embedding_model(features_dir: str | Path):
    """FaceNet's last layers, from the cached head features (features.head_input: pooled or bottleneck) to its
    unit-length 512-d embeddings: the features stage ran the blocks before them once already."""
    import keras

    info = features.read_info(features_dir)
    backbone = facenet.load_facenet(info.weights)
    width = np.load(Path(features_dir) / f"train.{info.head_input}.npy", mmap_mode="r").shape[1]
    head = keras.Input((width,), name="head_features")
    x = head
    if info.head_input == "pooled":
        x = backbone.get_layer("Bottleneck.BatchNorm")(backbone.get_layer("Bottleneck")(x))
    return keras.Model(head, backbone.get_layer("embeddings")(x), name="facenet_embeddings_from_head")


def embed(model, features_dir: str | Path, split: str, batch_size: int = 128) -> tuple[np.ndarray, dict]:
    """Embeddings [N, 512] of a split's cached rows by `embedding_model(features_dir)`, and the split's labels."""
    features_dir = Path(features_dir)
    head = np.load(features_dir / f"{split}.{features.read_info(features_dir).head_input}.npy")
    return (np.asarray(model.predict(head, batch_size=batch_size, verbose=0), np.float32),
            dict(np.load(features_dir / f"{split}.labels.npz")))


def nearest(queries: np.ndarray, references: np.ndarray, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each unit-length query, the cosine to its nearest reference and that reference's row."""
    cosines, rows = [], []
    for start in range(0, len(queries), chunk):
        similarity = queries[start:start + chunk] @ references.T
        best = similarity.argmax(axis=1)
        rows.append(best)
        cosines.append(similarity[np.arange(len(best)), best])
    return np.concatenate(cosines), np.concatenate(rows)


def copy_cosines(embeddings: np.ndarray, file_names: np.ndarray, variants: np.ndarray) -> np.ndarray:
    """Cosine between each augmented copy and its source original (rows of one split)."""
    originals = {name: row for row, name in enumerate(file_names) if variants[row] == VARIANTS["original"]}
    copies = np.flatnonzero(variants != VARIANTS["original"])
    sources = np.array([originals[copy_source(file_names[row])] for row in copies], dtype=int)
    return np.einsum("ij,ij->i", embeddings[copies], embeddings[sources])


def twin_threshold(cosines_to_source: np.ndarray, quantile: float) -> float:
    if len(cosines_to_source) == 0:
        raise BadInput("no augmented copies in the training split to calibrate the near-twin threshold")
    return float(np.quantile(cosines_to_source, quantile))


def test_neighbours(test_embeddings: np.ndarray, test_labels: dict, train_embeddings: np.ndarray,
                    train_labels: dict) -> pd.DataFrame:
    """One row per test original: its nearest training original and their cosine."""
    test_rows = np.flatnonzero(test_labels["variant"] == VARIANTS["original"])
    train_rows = np.flatnonzero(train_labels["variant"] == VARIANTS["original"])
    cosine, nearest_row = nearest(test_embeddings[test_rows], train_embeddings[train_rows])
    neighbour_rows = train_rows[nearest_row]
    table = pd.DataFrame({
        "file": test_labels["file_name"][test_rows],
        "race": [RACES[r] for r in test_labels["race"][test_rows]],
        "nearest_train_file": train_labels["file_name"][neighbour_rows],
        "cosine": cosine,
    })
    for key in LABEL_KEYS:
        table[f"{key}_test"] = test_labels[key][test_rows]
        table[f"{key}_train"] = train_labels[key][neighbour_rows]
    return table


def label_agreement(pairs: pd.DataFrame) -> dict:
    """How often a test face and its nearest training face carry the same labels: what a model that
    memorised the training face would score on the test face."""
    if pairs.empty:
        return {}
    same = {key: pairs[f"{key}_test"] == pairs[f"{key}_train"] for key in ("gender", "race", "age_bin")}
    same["age_within_5_years"] = (pairs["age_years_test"] - pairs["age_years_train"]).abs() <= 5
    return {key: round(float(agrees.mean()), 4) for key, agrees in same.items()}


def metrics_with_and_without(predictions: pd.DataFrame, twins: set[str]) -> dict:
    """A mode's test metrics on all faces, without the near-twins, and on the near-twins alone."""
    is_twin = predictions["file"].isin(twins)
    parts = {"all": predictions, "without_twins": predictions[~is_twin], "twins_only": predictions[is_twin]}
    out = {}
    for name, rows in parts.items():
        summary = metrics.summary_metrics(rows) if len(rows) else {}
        out[name] = {"faces": int(len(rows)),
                     **{key: round(value, 4) for key, value in summary.items()
                        if key.split(".")[0] in TASKS and key.endswith(("accuracy", "mae", "cs5"))}}
    return out


def audit(neighbours: pd.DataFrame, cosines_to_source: np.ndarray, quantile: float,
          predictions: dict[str, pd.DataFrame]) -> tuple[dict, pd.DataFrame]:
    """The leakage report (threshold, how many test faces have a near-twin, overall and per race, the
    distribution of nearest cosines, each mode's metrics with and without the near-twins) and `neighbours`
    with a `near_twin` column: one decision for both."""
    threshold = twin_threshold(cosines_to_source, quantile)
    is_twin = neighbours["cosine"] >= threshold
    twins = set(neighbours.loc[is_twin, "file"])
    per_race = neighbours.assign(twin=is_twin).groupby("race")["twin"].agg(["sum", "size"])
    report = {
        "threshold": {"cosine": threshold, "quantile": quantile,
                      "calibration": "cosine between training originals and their own augmented copies",
                      "copies": int(len(cosines_to_source)),
                      "copy_cosine_percentiles": {f"p{q}": round(float(np.percentile(cosines_to_source, q)), 4)
                                                  for q in (1, 5, 50)}},
        "test_faces": int(len(neighbours)),
        "near_twins": int(is_twin.sum()),
        "near_twin_fraction": round(float(is_twin.mean()), 4),
        "near_twins_per_race": {race: {"near_twins": int(row["sum"]), "faces": int(row["size"])}
                                for race, row in per_race.iterrows()},
        "near_twin_label_agreement": label_agreement(neighbours[is_twin]),
        "nearest_cosine_percentiles": {f"p{q}": round(float(np.percentile(neighbours["cosine"], q)), 4)
                                       for q in (50, 90, 99, 100)},
        "metrics": {mode: metrics_with_and_without(rows, twins) for mode, rows in predictions.items()},
    }
    return report, neighbours.assign(near_twin=is_twin)


def sheet_examples(neighbours: pd.DataFrame, per_side: int = 4) -> pd.DataFrame:
    """Pairs worth looking at: the closest pairs of all, then those just above and just below the threshold
    (`neighbours` as `audit` marks them)."""
    ranked = neighbours.sort_values("cosine", ascending=False)
    above = ranked[ranked["near_twin"]]
    below = ranked[~ranked["near_twin"]]
    return pd.concat([ranked.head(2 * per_side), above.tail(per_side), below.head(per_side)]).drop_duplicates("file")


def contact_sheet(pairs: pd.DataFrame, aligned_dir: str | Path, out_path: str | Path, size: int = 96) -> None:
    """A PNG of test faces (left) beside their nearest training face (right), cosine underneath, one pair
    per cell, four pairs a row."""
    import cv2

    aligned_dir = Path(aligned_dir)
    cells = []
    for pair in pairs.itertuples():
        faces = [cv2.resize(read_aligned(aligned_dir / name), (size, size))
                 for name in (pair.file, pair.nearest_train_file)]
        caption = np.full((18, 2 * size, 3), 255, np.uint8)
        cv2.putText(caption, f"cos {pair.cosine:.3f}", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        cells.append(np.vstack([np.hstack(faces), caption]))
    columns = 4
    blank = np.full_like(cells[0], 255)
    cells += [blank] * (-len(cells) % columns)
    rows = [np.hstack(cells[i:i + columns]) for i in range(0, len(cells), columns)]
    encoded, png = cv2.imencode(".png", np.vstack(rows))
    if not encoded:
        raise OSError(f"could not encode the contact sheet {out_path}")
    Path(out_path).write_bytes(png.tobytes())
