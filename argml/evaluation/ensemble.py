"""Measure an ensemble of trained models on a cached split: `argml ensemble MODEL_DIR MODEL_DIR ...`.

Each model (a `data/models/<mode>` folder) answers the faces of `--split` from the feature cache (`--features`,
whose block the models must start from); the ensemble averages their gender and race probabilities and
their 9-bin age probabilities (binned: the head; exact: summed over each bin's ages), and takes the mean of
their ages in years (each under its own read-out). Prints each model's figures and the ensemble's, on the real
faces of the split (validation by default: choose on it, not on the test split).

With `--flip` (test-time flip averaging, measured here, not used by the entry points), each model also answers
the split's mirrored faces, whose block inputs the frozen layers compute from the TFRecords (`--tfrecords`), and
its flipped answer is the mean of the two passes' probabilities, read out as before.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import keras
import numpy as np
from tqdm import tqdm

from argml.core.card import ModelCard
from argml.core.errors import command
from argml.core.labels import TASKS, AgeMode
from argml.data import tfrecords
from argml.core.errors import BadInput
from argml.model import features
from argml.model.age import answer_readout, bin_probabilities
from argml.model.batches import predict_cached
from argml.serving.classifier import Classifier

REAL_FACES = AgeMode.of("binned")  # its splits leave out the exact-age balancing copies: real faces only


def mirrored_block_inputs(model_dir: str | Path, tfrecords_dir: str | Path, split_name: str,
                          batch_size: int = 64) -> np.ndarray:
    """The block inputs of a split's images mirrored, computed by the model's frozen layers, in the feature
    cache's row order (every variant, as argml.model.features caches them): a drop-in for the split's "lower"."""
    lower = Classifier(Path(model_dir) / "model.keras").model.layers[1]  # image -> lower -> ... (model.train)
    dataset = tfrecords.load_dataset(tfrecords_dir, split_name, batch_size=batch_size, shuffle=False)
    total = tfrecords.count(tfrecords_dir, split_name)
    batches = []
    with tqdm(total=total, desc=f"mirrored {split_name}", unit="img", mininterval=2) as progress:
        for images, _ in dataset.as_numpy_iterator():
            batches.append(np.asarray(lower.predict_on_batch(images[:, :, ::-1]), np.float16))  # NHWC: width
            progress.update(len(images))
    return np.concatenate(batches)


def cached_answers(model_dir: str | Path, split: dict, from_block: str, batch_size: int = 64,
                   mirrored: np.ndarray | None = None) -> tuple[dict, dict | None]:
    """One model's answers, each {"gender", "race", "bins", "years"}, on the cached faces of `split`
    (features.load_split): (from one pass, from the mean of that pass and the mirrored one); the second is None
    without `mirrored` (mirrored_block_inputs). The model is loaded and the plain pass run once for both."""
    classifier = Classifier(Path(model_dir) / "model.keras")
    card = classifier.card
    if card.features.from_block != from_block:
        raise BadInput(f"{model_dir} starts from {card.features.from_block}, the cache from {from_block}: "
                       "rebuild the cache (dvc repro features) with the model's features.from_block")
    _, upper, heads = classifier.model.layers[1:]  # image -> lower -> upper features -> heads (model.train)
    block_input = keras.Input(tuple(card.features.lower_shape))
    cached_model = keras.Model(block_input, heads(upper(block_input)))
    outputs = predict_cached(cached_model, split, batch_size)
    if mirrored is None:
        return _read_out(outputs, card), None
    mirrored_outputs = predict_cached(cached_model, {**split, "lower": mirrored}, batch_size)
    both = {task: (outputs[task] + mirrored_outputs[task]) / 2 for task in TASKS}
    return _read_out(outputs, card), _read_out(both, card)


def cached_probabilities(model_dir: str | Path, split: dict, from_block: str, batch_size: int = 64,
                         mirrored: np.ndarray | None = None) -> dict:
    """One model's {"gender", "race", "bins", "years"} on the cached faces of `split`; with `mirrored`, from
    the mean of the plain and the mirrored passes (see cached_answers)."""
    plain, flipped = cached_answers(model_dir, split, from_block, batch_size, mirrored)
    return plain if flipped is None else flipped


def _read_out(outputs: dict, card: ModelCard) -> dict:
    """The model's probabilities as {"gender", "race", "bins" (9-bin probabilities), "years"}."""
    age_probabilities = np.asarray(outputs["age"], dtype=np.float64)
    return {"gender": outputs["gender"], "race": outputs["race"], "bins": bin_probabilities(age_probabilities, card.mode),
            "years": answer_readout(age_probabilities, card.mode, card.age_values, card.readout)[1]}


