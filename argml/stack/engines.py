"""The team stack on 127.0.0.1, built only from existing engines: PostgreSQL (Debian's `initdb` + `pg_ctl`),
an S3 server (moto's server mode; MinIO or any S3 in production) and `mlflow server` with a PostgreSQL store,
artifacts proxied to the bucket, and MLflow's basic-auth app (its users in a database of their own).

    python -m argml.stack up [--dir .stack] [--ports auto]   # start all three, wait until healthy
    python -m argml.stack env [--user trainer]               # `export` lines for a client shell
    python -m argml.stack status | down

Everything lives in DIR: data, logs (DIR/logs/*.log), and DIR/stack.json (ports, process ids, generated
passwords; mode 0600). `down` stops what `up` started and removes nothing else; `down --purge` also
removes DIR. moto keeps its objects in memory: they are gone after `down` (MinIO keeps them on disk).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from argml.core import errors

DEFAULT_PORTS = {"postgres": 5432, "s3": 9000, "mlflow": 5000}
HOST = "127.0.0.1"
BUCKETS = {"mlflow": "argml-mlflow", "dvc": "argml-dvc"}
DATABASES = ("mlflow", "mlflow_auth")  # the tracking store and the auth store: both keep an alembic_version table
USERS = {"trainer": None, "reader": "READ"}  # created by `up`: trainer runs the pipeline; reader only reads
S3_REGION = "us-east-1"


class StackError(errors.Unavailable):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _port_busy(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def _state_file(folder: Path) -> Path:
    return folder / "stack.json"


def read_state(folder: str | Path) -> dict:
    path = _state_file(Path(folder))
    if not path.exists():
        raise StackError(f"no stack in {folder}: start one with `python -m argml.stack up --dir {folder}`")
    return json.loads(path.read_text())


def _write_state(folder: Path, state: dict) -> None:
    path = _state_file(folder)
    staging = path.with_suffix(".tmp")
    staging.unlink(missing_ok=True)  # one left by a crash keeps its own mode: touch(mode=...) would not reset it
    staging.touch(mode=0o600)
    staging.write_text(json.dumps(state, indent=2) + "\n")
    staging.replace(path)


def _as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: root runs its tools as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], what: str, env: dict | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}")


def _wait_until(check, what: str, timeout: float, log: Path | None = None, process=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    outcome = (f"exited ({process.returncode})" if process is not None and process.poll() is not None
               else f"did not become ready within {timeout:.0f} s")
    raise StackError(f"{what} {outcome}" + (f"; its log ({log}) ends with:\n{tail}" if tail else ""))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def postgres_uri(state: dict, database: str) -> str:
    return (f"postgresql+psycopg2://{state['postgres_user']}:{state['postgres_password']}@{HOST}:"
            f"{state['ports']['postgres']}/{database}")


def s3_endpoint(state: dict) -> str:
    return f"http://{HOST}:{state['ports']['s3']}"


def tracking_uri(state: dict) -> str:
    return f"http://{HOST}:{state['ports']['mlflow']}"


def _start_postgres(folder: Path, state: dict) -> None:
    data = folder / "postgres"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        password_file = folder / "postgres.pw"
        password_file.write_text(state["postgres_password"] + "\n")
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        try:
            _run(_as_postgres(["initdb", "-D", str(data), "-U", state["postgres_user"], "--auth=scram-sha-256",
                               f"--pwfile={password_file}", "-E", "UTF8"]),
                 f"initdb in {data} (as root, the postgres user must be able to reach this folder)")
        finally:
            password_file.unlink(missing_ok=True)
    log = folder / "logs" / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(log.parent, "postgres", "postgres")
    options = f"-c listen_addresses={HOST} -p {state['ports']['postgres']} -c unix_socket_directories={data}"
    _run(_as_postgres(["pg_ctl", "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]),
         f"PostgreSQL on {HOST}:{state['ports']['postgres']} (log: {log})")

    import psycopg2

    connection = psycopg2.connect(host=HOST, port=state["ports"]["postgres"], user=state["postgres_user"],
                                  password=state["postgres_password"], dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for database in DATABASES:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
    connection.close()


def _spawn(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "ab") as output:  # the child keeps its own descriptor
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                stdin=subprocess.DEVNULL)


def _start_s3(folder: Path, state: dict) -> None:
    log = folder / "logs" / "s3.log"
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        raise StackError("moto_server is not installed: pip install -e '.[team]'")
    process = _spawn([str(moto), "-H", HOST, "-p", str(state["ports"]["s3"])], log, dict(os.environ))
    state["pids"]["s3"] = process.pid
    _wait_until(lambda: _http_ok(f"{s3_endpoint(state)}/moto-api/"), "the S3 server (moto)", 60, log, process)
    s3 = s3_client(state)
    for bucket in BUCKETS.values():
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)


def s3_client(state: dict):
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint(state), region_name=S3_REGION,
                        aws_access_key_id=state["s3_key"], aws_secret_access_key=state["s3_secret"])


def _server_env(folder: Path, state: dict) -> dict:
    auth_ini = folder / "basic_auth.ini"
    auth_ini.touch(mode=0o600)
    auth_ini.write_text("[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = {postgres_uri(state, 'mlflow_auth')}\n"
                        f"admin_username = admin\nadmin_password = {state['passwords']['admin']}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                        # a PBKDF2 check per request otherwise: a minute's cache of good credentials per worker
                        "auth_cache_ttl_seconds = 60\n")
    return {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": state["flask_secret"],
            # the server alone holds the storage credentials: clients send artifacts through it
            "MLFLOW_S3_ENDPOINT_URL": s3_endpoint(state), "AWS_ACCESS_KEY_ID": state["s3_key"],
            "AWS_SECRET_ACCESS_KEY": state["s3_secret"], "AWS_DEFAULT_REGION": S3_REGION}


def _start_mlflow(folder: Path, state: dict) -> None:
    log = folder / "logs" / "mlflow.log"
    command = [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(state["ports"]["mlflow"]),
               "--workers", "2", "--backend-store-uri", postgres_uri(state, "mlflow"),
               "--artifacts-destination", f"s3://{BUCKETS['mlflow']}/artifacts", "--serve-artifacts",
               "--app-name", "basic-auth"]
    process = _spawn(command, log, _server_env(folder, state))
    state["pids"]["mlflow"] = process.pid
    _wait_until(lambda: _http_ok(f"{tracking_uri(state)}/health"), "the MLflow server", 180, log, process)
    _create_users(state)


def _create_users(state: dict) -> None:
    """`trainer` gets the server's default permission on what others made, and owns (MANAGE) what it creates;
    `reader` is explicitly READ-only: it may look, but not register a model version or move an alias."""
    from mlflow.server.auth.client import AuthServiceClient

    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", state["passwords"]["admin"]
    try:
        admin = AuthServiceClient(tracking_uri(state))
        for user in USERS:
            try:
                admin.get_user(user)
            except Exception:  # noqa: BLE001 - the auth client raises MlflowException for an unknown user
                admin.create_user(user, state["passwords"][user])
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]


def _process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def _choose_ports(requested: str) -> dict[str, int]:
    if requested == "auto":
        return {name: free_port() for name in DEFAULT_PORTS}
    ports = dict(DEFAULT_PORTS)
    for item in filter(None, requested.split(",")):
        name, _, value = item.partition("=")
        if name not in ports or not value.isdigit():
            raise StackError(f"--ports takes 'auto' or name=port pairs for {sorted(ports)}, not {item!r}")
        ports[name] = int(value)
    busy = [f"{name} ({port})" for name, port in ports.items() if _port_busy(port)]
    if busy:
        raise StackError(f"ports in use on {HOST}: {', '.join(busy)}; pass --ports auto or name=port")
    return ports


def up(folder: str | Path = ".stack", ports: str = "") -> dict:
    """Start PostgreSQL, the S3 server and the MLflow server; -> the stack's state. A failed start stops
    whatever it had started."""
    folder = Path(folder).resolve()
    if folder.exists() and not folder.is_dir():
        raise StackError(f"{folder} is a file; the stack needs a folder (--dir)")
    if _state_file(folder).exists() and any(_process_alive(pid) for pid in read_state(folder)["pids"].values()):
        raise StackError(f"a stack is already running from {folder}: `python -m argml.stack down --dir {folder}`")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # as root, the postgres user must reach DIR/postgres
    (folder / "logs").mkdir(exist_ok=True)
    old = json.loads(_state_file(folder).read_text()) if _state_file(folder).exists() else {}
    state = {
        "ports": _choose_ports(ports),
        "pids": {},
        "postgres_user": "argml",
        # kept across restarts: the database and the auth store already hold them
        "postgres_password": old.get("postgres_password") or secrets.token_urlsafe(18),
        "passwords": old.get("passwords") or {user: secrets.token_urlsafe(18) for user in ("admin", *USERS)},
        "flask_secret": old.get("flask_secret") or secrets.token_urlsafe(32),
        "s3_key": "argml", "s3_secret": old.get("s3_secret") or secrets.token_urlsafe(18),
    }
    _write_state(folder, state)
    try:
        _start_postgres(folder, state)
        _start_s3(folder, state)
        _write_state(folder, state)
        _start_mlflow(folder, state)
    except BaseException:
        _write_state(folder, state)
        down(folder)
        raise
    _write_state(folder, state)
    return state


def _stop_process(pid: int, timeout: float = 20) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)  # the server's workers are in its process group
    deadline = time.time() + timeout
    while time.time() < deadline and _process_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def down(folder: str | Path = ".stack", purge: bool = False) -> None:
    folder = Path(folder).resolve()
    if not _state_file(folder).exists():
        return
    state = read_state(folder)
    for name in ("mlflow", "s3"):
        if state["pids"].get(name):
            _stop_process(state["pids"][name])
    data = folder / "postgres"
    if (data / "postmaster.pid").exists():
        _run(_as_postgres(["pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"]), "stopping PostgreSQL")
    state["pids"] = {}
    _write_state(folder, state)
    if purge:
        shutil.rmtree(folder)


def status(folder: str | Path = ".stack") -> dict[str, bool]:
    state = read_state(folder)
    return {"postgres": (Path(folder) / "postgres" / "postmaster.pid").exists() and _port_busy(state["ports"]["postgres"]),
            "s3": _http_ok(f"{s3_endpoint(state)}/moto-api/"),
            "mlflow": _http_ok(f"{tracking_uri(state)}/health")}


def client_env(state: dict, user: str = "trainer") -> dict[str, str]:
    """What a client sets: MLflow's URI and a user, and (for `dvc push`/`dvc pull` only) the S3 credentials
    and endpoint of the DVC remote. MLflow clients get no storage credentials: the server proxies artifacts."""
    return {"MLFLOW_TRACKING_URI": tracking_uri(state), "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": state["passwords"][user],
            "AWS_ACCESS_KEY_ID": state["s3_key"], "AWS_SECRET_ACCESS_KEY": state["s3_secret"],
            "AWS_DEFAULT_REGION": S3_REGION, "ARGML_S3_ENDPOINT": s3_endpoint(state)}


@errors.command("argml.stack")
def main(argv: list[str] | None = None, prog: str = "python -m argml.stack") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("up", "down", "status", "env"))
    parser.add_argument("--dir", default=".stack", help="the stack's folder (default %(default)s)")
    parser.add_argument("--ports", default="", help="'auto' or e.g. mlflow=5001,s3=9001 (default: 5432, 9000, 5000)")
    parser.add_argument("--user", default="trainer", choices=("admin", *USERS), help="env: the MLflow user")
    parser.add_argument("--purge", action="store_true", help="down: also delete the folder (databases, logs)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            state = up(args.dir, args.ports)
            print(f"stack up: MLflow {tracking_uri(state)}, S3 {s3_endpoint(state)}, PostgreSQL "
                  f"{HOST}:{state['ports']['postgres']}; logs in {Path(args.dir) / 'logs'}\n"
                  f"client settings: eval \"$(python -m argml.stack env --dir {args.dir})\"")
        elif args.command == "down":
            down(args.dir, args.purge)
            print("stack down")
        elif args.command == "status":
            health = status(args.dir)
            print("\n".join(f"{name}: {'up' if ok else 'down'}" for name, ok in health.items()))
            return 0 if all(health.values()) else 1
        else:
            print("\n".join(f"export {key}={value}" for key, value in client_env(read_state(args.dir), args.user).items()))
    except StackError as error:
        return errors.report("argml.stack", error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
