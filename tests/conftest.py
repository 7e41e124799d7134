"""Shared fixtures: the real UTKFace folder (from $ARGML_UTKFACE) and deterministic small samples of it.

Tests that need the dataset take `utkface_dir` (or a fixture built on it) and are skipped, with the reason,
when ARGML_UTKFACE is unset or does not point at a folder of images.
"""

from __future__ import annotations

import os

# Set before anything imports TensorFlow, MLflow or ultralytics.
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["YOLO_OFFLINE"] = "1"

# The live-demo tests use Ultralytics, which needs torchvision; torchvision imported after TensorFlow
# crashes in triton's start-up, so it is imported here, before any test module imports TensorFlow.
import torchvision  # noqa: E402,F401

import collections
import hashlib
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ENV_DATASET = "ARGML_UTKFACE"

# The irregular names SOURCE.md lists (they exist in the real set).
NO_RACE_NAMES = (
    "39_1_20170116174525125.jpg.chip.jpg",
    "61_1_20170109142408075.jpg.chip.jpg",
    "61_1_20170109150557335.jpg.chip.jpg",
)
TYPO_NAMES = {  # name -> (age, gender, race)
    "24_0_1_20170116220224657 .jpg.chip.jpg": (24, 0, 1),
    "55_0_0_20170116232725357jpg.chip.jpg": (55, 0, 0),
}
# Real names whose datetime field has 16 or 18 digits instead of the usual 17.
ODD_DATETIME_NAMES = {
    "14_0_0_2017011022340900.jpg.chip.jpg": (14, 0, 0),
    "28_1_2_201701161846515488.jpg.chip.jpg": (28, 1, 2),
    "38_0_1_201701162330572788.jpg.chip.jpg": (38, 0, 1),
}


# Test tiers (pyproject.toml's markers). Besides the modules marked `slow` and every test that uses the whole small
# pipeline (pipeline_repo), these run FaceNet end to end on real faces, train or export a model, or start a
# TensorFlow subprocess: each took 15 s to minutes on the 2-CPU development machine (`--durations`), so they run in
# `make test` and `make test-fast` stays within 3 minutes. A module's path stands for all of its tests.
SLOW_TESTS = {
    "tests/test_facenet.py",  # its `model` fixture builds FaceNet and loads its weights
    "tests/test_tfrecords.py::test_same_examples_give_the_same_bytes_in_any_process",
    "tests/test_tfrecords.py::test_a_feature_cache_from_any_block_gives_the_full_models_outputs",
    "tests/test_tfrecords.py::test_the_protocols_encode_new_faces_as_the_cache_holds_the_heads_input",
    "tests/test_tfrecords.py::test_the_mirrored_cache_holds_the_block_inputs_of_the_mirrored_training_images",
    "tests/test_tfrecords.py::test_training_batches_read_each_example_once_per_epoch_from_its_original_or_its_mirror",
    "tests/test_leakage.py::test_an_augmented_copy_finds_its_own_source",
    "tests/test_leakage.py::test_copy_cosines_pair_each_copy_with_its_source",
    "tests/test_inference.py::test_faces_are_aligned_as_recorded_and_classified_as_one_batch",
    "tests/test_inference.py::test_a_model_without_a_recorded_alignment_is_refused",
    "tests/test_inference.py::test_litert_exports_answer_like_keras",
    "tests/test_inference.py::test_a_changed_export_is_refused",
    "tests/test_inference.py::test_backends_are_chosen_by_what_the_model_is",
    "tests/test_presets.py::test_the_command_lists_the_changes_and_a_dry_run_writes_nothing",
}