def averaged(answers: list[dict]) -> dict:
    return {key: np.mean([answer[key] for answer in answers], axis=0) for key in answers[0]}


def figures(answer: dict, labels: dict) -> dict[str, float]:
    """Accuracies in %, MAE in years and CS@5 in %, with the 9-bin label the arg-max of the bin probabilities."""
    error = np.abs(answer["years"] - labels["age_years"])
    return {"gender": 100 * float((answer["gender"].argmax(1) == labels["gender"]).mean()),
            "race": 100 * float((answer["race"].argmax(1) == labels["race"]).mean()),
            "9-bin age": 100 * float((answer["bins"].argmax(1) == labels["age_bin"]).mean()),
            "MAE": float(error.mean()), "CS@5": 100 * float((error <= 5).mean())}


def measure(model_dirs: list[str], features_dir: str, split_name: str,
            tfrecords_dir: str | None = None) -> tuple[int, dict[str, dict]]:
    """(faces, {model folder or "ensemble (mean)": figures}) on the real faces of a cached split; with
    `tfrecords_dir`, also each model's and the ensemble's flip-averaged figures ("... + flip")."""
    info = features.read_info(features_dir)
    split = features.load_split(features_dir, split_name, REAL_FACES, info)
    mirrored = None
    if tfrecords_dir is not None:
        mirrored = mirrored_block_inputs(model_dirs[0], tfrecords_dir, split_name)  # frozen layers: shared
        if mirrored.shape != split["lower"].shape:
            raise BadInput(f"{tfrecords_dir} holds {len(mirrored)} {split_name} images, the feature cache "
                           f"{len(split['lower'])}: run `dvc repro features` on these TFRecords")
    plain, flipped = {}, {}
    for folder in model_dirs:
        plain[folder], flipped[f"{folder} + flip"] = cached_answers(folder, split, info.from_block,
                                                                    mirrored=mirrored)
    answers = dict(plain)
    if len(plain) > 1:
        answers["ensemble (mean)"] = averaged(list(plain.values()))
    if mirrored is not None:
        answers.update(flipped)
        if len(flipped) > 1:
            answers["ensemble (mean) + flip"] = averaged(list(flipped.values()))
    return len(split["index"]), {name: figures(answer, split["labels"]) for name, answer in answers.items()}


@command("ensemble")
def main(argv: list[str] | None = None, prog: str = "argml ensemble") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="trained model folders, e.g. data/models/binned")
    parser.add_argument("--features", default="data/features", help="the feature cache (stage features)")
    parser.add_argument("--split", default="val", choices=("val", "test"))
    parser.add_argument("--flip", action="store_true",
                        help="also measure test-time flip averaging (mirrored faces from --tfrecords)")
    parser.add_argument("--tfrecords", default="data/tfrecords", help="the TFRecords (stage tfrecords), for --flip")
    args = parser.parse_args(argv)
    faces, measured = measure(args.models, args.features, args.split, args.tfrecords if args.flip else None)
    print(f"{args.split} split, {faces} faces")
    for name, values in measured.items():
        print(f"{name}: " + ", ".join(f"{key} {value:.2f}" for key, value in values.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
