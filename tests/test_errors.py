"""One line for a user's mistake, a traceback for a bug (argml.core.errors), at every entry point: each DVC
stage script and each `argml` command, run as a user runs them, in a child process.

A user mistake here is a missing or empty dataset, a bad archive, a bad params value, an unreadable model or
detector, a port in use and a stack or server that is down. Each must end with exit status 2 and exactly one
line on stderr that names the problem; ARGML_DEBUG=1 adds the traceback; a bug keeps its traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from argml.core import errors

REPO = Path(__file__).resolve().parents[1]
STAGES = ("params", "download", "labels", "align", "augment", "tfrecords", "features", "train", "evaluate",
          "export", "champion", "demo", "leakage")
# Each stage's command line from dvc.yaml, with paths that do not exist in the test's empty folder.
STAGE_ARGS = {
    "params": ["params.yaml", "data/params.checked"],
    "download": ["data/raw"],
    "labels": ["data/raw", "split.csv.gz", "data.json"],
    "align": ["data/raw", "split.csv.gz", "data/aligned", "align.json", "flags.csv"],
    "augment": ["split.csv.gz", "data/aligned", "data/augmented", "augment.json"],
    "tfrecords": ["split.csv.gz", "data/aligned", "data/augmented", "data/tfrecords"],
    "features": ["data/tfrecords", "data/features"],
    "train": ["binned", "data/features", "data/models/binned", "reports/binned"],
    "evaluate": ["binned", "data/models/binned", "data/tfrecords", "reports/binned", "registered.json"],
    "export": ["binned", "data/models/binned", "data/tfrecords", "predictions.csv", "data/litert", "export.json"],
    "champion": ["champion.json"],
    "demo": ["data/raw", "split.csv.gz", "demo.mp4", "demo.jsonl", "demo.json"],
    "leakage": ["data/features", "data/raw", "split.csv.gz", "data/aligned", "reports", "leakage.json",
                "leakage.csv", "leakage.png"],
}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(REPO), **env}
    environment.pop(errors.ENV_DEBUG, None)
    if "MLFLOW_TRACKING_URI" not in env:  # a store in the test's folder, never the developer's
        environment["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    environment.update(env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=600)


# Not error output: tqdm's progress bars and MLflow's INFO log of a new store ("Creating initial MLflow
# database tables...").
PROGRESS = re.compile(r"\[\d+:\d+(<[^\]]*)?(, [^\]]*)?\]$|^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow")


def the_one_line(result: subprocess.CompletedProcess, prefix: str) -> str:
    """The single stderr line of a user error (exit 2, no traceback)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and not PROGRESS.search(line)]
    assert result.returncode == errors.EXIT_USER_ERROR, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith(f"{prefix}: "), result.stderr[-3000:]
    return lines[0]


@pytest.fixture
def workdir(tmp_path) -> Path:
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    return tmp_path


def stage(name: str, cwd: Path, *extra: str, **env: str) -> subprocess.CompletedProcess:
    return run([str(REPO / "stages" / f"{name}.py"), *STAGE_ARGS[name], *extra], cwd, **env)


@pytest.mark.slow
def test_every_stage_refuses_a_bad_params_value_in_one_line(workdir):
    """align.size must be 32-1024: every stage reads params.yaml first and says so in one line."""
    (workdir / "params.yaml").write_text((REPO / "params.yaml").read_text().replace("  size: 160", "  size: 5"))
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(STAGES, pool.map(lambda name: stage(name, workdir), STAGES)))
    for name, result in results.items():
        line = the_one_line(result, name)
        assert "params: align.size must be between 32 and 1024, got 5" in line, (name, line)
    assert "no stage ran and no output was removed" in the_one_line(results["params"], "params")
    assert not (workdir / "data").exists(), "nothing written"


