"""The team stack's three engines together, on 127.0.0.1: PostgreSQL (argml.stack.postgres), SeaweedFS's S3
(argml.stack.seaweed) and `mlflow server` (argml.stack.mlflow_server); everything in one folder (DIR/stack.json,
DIR/logs/ENGINE.log, each engine's data).

`up` starts whichever engine is not running (so after a crash it brings back what died, keeping the ports
and keys of the last start) and returns once each answers its health check: a real query, a real S3 PUT +
GET, an authenticated MLflow request. `status` runs the same checks and, for an engine that fails, says why
with the end of its log. `down` stops them (SIGTERM, then SIGKILL; PostgreSQL through `pg_ctl stop`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from argml.stack import mlflow_server, postgres, seaweed
from argml.stack.mlflow_server import tracking_uri
from argml.stack.seaweed import endpoint as s3_endpoint
from argml.stack.state import (BUCKETS, DEFAULT_PORTS, ENGINES, HOST, S3_REGION, USERS, StackError,
                               check_ports_free, choose_ports, log_file, log_tail, new_secrets, process_alive,
                               read_state, state_file, stop_process, wait_until, write_state)

__all__ = ["BUCKETS", "HOST", "StackError", "client_env", "down", "read_state", "s3_client", "s3_endpoint", "status",
           "tracking_uri", "up"]

HEALTH = {"postgres": postgres.health, "s3": seaweed.health, "mlflow": mlflow_server.health}
START_TIMEOUT = {"postgres": 60, "s3": 60, "mlflow": 300}  # MLflow starts slowly on a busy machine
PORTS_OF = {"postgres": ("postgres",), "mlflow": ("mlflow",),
            "s3": ("s3", *(name for name in DEFAULT_PORTS if name.startswith("weed_")))}


def s3_client(state: dict, user: str = "admin"):
    return seaweed.client(state, user)


def engine_pid(folder: Path, state: dict, engine: str) -> int | None:
    return postgres.pid(folder) if engine == "postgres" else state.get("pids", {}).get(engine)


def _start(folder: Path, state: dict, engine: str) -> None:
    if engine == "postgres":
        postgres.start(folder, state)
        state["pids"]["postgres"] = postgres.pid(folder)
    elif engine == "s3":
        state["pids"]["s3"] = seaweed.start(folder, state, seaweed.server_env())
    else:
        state["pids"]["mlflow"] = mlflow_server.start(folder, state, seaweed.server_env())
    write_state(folder, state)
    wait_until(lambda: HEALTH[engine](folder, state), f"the {engine} engine", START_TIMEOUT[engine],
               log_file(folder, engine), state["pids"][engine])
    if engine == "mlflow":
        mlflow_server.create_users(state)


def up(folder: str | Path = ".stack", ports: str = "", before_mlflow=None) -> dict:
    """Start what is not running; -> the stack's state. `before_mlflow(folder, state)` runs once PostgreSQL
    and S3 answer and before the MLflow server starts (a restore loads the databases and buckets there).
    A failed start stops the whole stack again."""
    folder = Path(folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise StackError(f"{folder} is a file; the stack needs a folder (--dir)")
    old = read_state(folder) if state_file(folder).exists() else {}
    running = {engine for engine in ENGINES if process_alive(engine_pid(folder, old, engine))}
    if running and ports:
        raise StackError(f"{', '.join(sorted(running))} already running from {folder}: "
                         f"`python -m argml.stack down --dir {folder}` before choosing ports")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # as root, the postgres user must reach DIR/postgres
    (folder / "logs").mkdir(exist_ok=True)
    state = {**new_secrets(old), "ports": choose_ports(ports, old.get("ports")),
             "pids": {engine: pid for engine, pid in old.get("pids", {}).items() if engine in running}}
    check_ports_free(state["ports"], [name for engine in ENGINES if engine not in running for name in PORTS_OF[engine]])
    write_state(folder, state)
    try:
        for engine in ENGINES:
            if engine == "mlflow" and before_mlflow is not None:
                before_mlflow(folder, state)
            if engine in running:
                wait_until(lambda: HEALTH[engine](folder, state), f"the running {engine} engine", 30,
                           log_file(folder, engine), engine_pid(folder, state, engine))
            else:
                _start(folder, state, engine)
    except BaseException:
        write_state(folder, state)
        down(folder)
        raise
    write_state(folder, state)
    return state


def down(folder: str | Path = ".stack", purge: bool = False) -> None:
    """Stop the engines (MLflow first, PostgreSQL last); `purge` also deletes the folder."""
    folder = Path(folder).resolve()
    if not state_file(folder).exists():
        return
    state = read_state(folder)
    for engine in ("mlflow", "s3"):
        if state["pids"].get(engine):
            stop_process(state["pids"][engine])
    postgres.stop(folder)
    state["pids"] = {}
    write_state(folder, state)
    if purge:
        shutil.rmtree(folder)


def status(folder: str | Path = ".stack") -> dict[str, str | None]:
    """{engine: None when healthy, else why not (with the end of its log)}."""
    folder = Path(folder).resolve()
    state = read_state(folder)
    report = {}
    for engine in ENGINES:
        pid = engine_pid(folder, state, engine)
        if pid and not process_alive(pid):
            why = f"not running (process {pid} is gone)"
        else:  # running, or started by someone else (systemd): its answer decides
            why = HEALTH[engine](folder, state)
        if why is not None:
            tail = log_tail(log_file(folder, engine))
            why += f"; {log_file(folder, engine)} ends with:\n{tail}" if tail else f"; no log at {log_file(folder, engine)}"
        report[engine] = why
    return report


def client_env(state: dict, user: str = "trainer") -> dict[str, str]:
    """What a client sets: MLflow's URI and a user, and (for `dvc push`/`dvc pull` only) that user's S3 key
    for the DVC remote. MLflow clients get no storage key: the server proxies artifacts."""
    keys = state["s3_keys"][user if user in USERS else "trainer"]
    return {"MLFLOW_TRACKING_URI": tracking_uri(state), "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": state["passwords"][user],
            "AWS_ACCESS_KEY_ID": keys["key"], "AWS_SECRET_ACCESS_KEY": keys["secret"],
            "AWS_DEFAULT_REGION": S3_REGION, "ARGML_S3_ENDPOINT": s3_endpoint(state)}


def configure(folder: str | Path) -> list[Path]:
    """For engines run by systemd (deploy/systemd): DIR/stack.json (new secrets and the default ports unless it
    exists), then the files the units read: s3-identities.json, basic_auth.ini and mlflow.env (mode 0600)."""
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    old = read_state(folder) if state_file(folder).exists() else {}
    state = {**new_secrets(old), "ports": old.get("ports") or dict(DEFAULT_PORTS), "pids": old.get("pids", {})}
    write_state(folder, state)
    server = mlflow_server.server_env(folder, state, {"MLFLOW_BACKEND_STORE_URI": postgres.uri(state, "mlflow")})
    env_file = folder / "mlflow.env"
    env_file.touch(mode=0o600)
    env_file.write_text("".join(f"{key}={value}\n" for key, value in server.items()))
    return [state_file(folder), seaweed.write_identities(folder, state), folder / "basic_auth.ini", env_file]


def env_lines(state: dict, user: str) -> str:
    return "\n".join(f"export {key}={value}" for key, value in client_env(state, user).items())

