"""A stack's folder and what it records: DIR/stack.json (ports, process ids, generated passwords and S3 keys;
mode 0600), DIR/logs/ENGINE.log, and the small process helpers the engines share.

Nothing here starts an engine; argml.stack.postgres, .seaweed and .mlflow_server do.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

from argml.core import errors

HOST = "127.0.0.1"
ENGINES = ("postgres", "s3", "mlflow")  # in start order; stopped in reverse
BUCKETS = {"mlflow": "argml-mlflow", "dvc": "argml-dvc"}
USERS = ("trainer", "reader")  # people: trainer runs the pipeline and pushes DVC data; reader only reads
S3_REGION = "us-east-1"
# The ports a user sees (PostgreSQL, S3, MLflow) and SeaweedFS's inner ones (its master, volume server, filer
# and admin server, each also with a gRPC port): all bound to HOST.
DEFAULT_PORTS = {"postgres": 5432, "s3": 9000, "mlflow": 5000,
                 "weed_master": 9333, "weed_volume": 9340, "weed_filer": 8888, "weed_admin": 23646,
                 "weed_master_grpc": 19333, "weed_volume_grpc": 19340, "weed_filer_grpc": 18888,
                 "weed_s3_grpc": 19000, "weed_admin_grpc": 33646}


class StackError(errors.Unavailable):
    """A stack that cannot start, stop or answer: the message says what to do."""


def state_file(folder: Path) -> Path:
    return Path(folder) / "stack.json"


def log_file(folder: Path, engine: str) -> Path:
    return Path(folder) / "logs" / f"{engine}.log"


def read_state(folder: str | Path) -> dict:
    path = state_file(Path(folder))
    if not path.exists():
        raise StackError(f"no stack in {folder}: start one with `python -m argml.stack up --dir {folder}`")
    return json.loads(path.read_text())


def write_state(folder: Path, state: dict) -> None:
    path = state_file(folder)
    staging = path.with_suffix(".tmp")
    staging.unlink(missing_ok=True)  # one left by a crash keeps its own mode: touch(mode=...) would not reset it
    staging.touch(mode=0o600)
    staging.write_text(json.dumps(state, indent=2) + "\n")
    staging.replace(path)


def new_secrets(old: dict) -> dict:
    """Passwords and S3 keys: kept from `old` (the databases and the identities already hold them), else new."""
    def token(size: int = 18) -> str:
        return secrets.token_urlsafe(size)

    s3_users = ("admin", "mlflow", *USERS)  # admin: argml.stack itself (buckets, readiness, backup, restore)
    return {
        "postgres_user": "argml",
        "postgres_password": old.get("postgres_password") or token(),
        "passwords": old.get("passwords") or {user: token() for user in ("admin", *USERS)},
        "flask_secret": old.get("flask_secret") or token(32),
        "s3_keys": old.get("s3_keys") or {user: {"key": f"argml-{user}-{token(6)}", "secret": token(30)}
                                          for user in s3_users},
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def port_busy(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((HOST, port)) == 0


def choose_ports(requested: str, old: dict | None = None) -> dict[str, int]:
    """'auto': free ports; '' : the ports of the last start (so clients keep their settings), else the
    defaults; 'name=port,...': the defaults with those changed."""
    if requested == "auto":
        chosen: dict[str, int] = {}
        while len(chosen) < len(DEFAULT_PORTS):
            port = free_port()
            if port not in chosen.values():
                chosen[list(DEFAULT_PORTS)[len(chosen)]] = port
        return chosen
    ports = dict(old) if old and not requested else dict(DEFAULT_PORTS)
    for item in filter(None, requested.split(",")):
        name, _, value = item.partition("=")
        if name not in ports or not value.isdigit():
            raise StackError(f"--ports takes 'auto' or name=port pairs for {sorted(ports)}, not {item!r}")
        ports[name] = int(value)
    return ports


def check_ports_free(ports: dict[str, int], names) -> None:
    busy = [f"{name} ({ports[name]})" for name in names if port_busy(ports[name])]
    if busy:
        raise StackError(f"ports in use on {HOST}: {', '.join(busy)}; pass --ports auto or name=port")


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().split(")")[-1].split()[0] != "Z"
    return True


def spawn(command: list[str], log: Path, env: dict, cwd: Path | None = None) -> subprocess.Popen:
    """Start a server in its own session (so a stop reaches its workers), its output appended to `log`."""
    with open(log, "ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                start_new_session=True, stdin=subprocess.DEVNULL)


def stop_process(pid: int, timeout: float = 20) -> None:
    """SIGTERM to the process group, SIGKILL after `timeout` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.time() + timeout
    while time.time() < deadline and process_alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(log: Path, lines: int = 8) -> str:
    if not log.exists():
        return ""
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - 20_000))
        text = handle.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def wait_until(check, what: str, timeout: float, log: Path | None = None, pid: int | None = None) -> None:
    """Poll `check() -> None | str` (None: ready; a string: why not yet) until it passes, the process `pid`
    exits, or `timeout` s pass; then StackError with the last reason and the end of the engine's log."""
    deadline = time.time() + timeout
    reason = "not checked"
    while time.time() < deadline:
        reason = check()
        if reason is None:
            return
        if pid is not None and not process_alive(pid):
            break
        time.sleep(0.25)
    outcome = "exited" if pid is not None and not process_alive(pid) else f"was not ready within {timeout:.0f} s"
    tail = log_tail(log) if log is not None else ""
    raise StackError(f"{what} {outcome} ({reason})" + (f"; its log {log} ends with:\n{tail}" if tail else ""))