@pytest.mark.slow
@pytest.mark.parametrize("name, prepare, expected", [
    ("download", lambda d: made(d / "empty", None), "no image files (.jpg, .jpeg, .png) found in"),
    ("download", lambda d: made(d / "utk.tar.gz", b"not an archive"), "is neither a tar nor a zip archive"),
    ("download", lambda d: damaged_archive(d / "utk.tar.gz"), "is a damaged archive"),
    ("download", lambda d: made(d / "notes.txt", b"x"), "is neither a folder nor a .tar.gz/.tgz/.tar/.zip"),
    ("labels", lambda d: raw_with(d, "holiday.jpg"), "none of the 1 images in data/raw has a parsable UTKFace name"),
    ("labels", None, "No such file or directory: 'data/raw'"),
    ("align", None, "split.csv.gz not found: run `dvc repro labels` first"),
    ("augment", None, "split.csv.gz not found: run `dvc repro labels` first"),
    ("tfrecords", None, "split.csv.gz not found: run `dvc repro labels` first"),
    ("features", None, "data/tfrecords/manifest.json not found: run `dvc repro tfrecords` first"),
    ("train", None, "data/features/info.json not found: run `dvc repro features` first"),
    ("evaluate", None, "model data/models/binned/model.keras not found"),
    ("evaluate", lambda d: unreadable_model(d), "could not be loaded by Keras (refused or damaged"),
    ("export", None, "data/models/binned/model.json not found: a trained model comes with its model.json"),
    ("export", lambda d: unreadable_model(d), "could not be loaded by Keras (refused or damaged"),
    ("champion", None, "no version of argml has the alias binned"),
    ("demo", None, "No such file or directory: 'split.csv.gz'"),
    ("leakage", None, "data/features/info.json not found: run `dvc repro features` first"),
], ids=["download-empty", "download-not-archive", "download-damaged", "download-not-folder", "labels-no-names",
        "labels-missing", "align", "augment", "tfrecords", "features", "train", "evaluate-missing",
        "evaluate-unreadable", "export-missing", "export-unreadable", "champion", "demo", "leakage"])
def test_a_stage_meets_a_missing_or_bad_input_in_one_line(workdir, name, prepare, expected):
    dataset = prepare(workdir) if prepare else None
    env = {"ARGML_UTKFACE": str(dataset or workdir / "empty")} if name == "download" else {}
    line = the_one_line(stage(name, workdir, **env), name)
    assert expected in line, line


def made(path: Path, content: bytes | None) -> Path:
    """A file with `content`, or an empty folder when None."""
    path.mkdir() if content is None else path.write_bytes(content)
    return path


def damaged_archive(path: Path) -> Path:
    """A real .tar.gz cut in half (a download that broke off)."""
    source = path.parent / "source"
    source.mkdir()
    for index in range(40):
        (source / f"{index}_0_0_20170101000000000.jpg.chip.jpg").write_bytes(os.urandom(20_000))
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source, arcname="UTKFace")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def raw_with(folder: Path, *names: str) -> None:
    (folder / "data" / "raw").mkdir(parents=True)
    for name in names:
        (folder / "data" / "raw" / name).write_bytes(b"\xff\xd8\xff")


def unreadable_model(folder: Path) -> None:
    from conftest import make_card

    model_dir = folder / "data" / "models" / "binned"
    model_dir.mkdir(parents=True)
    (model_dir / "model.keras").write_bytes(b"PK\x03\x04 not really a zip")
    make_card("binned", padding=0.25).save(model_dir / "model.json")


# --- commands ----------------------------------------------------------------------------------------------

def argml(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return run(["-m", "argml", *args], cwd, **env)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket closes


@pytest.fixture
def face(utkface_dir, tmp_path) -> Path:
    path = tmp_path / "face.jpg"
    path.write_bytes((utkface_dir / sorted(os.listdir(utkface_dir))[0]).read_bytes())
    return path


@pytest.mark.slow
def test_predict_and_live_say_what_is_missing_or_unreadable(workdir, face):
    from test_claims import save_small_model

    detector = os.environ.get("ARGML_YOLO_FACE", "")
    if not Path(detector).is_file():
        pytest.skip("ARGML_YOLO_FACE is not set to the YOLO face model")
    unreadable_model(workdir)
    model = str(workdir / "data" / "models" / "binned" / "model.keras")
    good_model = str(save_small_model(workdir / "good") / "model.keras")
    (workdir / "junk.tflite").write_bytes(b"TFL3 but not a model")
    cases = [
        (("predict", "missing.jpg", "--out", "p.csv", "--detector", detector), "predict", "missing.jpg does not exist"),
        (("predict", str(face), "--out", "p.csv", "--detector", detector, "--model", model), "predict",
         "could not be loaded by Keras"),
        (("predict", str(face), "--out", "p.csv", "--detector", str(workdir / "junk.tflite"), "--model", good_model),
         "predict", "could not be loaded as an Ultralytics YOLO model"),
        (("predict", str(face), "--out", "p.txt"), "predict", "--out must end in .csv or .jsonl"),
        (("live", str(face), "--detector", detector, "--headless", "--model", model), "live",
         "could not be loaded by Keras"),
        (("live", str(workdir / "nothing"), "--detector", detector, "--headless"), "live",
         "is neither a camera index, a file nor a folder"),
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: argml(*case[0], cwd=workdir), cases))
    for (_, prefix, expected), result in zip(cases, results):
        assert expected in the_one_line(result, prefix), result.stderr


