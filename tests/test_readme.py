"""The README as a new user reads it: one screen, the test command named, and its commands run as written.

Run here: the `--help` of every entry point it names, the request files it builds (with a photo whose base64 is
over Linux's 128 KB limit for one argument, which is why the README writes the request to a file), and, on the
small pipeline's trained models, `argml live` on the demo clip, `argml predict` / `python -m argml.predict`, and
both `mlflow models serve` + `curl` examples (on a free port instead of 5001/5002, so parallel runs do not collide).
Run elsewhere: `make` is the clean-clone run of the whole pipeline, `make test` is what CI runs (.ci/run), the
pipeline_repo fixture runs the same small pipeline as `make smoke`, `make docs` is tests/test_docs.py's check and
strict build, the team commands are tests/test_team.py's, the audit commands tests/test_audit*.py's, `argml bench`
is a benchmark. Not run: the webcam and window commands (`argml live` with no file, `python -m argml.live clip.mp4`
without --headless) and `mlflow ui`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from argml.bench.served import stop_server
from argml.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
ARG_MAX_ONE = 131072  # Linux's MAX_ARG_STRLEN: the longest single argument execve accepts


def bash_blocks() -> list[list[str]]:
    """The README's ```bash blocks, as lists of non-empty lines."""
    return [[line for line in block.splitlines() if line.strip()]
            for block in re.findall(r"```bash\n(.*?)```", README, re.S)]


def readme_line(*words: str) -> str:
    """The one README command line that holds all of `words`."""
    found = [line for block in bash_blocks() for line in block if all(word in line for word in words)]
    assert len(found) == 1, f"{words}: {found}"
    return found[0]


def bash(line: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", line], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def big_photo(utkface_dir: Path, path: Path) -> Path:
    """A real face photo of about 150-250 KB: a UTKFace image enlarged (its base64 passes 128 KB)."""
    import cv2

    image = cv2.imread(str(utkface_dir / sorted(os.listdir(utkface_dir))[500]))
    cv2.imwrite(str(path), cv2.resize(image, (1000, 1000), interpolation=cv2.INTER_CUBIC),
                [cv2.IMWRITE_JPEG_QUALITY, 97])
    assert len(base64.b64encode(path.read_bytes())) > ARG_MAX_ONE
    return path


# ---- fast: the README itself ------------------------------------------------------------------------------

def test_readme_is_one_screen_and_names_the_test_command():
    assert len(README.splitlines()) <= 250
    assert any(line.startswith("make test ") for block in bash_blocks() for line in block)


# `live` and `predict` import TensorFlow, torch and Ultralytics before they parse their arguments (tens of seconds
# on a busy 2-CPU machine), so their --help checks run in the slow tier.
HEAVY = pytest.mark.slow


@pytest.mark.parametrize("command", ["argml --help",
                                     *(f"argml {name} --help" for name in COMMANDS if name not in ("live", "predict")),
                                     pytest.param("python -m argml.live --help", marks=HEAVY),
                                     pytest.param("python -m argml.predict --help", marks=HEAVY),
                                     pytest.param("argml live --help", marks=HEAVY),
                                     pytest.param("argml predict --help", marks=HEAVY)])
def test_entry_points_answer_help(command):
    executable, *rest = shlex.split(command)
    argv = ([sys.executable, "-m", "argml.cli", *rest] if executable == "argml"
            else [sys.executable, *rest])
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage:")


def test_the_readmes_commands_name_things_that_exist():
    """Every `argml X`, `python -m argml.X`, `make X` and repository path in the README's commands exists."""
    makefile = (REPO / "Makefile").read_text()
    commands = "\n".join(line for block in bash_blocks() for line in block)
    for name in re.findall(r"(?m)(?:^|\s)argml (\w+)", commands):
        assert name in COMMANDS, name
    for module in re.findall(r"python -m (argml[\w.]*)", commands):
        assert (REPO / module.replace(".", "/")).with_suffix(".py").exists() or (
            REPO / module.replace(".", "/") / "__main__.py").exists(), module
    for target in re.findall(r"(?m)^make(?: ([\w-]+))?", commands):
        assert re.search(rf"(?m)^{target or 'all'}:", makefile), f"make {target}"
    for path in ("reports/demo.mp4", "scripts/install-system-packages.sh", "deploy/nginx-serve.conf",
                 "presets/gpu.yaml", "docs/images/demo-frame.png"):
        assert path in README and (REPO / path).exists(), path


def test_a_photo_request_is_built_in_a_file_where_one_argument_would_fail(utkface_dir, tmp_path):
    """The README's request line, run as written, gives valid JSON holding the photo; the one-argument form it
    replaces fails with "Argument list too long"."""
    photo = big_photo(utkface_dir, tmp_path / "me.jpg")
    result = bash(readme_line("> request.json"), tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "request.json").read_text())["dataframe_records"][0]
    assert record["name"] == "me.jpg" and base64.b64decode(record["image"]) == photo.read_bytes()

    one_argument = bash("""curl -s 127.0.0.1:9/invocations -d '{"image": "'"$(base64 -w0 me.jpg)"'"}'""", tmp_path)
    assert one_argument.returncode != 0 and "Argument list too long" in one_argument.stderr


