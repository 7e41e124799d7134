"""End to end, data side: the whole `dvc repro` on a copy of the repository (see conftest.pipeline_repo)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import yaml

from argml.data import utkface as labels

pytestmark = pytest.mark.slow

from conftest import DVC, REPO, run, set_param

LIMIT = 150
# UTKFace as SOURCE.md and the labels stage count it: byte-identical groups, those among them whose labels
# conflict (dropped whole), the faces left, and the published 80/10/10 split of them (data.seed 42)
DUPLICATE_GROUPS, EXTRA_COPIES, CONFLICTING_GROUPS, UNIQUE_FACES = 375, 390, 259, 23056
FULL_SPLIT = {"train": 18444, "val": 2306, "test": 2306}


@pytest.fixture(scope="module")
def pipeline(pipeline_repo):
    return pipeline_repo


def test_repro_runs_every_stage_and_counts_add_up(pipeline):
    copy, _, output = pipeline
    for stage in ("params", "download", "labels", "align", "augment", "tfrecords", "features", "train@binned",
                  "train@exact", "evaluate@binned", "evaluate@exact", "export@binned", "export@exact", "champion",
                  "demo", "leakage"):
        assert f"Running stage '{stage}'" in output, stage
    for noise in ("absl::InitializeLog", "oneDNN custom operations", "Add type hints to the `predict` method"):
        assert noise not in output, noise  # only argml's lines and real warnings

    table = labels.load_table(copy / "reports" / "split.csv.gz")
    assert len(table) == LIMIT
    assert table["file"].is_unique and table["md5"].is_unique
    assert table["split"].value_counts().to_dict() == {"train": LIMIT - 2 * round(0.1 * LIMIT),
                                                       "val": round(0.1 * LIMIT), "test": round(0.1 * LIMIT)}

    data = json.loads((copy / "reports" / "data.json").read_text())
    assert data["images_seen"] == 23708 and data["parsed"] == 23705
    assert len(data["malformed"]) == 5 and sum(m["recovered"] for m in data["malformed"]) == 2
    duplicates = data["duplicates"]
    assert (duplicates["duplicate_groups"], duplicates["extra_copies"], duplicates["conflicting_label_groups"]) == (
        DUPLICATE_GROUPS, EXTRA_COPIES, CONFLICTING_GROUPS)
    assert data["after_dedup"] == UNIQUE_FACES == data["parsed"] - duplicates["removed_total"]

    align = json.loads((copy / "reports" / "align.json").read_text())
    assert align["images"] == LIMIT
    unreadable = align["empty"] + align["unreadable"]
    assert align["aligned"] + align["fallback"] + unreadable == LIMIT
    aligned_files = sorted(p.name for p in (copy / "data" / "aligned").iterdir())
    assert len(aligned_files) == LIMIT - unreadable
    assert set(aligned_files) <= set(table["file"])

    index = pd.read_csv(copy / "data" / "augmented" / "index.csv")
    assert set(index["source"]) <= set(table.loc[table["split"] == "train", "file"])
    assert sorted(p.name for p in (copy / "data" / "augmented").iterdir()) == sorted([*index["file"], "index.csv"])

    manifest = json.loads((copy / "data" / "tfrecords" / "manifest.json").read_text())
    present = table[table["file"].isin(aligned_files)]
    for split in labels.SPLITS:
        originals = int((present["split"] == split).sum())
        info = manifest["splits"][split]
        copies = len(index) if split == "train" else 0
        assert info["examples"] == originals + copies, split
        assert info["per_variant"]["original"] == originals
        for purpose in ("race", "exact_age"):
            expected = int((index["purpose"] == purpose).sum()) if split == "train" else 0
            assert info["per_variant"][purpose] == expected, (split, purpose)
        assert all((copy / "data" / "tfrecords" / shard).is_file() for shard in info["shards"])

    lock = (copy / "dvc.lock").read_text()
    for stage in ("download", "labels", "align", "augment", "tfrecords"):
        assert f"  {stage}:" in lock


def test_the_full_data_split_is_the_published_one(real_label_table):
    """The committed full-data reports/data.json holds the split the labels stage computes from the whole set."""
    from argml.core.config import load_params

    _, _, unique, duplicates = real_label_table
    params = load_params(REPO / "params.yaml").data
    table = labels.split(labels.sample(unique, 0, params.seed), params.val_fraction, params.test_fraction, params.seed)
    assert len(unique) == UNIQUE_FACES and duplicates["duplicate_groups"] == DUPLICATE_GROUPS
    assert duplicates["conflicting_label_groups"] == CONFLICTING_GROUPS
    assert table["split"].value_counts().to_dict() == FULL_SPLIT
    committed = json.loads((REPO / "reports" / "data.json").read_text())
    assert {split: part["images"] for split, part in committed["per_split"].items()} == FULL_SPLIT
    assert committed["after_dedup"] == UNIQUE_FACES and committed["limit"] == 0


def test_second_repro_runs_nothing(pipeline):
    copy, env, _ = pipeline
    _, output = run([str(DVC), "repro"], copy, env)
    assert "Running stage" not in output, output
    assert "didn't change" in output or "up to date" in output, output
    _, status = run([str(DVC), "status"], copy, env)
    assert "up to date" in status, status


def test_params_diff_shows_an_edit_and_repro_reruns_only_what_depends_on_it(pipeline):
    copy, env, _ = pipeline
    params = copy / "params.yaml"
    original = params.read_text()
    set_param(params, "align.padding", "0.3")
    try:
        _, diff = run([str(DVC), "params", "diff", "--json"], copy, env)
        changes = json.loads(diff)["params.yaml"]
        assert list(changes) == ["align.padding"], changes
        assert (changes["align.padding"]["old"], changes["align.padding"]["new"]) == (0.25, 0.3)
        _, table = run([str(DVC), "params", "diff"], copy, env)
        assert re.search(r"align\.padding\s+0\.25\s+0\.3", table), table

        _, output = run([str(DVC), "repro", "tfrecords"], copy, env)  # not the training: it would rerun too
        for stage in ("align", "augment", "tfrecords"):
            assert f"Running stage '{stage}'" in output, stage
        for stage in ("download", "labels"):
            assert f"Running stage '{stage}'" not in output and f"Stage '{stage}' didn't change" in output, stage
    finally:
        # Later tests compare the model's answers on these TFRecords with what evaluate recorded: put back the
        # faces it saw; the data stages are reproducible, so every stage is up to date again.
        params.write_text(original)
        run([str(DVC), "repro", "tfrecords"], copy, env)
    _, status = run([str(DVC), "status"], copy, env)
    assert "up to date" in status, status


def test_the_leakage_audit_covers_the_test_split(pipeline):
    import cv2
    import pandas as pd

    copy, _, _ = pipeline
    report = json.loads((copy / "reports" / "leakage.json").read_text())
    table = pd.read_csv(copy / "reports" / "leakage.csv")
    assert report["test_faces"] == len(table) == round(0.1 * LIMIT)
    assert report["near_twins"] == table["near_twin"].sum() == (table["cosine"] >= report["threshold"]["cosine"]).sum()
    assert sum(group["faces"] for group in report["near_twins_per_race"].values()) == len(table)
    # the threshold, recomputed: the quantile of the cosines between training copies and their sources
    from argml.evaluation import leakage

    params = yaml.safe_load((copy / "params.yaml").read_text())
    features_dir = copy / "data" / "features"
    embeddings, train_labels = leakage.embed(leakage.embedding_model(features_dir), features_dir, "train",
                                             params["leakage"]["batch_size"])
    to_source = leakage.copy_cosines(embeddings, train_labels["file_name"], train_labels["variant"])
    copies = pd.read_csv(copy / "data" / "augmented" / "index.csv")
    assert report["threshold"]["copies"] == len(to_source) == len(copies) > 0  # every training copy
    assert report["threshold"]["cosine"] == pytest.approx(
        float(np.quantile(to_source, params["leakage"]["twin_quantile"])), abs=1e-6)
    for mode in ("binned", "exact"):
        parts = report["metrics"][mode]
        assert parts["all"]["faces"] == len(table)
        assert parts["without_twins"]["faces"] + parts["twins_only"]["faces"] == len(table)
    assert cv2.imread(str(copy / "reports" / "leakage.png")) is not None

    protocols = report["protocols"]
    published, duplicates = protocols["published"], protocols["duplicates"]
    assert published["test"] == len(table) and published["leaked_test_faces"] == 0
    assert protocols["augment_first"]["leaked_test_faces"] > 0  # copies of test faces went to training
    assert protocols["augmented_copies"] > 0
    originals = LIMIT - (json.loads((copy / "reports" / "align.json").read_text())["empty"])
    assert duplicates["test"] == round(0.1 * (originals + protocols["byte_identical_copies"]
                                              + protocols["label_conflicting_images"]))
    for name in ("published", "duplicates", "augment_first", "both"):
        assert protocols[name]["train"] > protocols[name]["test"]
        right = protocols[name]["age_accuracy"] * protocols[name]["test"]  # a count of test faces, rounded to 4 digits
        assert abs(right - round(right)) <= 0.5e-4 * protocols[name]["test"], (name, protocols[name])
    # the published protocol's figure, recomputed: the same heads on the cached features of the published split
    published_accuracy = published_age_accuracy(copy)
    assert protocols["published"]["age_accuracy"] == round(published_accuracy, 4)


def published_age_accuracy(copy) -> float:
    from argml.core.config import load_params
    from argml.core.labels import VARIANTS
    from argml.evaluation import protocols

    params = load_params(copy / "params.yaml")
    cache, vectors = protocols.cached_features(copy / "data" / "features", "pooled")
    published = cache[cache["variant"] != VARIANTS["exact_age"]]
    accuracy = protocols.heads_accuracy(published, vectors.astype(np.float32), params.train,
                                        params.leakage.protocol_epochs, params.leakage.batch_size)
    return accuracy["age_accuracy"]


def test_the_demo_stage_plays_the_clip_through_the_live_path(pipeline):
    import cv2

    copy, _, output = pipeline
    demo = json.loads((copy / "reports" / "demo.json").read_text())
    assert demo["frames"] == 120 and demo["people"] == 4
    assert demo["tracks"] >= 4  # the returning person may get a new track
    assert demo["pool_resets"] >= 1  # the person who left was forgotten
    # live.backend auto: the champion's int8 export where it is within tolerance, else Keras (no fps: the clip is
    # played on its own clock, so the demo's outputs hold no speed; `argml bench live` measures it)
    params = yaml.safe_load((copy / "params.yaml").read_text())
    assert params["live"]["backend"] == "auto" and "fps" not in demo
    champion = json.loads((copy / "reports" / params["mlflow"]["champion"] / "export.json").read_text())
    assert demo["backend"] == ("litert" if champion["int8"]["within_tolerance"] else "keras")
    for person in demo["per_person"]:
        assert person["frames_labelled"] > 0.5 * person["frames_in_view"], person
    left = next(person for person in demo["per_person"] if person["frames_in_view"] == 90)  # gone 30 of 120
    assert left["frames_labelled"] <= 90
    lines = (copy / "reports" / "demo.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(lines) == 120 and [record["frame"] for record in records] == list(range(120))
    # every person's match rates, recomputed from the per-frame records: the labels shown where they stood
    from argml.core.labels import GENDERS, RACES
    from argml.live import demo as stage

    split = pd.read_csv(copy / "reports" / "split.csv.gz")
    chosen = stage.cast(split, params["demo"]["people"], params["demo"]["seed"])
    people = stage.scene([str(copy / "data" / "raw" / name) for name in chosen["file"]], 120,
                         gone_for=2 * params["live"]["forget_after"])
    for index, person in enumerate(demo["per_person"]):
        shown = [face["labels"] for record in records for face in record["faces"]
                 if face["labels"] and stage.person_at(face["box"], people, record["frame"], 120) == index]
        assert person["frames_labelled"] == len(shown)
        truth = chosen.iloc[index]
        expected = {"gender": GENDERS[int(truth["gender"])], "race": RACES[int(truth["race"])]}
        for task, value in expected.items():
            assert person[f"{task}_match"] == round(sum(s[task]["label"] == value for s in shown) / len(shown), 4)
        ages = [stage.label_age_bin(s["age"]["label"]) == int(truth["age_bin"]) for s in shown]
        assert person["age_match"] == round(sum(ages) / len(ages), 4)
    video = cv2.VideoCapture(str(copy / "reports" / "demo.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 120
    video.release()
    assert "Running stage 'demo'" in output
