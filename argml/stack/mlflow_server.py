"""`mlflow server` for the team on 127.0.0.1: runs and the registry in PostgreSQL (database `mlflow`),
artifacts proxied to the S3 bucket argml-mlflow with the server's own S3 key (clients get no storage key),
and MLflow's basic-auth app with its users in the database `mlflow_auth`. Log: DIR/logs/mlflow.log.
"""

from __future__ import annotations

import sys
from pathlib import Path

from argml.stack import postgres, seaweed
from argml.stack.state import BUCKETS, HOST, S3_REGION, USERS, StackError, log_file

def tracking_uri(state: dict) -> str:
    return f"http://{HOST}:{state['ports']['mlflow']}"


def _auth_ini(folder: Path, state: dict) -> Path:
    path = folder / "basic_auth.ini"
    path.touch(mode=0o600)
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = {postgres.uri(state, 'mlflow_auth')}\n"
                    f"admin_username = admin\nadmin_password = {state['passwords']['admin']}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    # a PBKDF2 check per request otherwise: a minute's cache of good credentials per worker
                    "auth_cache_ttl_seconds = 60\n")
    return path


def server_env(folder: Path, state: dict, base: dict) -> dict:
    keys = state["s3_keys"]["mlflow"]
    return {**base, "MLFLOW_AUTH_CONFIG_PATH": str(_auth_ini(folder, state)),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": state["flask_secret"], "MLFLOW_DISABLE_TELEMETRY": "true",
            "MLFLOW_S3_ENDPOINT_URL": seaweed.endpoint(state), "AWS_ACCESS_KEY_ID": keys["key"],
            "AWS_SECRET_ACCESS_KEY": keys["secret"], "AWS_DEFAULT_REGION": S3_REGION}


def command(state: dict) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--host", HOST, "--port", str(state["ports"]["mlflow"]),
            "--workers", "2", "--backend-store-uri", postgres.uri(state, "mlflow"),
            "--artifacts-destination", f"s3://{BUCKETS['mlflow']}/artifacts", "--serve-artifacts",
            "--app-name", "basic-auth",
            # uvicorn restarts a worker that does not answer its health check in 5 s: on a busy 2-core machine
            # a worker still importing MLflow misses it, and the restarts never end
            "--uvicorn-opts", "--timeout-worker-healthcheck 60"]


def start(folder: Path, state: dict, base_env: dict) -> int:
    from argml.stack.state import spawn

    return spawn(command(state), log_file(folder, "mlflow"), server_env(folder, state, base_env)).pid


def health(folder: Path, state: dict) -> str | None:
    """None when /health answers 200 and the tracking store answers an authenticated query."""
    import requests

    try:
        response = requests.get(f"{tracking_uri(state)}/health", timeout=3)
        if response.status_code != 200:
            return f"/health answered {response.status_code}"
        response = requests.get(f"{tracking_uri(state)}/api/2.0/mlflow/experiments/search",
                                params={"max_results": 1}, auth=("admin", state["passwords"]["admin"]), timeout=10)
    except requests.RequestException as error:
        return f"no answer from {tracking_uri(state)} ({type(error).__name__})"
    if response.status_code != 200:
        return f"an experiments query answered {response.status_code}: {response.text[:200]}"
    return None


def create_users(state: dict) -> None:
    """`trainer` gets the server's default permission on what others made, and owns (MANAGE) what it creates;
    `reader` is READ-only: it may look, but not register a model version or move an alias. The admin's
    password goes in this call's requests only, never into os.environ."""
    import requests

    admin = ("admin", state["passwords"]["admin"])
    api = f"{tracking_uri(state)}/api/2.0/mlflow/users"
    for user in USERS:
        found = requests.get(f"{api}/get", params={"username": user}, auth=admin, timeout=30)
        if found.status_code == 200:
            continue
        created = requests.post(f"{api}/create", json={"username": user, "password": state["passwords"][user]},
                                auth=admin, timeout=30)
        if created.status_code != 200:
            raise StackError(f"creating the MLflow user {user} failed ({created.status_code}): {created.text[:300]}")
