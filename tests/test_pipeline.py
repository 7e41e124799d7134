"""End to end, data side: the whole `dvc repro` on a copy of the repository (see conftest.pipeline_repo)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from argml.data import utkface as labels

pytestmark = pytest.mark.slow

from conftest import DVC, run, set_param

LIMIT = 150


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
    assert data["duplicates"]["duplicate_groups"] > 0 and data["after_dedup"] < data["parsed"]

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
    assert report["threshold"]["copies"] > 0 and -1 <= report["threshold"]["cosine"] <= 1
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
        assert 0 <= protocols[name]["age_accuracy"] <= 1 and protocols[name]["train"] > protocols[name]["test"]


def test_the_demo_stage_plays_the_clip_through_the_live_path(pipeline):
    import cv2

    copy, _, output = pipeline
    demo = json.loads((copy / "reports" / "demo.json").read_text())
    assert demo["frames"] == 120 and demo["people"] == 4
    assert demo["tracks"] >= 4  # the returning person may get a new track
    assert demo["pool_resets"] >= 1  # the person who left was forgotten
    assert demo["backend"] in ("keras", "litert") and demo["fps"] > 0
    for person in demo["per_person"]:
        assert person["frames_labelled"] > 0.5 * person["frames_in_view"], person
        assert all(0 <= person[f"{task}_match"] <= 1 for task in ("gender", "race", "age"))
    left = next(person for person in demo["per_person"] if person["frames_in_view"] == 90)  # gone 30 of 120
    assert left["frames_labelled"] <= 90
    lines = (copy / "reports" / "demo.jsonl").read_text().splitlines()
    assert len(lines) == 120 and json.loads(lines[0])["frame"] == 0
    video = cv2.VideoCapture(str(copy / "reports" / "demo.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 120
    video.release()
    assert "Running stage 'demo'" in output