def test_the_faces_request_is_one_grey_aligned_face(tmp_path):
    result = bash(readme_line("> faces.json"), tmp_path)
    assert result.returncode == 0, result.stderr
    faces = json.loads((tmp_path / "faces.json").read_text())["inputs"]
    assert (len(faces), len(faces[0]), len(faces[0][0]), faces[0][0][0]) == (1, 160, 160, [128, 128, 128])


# ---- slow: the commands on the small pipeline's models ----------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_serving(port: int, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the model server stopped ({server.returncode}): {server.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(2)
    pytest.fail(f"no model server on 127.0.0.1:{port} after {timeout} s")


def serve_and_ask(block_words: str, copy: Path, env: dict, workdir: Path) -> dict:
    """Run the README's serve block: the `mlflow models serve ... &` line in the background, then, once it answers,
    the block's other lines as written. -> the last line's (curl's) JSON answer."""
    block = next(block for block in bash_blocks() if any(block_words in line for line in block))
    port = free_port()
    lines = [line.replace(":5002", f":{port}").replace(":5001", f":{port}").replace("-p 5002", f"-p {port}")
             .replace("-p 5001", f"-p {port}") for line in block]
    serve = lines[0].removesuffix("&").strip()
    assert lines[0].startswith("mlflow models serve") and lines[0].endswith("&")
    server = subprocess.Popen(["bash", "-c", f"cd {shlex.quote(str(copy))} && exec {serve}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_until_serving(port, server)
        for line in lines[1:-1]:
            assert bash(line, workdir, env).returncode == 0, line
        answer = bash(lines[-1], workdir, env, timeout=300)
        assert answer.returncode == 0, answer.stderr
        return json.loads(answer.stdout)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def readme_env(pipeline_repo):
    copy, env, _ = pipeline_repo
    if not os.environ.get("ARGML_YOLO_FACE"):
        pytest.skip("ARGML_YOLO_FACE is unset: the README's live, predict and photo commands need a face model")
    return copy, {**env, "ARGML_YOLO_FACE": os.environ["ARGML_YOLO_FACE"]}


@pytest.mark.slow
def test_the_photo_model_answers_the_readmes_request(readme_env, utkface_dir, tmp_path):
    copy, env = readme_env
    big_photo(utkface_dir, tmp_path / "me.jpg")
    answer = serve_and_ask("argml-photos@champion", copy, env, tmp_path)
    rows = answer["predictions"]
    assert len(rows) >= 1 and rows[0]["name"] == "me.jpg" and not rows[0].get("error")
    assert rows[0]["gender"] in ("male", "female") and 0 < rows[0]["detector_confidence"] <= 1


@pytest.mark.slow
def test_the_face_model_answers_the_readmes_request(readme_env, tmp_path):
    copy, env = readme_env
    answer = serve_and_ask("argml@champion --env-manager", copy, env, tmp_path)
    rows = answer["predictions"]
    assert len(rows) == 1 and rows[0]["gender"] in ("male", "female") and 0 < rows[0]["gender_probability"] <= 1


@pytest.mark.slow
def test_live_and_predict_as_the_readme_writes_them(readme_env, utkface_dir):
    """In the small pipeline's copy (its own reports/demo.mp4 and registered models), the README's lines."""
    copy, env = readme_env
    (copy / "photos").mkdir(exist_ok=True)
    names = sorted(os.listdir(utkface_dir))[1000:1003]
    for name in names[:2]:
        shutil.copyfile(utkface_dir / name, copy / "photos" / name)
    shutil.copyfile(utkface_dir / names[2], copy / "more.jpg")

    for words in (("argml live reports/demo.mp4",), ("argml predict photos/",), ("python -m argml.predict",)):
        line = readme_line(*words)
        result = bash(line, copy, env, timeout=900)
        assert result.returncode == 0, f"{line}\n{result.stderr[-3000:]}"

    frames = [json.loads(line) for line in (copy / "answers.jsonl").read_text().splitlines()]
    assert len(frames) == json.loads((copy / "reports" / "demo.json").read_text())["frames"]
    assert (copy / "annotated.mp4").stat().st_size > 10_000
    import pandas as pd
    table = pd.read_csv(copy / "preds.csv")
    assert set(table["file"].map(lambda f: Path(f).name)) == {*names[:2], "more.jpg"}
    rows = [json.loads(line) for line in (copy / "preds.jsonl").read_text().splitlines()]
    assert {Path(row["file"]).name for row in rows} == set(names[:2])