def pytest_collection_modifyitems(config, items):
    """Mark `slow` what SLOW_TESTS names, and every test that uses pipeline_repo wherever it is written, so a new
    pipeline test never lands in `make test-fast` by mistake."""
    for item in items:
        test = item.nodeid.split("[")[0]
        if (test in SLOW_TESTS or test.split("::")[0] in SLOW_TESTS
                or "pipeline_repo" in getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def _labels_from_name(name: str):
    """Independent of argml: (age, gender, race) of a regular name, None otherwise."""
    if name in TYPO_NAMES:
        return TYPO_NAMES[name]
    parts = name.split("_")
    if len(parts) != 4 or not name.endswith(".jpg.chip.jpg"):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class UTKFaceIndex:
    """The real folder, hashed once per session (md5 of each file)."""

    folder: Path
    md5: dict[str, str]  # file name -> md5
    groups: dict[str, list[str]]  # md5 -> sorted names, only groups of 2+ byte-identical files

    @property
    def duplicated_names(self) -> set[str]:
        return {name for names in self.groups.values() for name in names}

    def pairs(self, labels_agree: bool) -> list[list[str]]:
        """Duplicate groups of exactly two regular names whose labels agree (or conflict)."""
        found = []
        for names in self.groups.values():
            labels = [_labels_from_name(name) for name in names]
            if len(names) != 2 or None in labels:
                continue
            if (labels[0] == labels[1]) == labels_agree:
                found.append(names)
        return sorted(found)


@dataclass
class Sample:
    """A copied subset of real UTKFace files (see the `utkface_sample` fixture)."""

    dir: Path
    files: list[str]
    no_race: list[str] = field(default_factory=list)
    typos: list[str] = field(default_factory=list)
    odd_datetime: list[str] = field(default_factory=list)
    agreeing_pairs: list[list[str]] = field(default_factory=list)
    conflicting_pairs: list[list[str]] = field(default_factory=list)
    plain: list[str] = field(default_factory=list)  # regular names with no byte-identical copy anywhere


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    value = os.environ.get(ENV_DATASET, "")
    if not value:
        pytest.skip(f"{ENV_DATASET} is unset: point it at the UTKFace image folder to run the dataset tests")
    folder = Path(value).expanduser()
    if not folder.is_dir():
        pytest.skip(f"{ENV_DATASET}={value!r} is not a folder (missing or an archive); the dataset tests need the folder")
    if not any(name.endswith(".jpg") for name in os.listdir(folder)):
        pytest.skip(f"{ENV_DATASET}={value!r} holds no .jpg images")
    return folder


@pytest.fixture(scope="session")
def utkface_index(utkface_dir) -> UTKFaceIndex:
    md5 = {}
    for name in sorted(os.listdir(utkface_dir)):
        md5[name] = hashlib.md5((utkface_dir / name).read_bytes()).hexdigest()
    by_digest = collections.defaultdict(list)
    for name, digest in md5.items():
        by_digest[digest].append(name)
    groups = {digest: sorted(names) for digest, names in by_digest.items() if len(names) > 1}
    return UTKFaceIndex(utkface_dir, md5, groups)


@pytest.fixture
def utkface_sample(utkface_index, tmp_path):
    """make(n, odd=True, pairs=2, name="sample") -> Sample: a deterministic subset of real files in tmp_path/name.

    With `odd`, it holds the 5 irregular names of SOURCE.md and the 16/18-digit datetime names; with `pairs`,
    that many byte-identical pairs whose labels agree and as many whose labels conflict. The rest (up to n
    files in all) are regular names with no copy anywhere in the set, picked by a fixed seed.
    """

    def make(n: int, odd: bool = True, pairs: int = 2, name: str = "sample") -> Sample:
        folder = tmp_path / name
        folder.mkdir()
        sample = Sample(dir=folder, files=[])
        if odd:
            sample.no_race = list(NO_RACE_NAMES)
            sample.typos = list(TYPO_NAMES)
            sample.odd_datetime = list(ODD_DATETIME_NAMES)
        if pairs:
            sample.agreeing_pairs = utkface_index.pairs(labels_agree=True)[:pairs]
            sample.conflicting_pairs = utkface_index.pairs(labels_agree=False)[:pairs]
        chosen = (sample.no_race + sample.typos + sample.odd_datetime
                  + [f for pair in sample.agreeing_pairs + sample.conflicting_pairs for f in pair])
        if len(chosen) > n:
            raise ValueError(f"a sample of {n} cannot hold the {len(chosen)} special files")
        duplicated = utkface_index.duplicated_names
        candidates = sorted(f for f in utkface_index.md5 if f not in duplicated and f not in chosen
                            and _labels_from_name(f) is not None and f not in TYPO_NAMES
                            and f not in ODD_DATETIME_NAMES)
        sample.plain = sorted(random.Random(20170116).sample(candidates, n - len(chosen)))
        sample.files = sorted(chosen + sample.plain)
        for f in sample.files:
            shutil.copyfile(utkface_index.folder / f, folder / f)
        return sample

    return make


@pytest.fixture(scope="session")
def real_label_table(utkface_dir):
    """The whole real set through scan + deduplicate (a few seconds, once): a real-sized table for split/sample tests."""
    from argml.data import utkface

    table, malformed = utkface.scan(utkface_dir)
    unique, report = utkface.deduplicate(table)
    return table, malformed, unique, report


@pytest.fixture(scope="session")
def aligned_sample(utkface_index, tmp_path_factory):
    """40 real images (no duplicates), scanned, split and aligned to 160 px with FaceAligner.

    Returns (split table with a `path` column, aligned folder); the raw copies sit in the folder's sibling.
    """
    from argml.data import faces, utkface

    raw = tmp_path_factory.mktemp("aligned-raw")
    duplicated = utkface_index.duplicated_names
    regular = sorted(n for n in utkface_index.md5 if n not in duplicated and n not in TYPO_NAMES
                     and _labels_from_name(n) is not None)
    for name in sorted(random.Random(3).sample(regular, 40)):
        shutil.copyfile(utkface_index.folder / name, raw / name)
    table = utkface.split(utkface.deduplicate(utkface.scan(raw)[0])[0], 0.1, 0.1, seed=1)
    out = tmp_path_factory.mktemp("aligned")
    status = faces.align_files(table["file"].tolist(), raw, out, size=160, padding=0.25, workers=1)
    assert set(status["status"]) <= {"aligned", "fallback"}
    return utkface.with_files(table, out), out


def make_card(mode: str, age_values=None, bins: str = "argmax", years: str = "mean", padding: float | None = None):
    """A model card as training writes one, for tests that score hand-made probabilities."""
    from argml.core.card import FeatureCache, ModelCard, Readout
    from argml.core.config import AlignParams
    from argml.core.labels import AgeMode

    age_mode = AgeMode.of(mode)
    values = tuple(float(v) for v in age_values) if age_values is not None else tuple(
        float(index + 1) for index in range(len(age_mode.classes)))
    return ModelCard(age_mode, 160, values, FeatureCache("Mixed_7a", "pooled", "casia-webface", (8, 8, 896), {}),
                     align=AlignParams(padding=padding) if padding is not None else None,
                     readout=Readout(bins, years))


# --- the whole pipeline, once per session, on a copy of the repository --------------------------------------

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"
PIPELINE_LIMIT = 150
# Small but real: every stage runs, both age modes train both phases.
PIPELINE_PARAMS = {"data.limit": str(PIPELINE_LIMIT), "train.head_epochs": "3", "train.finetune_epochs": "1",
                   "evaluate.bootstrap_rounds": "10"}


def run(args, cwd, env, check=True, timeout=1200):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({result.returncode}):\n{result.stdout[-5000:]}\n"
                    f"--- stderr:\n{result.stderr[-3000:]}")
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


