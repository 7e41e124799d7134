"""PostgreSQL for MLflow: Debian's `initdb` + `pg_ctl` on 127.0.0.1, data in DIR/postgres, log in
DIR/logs/postgres.log, two databases (`mlflow`: runs and the registry; `mlflow_auth`: the basic-auth users;
they cannot share one database, both keep an `alembic_version` table). As root, its tools run as the
`postgres` user (PostgreSQL refuses root). Also the dumps and restores argml.stack.backup uses.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from argml.stack.state import HOST, StackError, log_file, process_alive

DATABASES = ("mlflow", "mlflow_auth")


def data_dir(folder: Path) -> Path:
    return Path(folder) / "postgres"


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def tool(name: str) -> str:
    """A PostgreSQL program of the same installation as `pg_ctl` (Debian keeps them in /usr/lib/postgresql/N/bin)."""
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl is None:
        raise StackError("PostgreSQL's pg_ctl is not on PATH: apt-get install postgresql, then put "
                         "/usr/lib/postgresql/N/bin on PATH")
    beside = Path(os.path.realpath(pg_ctl)).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def _run(command: list[str], what: str, env: dict | None = None) -> str:
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise StackError(f"{what} failed ({result.returncode}): {(result.stdout + result.stderr).strip()[-2000:]}")
    return result.stdout


def uri(state: dict, database: str) -> str:
    return (f"postgresql+psycopg2://{state['postgres_user']}:{state['postgres_password']}@{HOST}:"
            f"{state['ports']['postgres']}/{database}")


def _init(folder: Path, state: dict) -> None:
    data = data_dir(folder)
    data.mkdir(parents=True, exist_ok=True)
    password_file = folder / "postgres.pw"
    password_file.touch(mode=0o600)
    password_file.write_text(state["postgres_password"] + "\n")
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        shutil.chown(password_file, "postgres", "postgres")
    try:
        _run(_as_postgres([tool("initdb"), "-D", str(data), "-U", state["postgres_user"], "--auth=scram-sha-256",
                           f"--pwfile={password_file}", "-E", "UTF8"]),
             f"initdb in {data} (as root, the postgres user must be able to reach this folder)")
    finally:
        password_file.unlink(missing_ok=True)


def _clear_stale_lock(data: Path) -> None:
    """Remove the lock files (postmaster.pid, the socket's .lock) whose postmaster has died. PostgreSQL checks
    their PID with kill(pid, 0), which a dead but unreaped process (a zombie) passes: in a container whose init
    does not reap orphans, a crashed server would otherwise never start again."""
    for lock in [data / "postmaster.pid", *data.glob(".s.PGSQL.*.lock")]:
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if not process_alive(pid):
            lock.unlink(missing_ok=True)


def start(folder: Path, state: dict) -> None:
    """Start the server (a fresh data folder is initialised first; after a crash PostgreSQL replays its WAL)
    and create the two databases if missing. pg_ctl -w returns once it accepts connections."""
    data = data_dir(folder)
    if not (data / "PG_VERSION").exists():
        _init(folder, state)
    log = log_file(folder, "postgres")
    if os.geteuid() == 0:
        shutil.chown(log.parent, "postgres", "postgres")
        if log.exists():
            shutil.chown(log, "postgres", "postgres")
    _clear_stale_lock(data)
    options = f"-c listen_addresses={HOST} -p {state['ports']['postgres']} -c unix_socket_directories={data}"
    _run(_as_postgres([tool("pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start"]),
         f"PostgreSQL on {HOST}:{state['ports']['postgres']} (log: {log})")
    connection = connect(state, "postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for database in DATABASES:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{database}"')
    connection.close()


def connect(state: dict, database: str):
    import psycopg2

    return psycopg2.connect(host=HOST, port=state["ports"]["postgres"], user=state["postgres_user"],
                            password=state["postgres_password"], dbname=database, connect_timeout=3)


def pid(folder: Path) -> int | None:
    """The postmaster's process id from its pid file (None when there is none)."""
    pid_file = data_dir(folder) / "postmaster.pid"
    try:
        return int(pid_file.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def health(folder: Path, state: dict) -> str | None:
    """None when the `mlflow` database answers a query; else why not."""
    import psycopg2

    try:
        connection = connect(state, "mlflow")
    except psycopg2.Error as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()
    return None


def stop(folder: Path) -> None:
    data = data_dir(folder)
    if (data / "postmaster.pid").exists():
        result = subprocess.run(_as_postgres([tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "status"]),
                                capture_output=True, text=True)
        if result.returncode == 0:  # 3: no server running (e.g. a stale pid file after a kill -9)
            _run(_as_postgres([tool("pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]), "stopping PostgreSQL")


def _client_env(state: dict) -> dict:
    return {**os.environ, "PGPASSWORD": state["postgres_password"]}  # the child's environment only


def dump(state: dict, database: str, target: Path) -> None:
    """pg_dump's custom format: one consistent snapshot of `database`, whatever is written meanwhile."""
    _run([tool("pg_dump"), "-h", HOST, "-p", str(state["ports"]["postgres"]), "-U", state["postgres_user"],
          "-Fc", "--no-owner", "-f", str(target), database], f"pg_dump of {database}", _client_env(state))


def restore(state: dict, database: str, source: Path) -> None:
    """Load a dump into the (empty) `database`."""
    _run([tool("pg_restore"), "-h", HOST, "-p", str(state["ports"]["postgres"]), "-U", state["postgres_user"],
          "--no-owner", "--exit-on-error", "-d", database, str(source)], f"pg_restore of {database}",
         _client_env(state))