@pytest.mark.slow
def test_a_tracking_server_that_is_down_is_one_line_at_once(workdir, face):
    detector = os.environ.get("ARGML_YOLO_FACE", "")
    if not Path(detector).is_file():
        pytest.skip("ARGML_YOLO_FACE is not set to the YOLO face model")
    uri = f"http://127.0.0.1:{closed_port()}"
    result = argml("predict", str(face), "--out", "p.csv", "--detector", detector, "--backend", "litert",
                   cwd=workdir, MLFLOW_TRACKING_URI=uri)
    assert f"the MLflow server {uri} does not answer" in the_one_line(result, "predict")
    result = stage("champion", workdir, MLFLOW_TRACKING_URI=uri)
    assert "does not answer" in the_one_line(result, "champion") and "argml stack up" in result.stderr


def test_the_stack_says_it_is_down_or_that_its_ports_are_taken(tmp_path):
    result = argml("stack", "status", "--dir", str(tmp_path / "stack"), cwd=tmp_path)
    assert "no stack in" in the_one_line(result, "stack")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = argml("stack", "up", "--dir", str(tmp_path / "stack"), "--ports", f"mlflow={port}", cwd=tmp_path)
    line = the_one_line(result, "stack")
    assert f"ports in use on 127.0.0.1: mlflow ({port})" in line, line


@pytest.mark.slow
def test_the_other_commands_end_in_one_line(workdir):
    (workdir / "broken.yaml").write_text("train: {head_lr: [unclosed\n")
    cases = [
        (("presets", "missing.yaml"), "presets", "missing.yaml"),
        (("presets", "broken.yaml"), "presets", "broken.yaml"),
        (("ensemble", "data/models/binned", "--features", "data/features"), "ensemble",
         "data/features/info.json not found: run `dvc repro features` first"),
        (("bench", "photos", "--url", "http://192.0.2.1:5002/invocations"), "bench", "loopback URLs only"),
        (("ui", f"http://127.0.0.1:{closed_port()}/", "--timeout", "5"), "ui", "does not answer"),
    ]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: argml(*case[0], cwd=workdir), cases))
    for (_, prefix, expected), result in zip(cases, results):
        assert expected in the_one_line(result, prefix), result.stderr


def test_debug_shows_the_traceback_and_a_bug_keeps_it(workdir):
    (workdir / "empty").mkdir()
    result = stage("download", workdir, ARGML_UTKFACE=str(workdir / "empty"), ARGML_DEBUG="1")
    assert result.returncode == 2 and "Traceback (most recent call last)" in result.stderr
    assert result.stderr.rstrip().endswith("download: no image files (.jpg, .jpeg, .png) found in "
                                           f"{workdir / 'empty'}")

    @errors.command("demo")
    def buggy(argv=None):
        return {}["a key that is not there"]

    with pytest.raises(KeyError):
        buggy()

    @errors.command("demo")
    def refused(argv=None):
        raise ValueError("a ValueError from a library is a bug, not a user error")

    with pytest.raises(ValueError):
        refused()


def test_the_user_error_family():
    """What the commands catch: argml's UserError kinds and OSError; they stay ValueError/OSError/RuntimeError
    for callers that catch those."""
    from argml.core.card import CardError
    from argml.core.config import ParamsError
    from argml.core.images import ImageError
    from argml.data.download import ChecksumError, UnsafeArchiveError
    from argml.stack.engines import StackError

    for kind, base in ((ImageError, ValueError), (ParamsError, ValueError), (CardError, ValueError),
                       (ChecksumError, ValueError), (UnsafeArchiveError, ValueError), (StackError, RuntimeError),
                       (errors.NotFound, FileNotFoundError), (errors.Unavailable, RuntimeError)):
        assert issubclass(kind, errors.UserError) and issubclass(kind, base), kind
    assert errors.USER_ERRORS == (errors.UserError, OSError)
    assert errors.one_line(ValueError("first\nsecond\nthird")) == "first (+2 more lines; ARGML_DEBUG=1 shows them)"