@pytest.fixture(scope="session")
def pipeline_repo(utkface_dir, tmp_path_factory):
    """(copy, env, output of `dvc repro`): a copy of the repository with small params and the real dataset.
    Stages import argml from the copy; MLflow writes to the copy's mlflow.db."""
    copy = tmp_path_factory.mktemp("repo")
    env = repository_copy(copy, utkface_dir, PIPELINE_PARAMS)
    _, output = run([str(DVC), "repro"], copy, env)
    return copy, env, output


WRITE_AUDIT = Path(__file__).resolve().parent / "write_audit"


def write_log(copy: Path) -> Path:
    """Where the write audit of a repository copy's runs goes (beside the copy, not in it)."""
    return copy.parent / f"{copy.name}-writes.jsonl"


def repository_copy(copy: Path, utkface_dir: Path, params: dict[str, str]) -> dict[str, str]:
    """The repository's tracked files in `copy`, with `params` set, as a fresh git repository with one commit
    (DVC wants its SCM; `dvc params diff` a HEAD). -> the environment its stages run in."""
    if not DVC.exists():
        pytest.skip(f"no dvc next to {sys.executable}")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is skipped
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, copy / name)
    for dotted, value in params.items():
        set_param(copy / "params.yaml", dotted, value)

    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    # tests/write_audit records every file the run's Python processes write (test_reliability reads it)
    env.update({"ARGML_UTKFACE": str(utkface_dir), "PYTHONPATH": f"{copy}{os.pathsep}{WRITE_AUDIT}",
                "ARGML_WRITE_LOG": str(write_log(copy)),
                "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "GIT_AUTHOR_NAME": "argml tests", "GIT_AUTHOR_EMAIL": "tests@example.invalid",
                "GIT_COMMITTER_NAME": "argml tests", "GIT_COMMITTER_EMAIL": "tests@example.invalid"})
    run(["git", "init", "-q"], copy, env)
    run(["git", "add", "-A"], copy, env)
    run(["git", "commit", "-q", "-m", "copy for the pipeline tests"], copy, env)
    # Outputs as hard links into the DVC cache, not copies: the session's copies hold several GB less.
    run([str(DVC), "config", "--local", "cache.type", "hardlink"], copy, env)
    return env


def assert_mlflow_ui_compares(base_url: str, experiment_id: str, runs: dict[str, str], out_dir: Path,
                              username: str | None = None, password: str | None = None) -> None:
    """Headless Chromium as a user: the experiment link argml gives opens on its training runs (not MLflow 3's
    GenAI overview) and the comparison of `runs` ({name: run id}) shows both runs and their test metrics."""
    from argml.tracking import ui

    pages = ui.mlflow_pages(base_url, experiment_id, list(runs.values()))
    text = ui.open_page(pages["runs"], out_dir / "runs.png", ("matching runs", *runs), username, password)
    assert "Tool calls" not in text and "Usage" not in text  # not the GenAI overview's tabs
    text = ui.open_page(pages["compare"], out_dir / "compare.png",
                             (f"Comparing {len(runs)} Runs", "test.gender.accuracy", *runs), username, password)
    assert (out_dir / "compare.png").stat().st_size > 10_000


def cache_tolerance(cache) -> float:
    """How far answers from the feature cache may be from the model's on images: the cache is float16, and the
    frozen layers that made it computed in float32 or, where the CPU has it (features.precision auto), in
    bfloat16, whose 8-bit mantissa moves probabilities by a few thousandths."""
    from argml.model import features

    return {"float32": 2e-3, "bfloat16": 1e-2}[features.read_info(cache).precision]
