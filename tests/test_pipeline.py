"""End to end: `dvc repro tfrecords` on a copy of the repository with data.limit 120 and the real UTKFace folder.

The copy holds the repository's tracked files (as they are in the working tree) in a fresh git repository with
one commit, so DVC has its SCM and `dvc params diff` has a HEAD to compare with. The stages import argml from
the copy (PYTHONPATH), not from the editable install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from argml import labels

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
LIMIT = 120


def run(args, cwd, env, check=True, timeout=600):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{output[-6000:]}")
    return result, output


def set_param(params: Path, dotted: str, value: str) -> None:
    """Edit one `section.key` of params.yaml in place, comments kept."""
    section, key = dotted.split(".")
    text = params.read_text()
    start = re.search(rf"(?m)^{section}:[ \t]*(#.*)?$", text)
    assert start, f"section {section} not found in {params}"
    head, body = text[:start.end()], text[start.end():]
    end = re.search(r"(?m)^\S", body)
    block, tail = (body[:end.start()], body[end.start():]) if end else (body, "")
    block, count = re.subn(rf"(?m)^(  {key}:[ \t]*)[^ \t#\n]+", rf"\g<1>{value}", block, count=1)
    assert count == 1, f"{dotted} not found in {params}"
    params.write_text(head + block + tail)


@pytest.fixture(scope="module")
def pipeline(utkface_dir, tmp_path_factory):
    """(copy, env, output of the first `dvc repro tfrecords`)."""
    if not DVC.exists():
        pytest.skip(f"no dvc next to {sys.executable}")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    copy = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is skipped
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    assert (copy / ".dvc" / "config").is_file() and (copy / "dvc.yaml").is_file()
    set_param(copy / "params.yaml", "data.limit", str(LIMIT))
    assert yaml.safe_load((copy / "params.yaml").read_text())["data"]["limit"] == LIMIT

    env = {**os.environ, "ARGML_UTKFACE": str(utkface_dir), "PYTHONPATH": str(copy),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC_NO_ANALYTICS": "1",
           "GIT_AUTHOR_NAME": "argml tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
           "GIT_COMMITTER_NAME": "argml tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid"}
    run(["git", "init", "-q"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-q", "-m", "copy for the pipeline test"], copy, env)

    _, output = run([str(DVC), "repro", "tfrecords"], copy, env)
    # The copy (about 240 MB: raw images + DVC cache) stays for inspection; pytest keeps only the last 3 runs.
    return copy, env, output


def test_repro_runs_every_stage_and_counts_add_up(pipeline):
    copy, _, output = pipeline
    for stage in ("download", "labels", "align", "augment", "tfrecords"):
        assert f"Running stage '{stage}'" in output, stage

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
    _, output = run([str(DVC), "repro", "tfrecords"], copy, env)
    assert "Running stage" not in output, output
    assert "didn't change" in output or "up to date" in output, output
    _, status = run([str(DVC), "status", "tfrecords"], copy, env)
    assert "up to date" in status, status


def test_params_diff_shows_an_edit_and_repro_reruns_only_what_depends_on_it(pipeline):
    copy, env, _ = pipeline
    set_param(copy / "params.yaml", "align.padding", "0.3")

    _, diff = run([str(DVC), "params", "diff", "--json"], copy, env)
    changes = json.loads(diff)["params.yaml"]
    assert list(changes) == ["align.padding"], changes
    assert (changes["align.padding"]["old"], changes["align.padding"]["new"]) == (0.25, 0.3)
    _, table = run([str(DVC), "params", "diff"], copy, env)
    assert re.search(r"align\.padding\s+0\.25\s+0\.3", table), table

    _, output = run([str(DVC), "repro", "tfrecords"], copy, env)
    for stage in ("align", "augment", "tfrecords"):
        assert f"Running stage '{stage}'" in output, stage
    for stage in ("download", "labels"):
        assert f"Running stage '{stage}'" not in output and f"Stage '{stage}' didn't change" in output, stage
