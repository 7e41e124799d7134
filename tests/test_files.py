"""argml.files: staging folders never outlive a killed process, and a stage process stops with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from argml.core.files import atomic_dir, atomic_path, remove_stale_staging

REPO = Path(__file__).resolve().parents[1]

# A "stage" that fills a staging folder, announces its pid and path, then works until killed.
STAGE = textwrap.dedent("""
    import sys, time
    from argml.core.files import atomic_dir, run_as_stage
    run_as_stage()
    with atomic_dir(sys.argv[1]) as staging:
        (staging / "part").write_text("x")
        print(staging, flush=True)
        time.sleep(120)
""")


def wait_for(predicate, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as staging:
        (staging / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as staging:
            (staging / "b").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not (target / "b").exists()


def test_stale_staging_of_a_killed_run_is_removed_on_the_next_run(tmp_path):
    (tmp_path / ".features.ab12cd_9").mkdir()
    (tmp_path / ".features.ab12cd_9" / "big.npy").write_bytes(b"0" * 1000)
    (tmp_path / ".metrics.json.x1y2z3w4").write_text("half")
    (tmp_path / ".features.json.ab12cd_9").write_text("another target's: kept")
    (tmp_path / "features.keep").write_text("kept")
    with atomic_dir(tmp_path / "features") as staging:
        (staging / "info.json").write_text("{}")
    assert not (tmp_path / ".features.ab12cd_9").exists()
    with atomic_path(tmp_path / "metrics.json") as staging:
        staging.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".features.json.ab12cd_9", "features", "features.keep",
                                                          "metrics.json"]
    assert remove_stale_staging(tmp_path / "nothing") == []


def start_stage(tmp_path: Path, parent: bool = False):
    """The STAGE process, directly or under a parent python that just waits for it (like dvc)."""
    script = tmp_path / "stage.py"
    script.write_text(STAGE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), str(tmp_path / "out")]
    if parent:
        command = [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])", *command]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    staging = Path(process.stdout.readline().strip())
    assert staging.is_dir() and staging.name.startswith(".out.")
    return process, staging


def test_sigterm_removes_the_staging_folder_and_exits_143(tmp_path):
    process, staging = start_stage(tmp_path)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 128 + signal.SIGTERM
    assert not staging.exists() and not (tmp_path / "out").exists()


def test_a_stage_stops_when_its_parent_is_killed(tmp_path):
    parent, staging = start_stage(tmp_path, parent=True)
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children").read_text().split()
    assert len(children) == 1
    stage_pid = int(children[0])
    parent.kill()  # SIGKILL: the parent can pass nothing on
    parent.wait(timeout=10)
    assert wait_for(lambda: not alive(stage_pid)), "the stage outlived its parent"
    assert wait_for(lambda: not staging.exists()), "the staging folder outlived the stage"


# A "stage" that gets SIGTERM in the middle of a store write: the write must finish, then the stage stops.
DEFERRED = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from argml.core.files import run_as_stage, termination_deferred
    run_as_stage()
    log = Path(sys.argv[1])
    try:
        with termination_deferred():
            log.write_text("write started\\n")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the signal has arrived; a plain stage would be unwinding by now
            log.write_text(log.read_text() + "write finished\\n")
        log.write_text(log.read_text() + "went on after the write\\n")
    finally:
        log.write_text(log.read_text() + "unwound\\n")
""")


def test_sigterm_during_a_deferred_write_stops_the_stage_right_after_it(tmp_path):
    log = tmp_path / "log"
    result = subprocess.run([sys.executable, "-c", DEFERRED, str(log)], cwd=REPO, timeout=60)
    assert result.returncode == 128 + signal.SIGTERM
    assert log.read_text().splitlines() == ["write started", "write finished", "unwound"]
