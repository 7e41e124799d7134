"""The pipeline's outputs are a function of its inputs: a second fresh copy's `dvc repro` (the session's small
pipeline, conftest.pipeline_repo, is the first) gives every output byte for byte, and the same dvc.lock."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import DVC, PIPELINE_PARAMS, repository_copy, run

pytestmark = [pytest.mark.slow, pytest.mark.extended]  # a second whole small pipeline


def output_files(repo: Path) -> dict[str, str]:
    """sha256 of every file of every output dvc.lock lists (a folder's files one by one), by path."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outputs = sorted({out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])})
    digests = {}
    for output in outputs:
        path = repo / output
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digests[str(file.relative_to(repo))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def changed_files(repo: Path) -> list[str]:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.splitlines()


@pytest.fixture(scope="module")
def second_repo(pipeline_repo, utkface_dir, tmp_path_factory):
    copy = tmp_path_factory.mktemp("repo-again")
    env = repository_copy(copy, utkface_dir, PIPELINE_PARAMS)
    _, output = run([str(DVC), "repro"], copy, env)
    return copy, output


def test_a_second_fresh_repro_gives_the_same_bytes(pipeline_repo, second_repo):
    first, _, _ = pipeline_repo
    second, output = second_repo
    assert "Running stage 'demo'" in output and "Running stage 'leakage'" in output  # every stage ran again

    ours, theirs = output_files(first), output_files(second)
    assert set(ours) == set(theirs), sorted(set(ours) ^ set(theirs))
    differing = sorted(path for path in ours if ours[path] != theirs[path])
    assert not differing, f"outputs that differ between two runs: {differing}"
    assert len(ours) > 1000  # the images, shards, caches, models, exports and reports: every file was compared
    assert (first / "dvc.lock").read_text() == (second / "dvc.lock").read_text()
    # the same files changed against the commit in both copies (small data, so not the full-data reports)
    assert changed_files(first) == changed_files(second)


def test_no_stage_output_holds_a_timing(second_repo):
    second, _ = second_repo
    lock = yaml.safe_load((second / "dvc.lock").read_text())
    reports = [second / out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])
               if out["path"].endswith(".json")]
    assert reports
    for report in reports:
        text = report.read_text()
        for word in ("seconds", "faces_per_s", "images_per_s", "fps", "_time", "duration"):
            assert f'"{word}' not in text and f'{word}"' not in text, (report, word)
