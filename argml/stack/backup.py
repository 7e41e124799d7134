"""Backup and restore of a team stack: what a team would lose with the machine.

    python -m argml.stack backup DIR [--dir .stack]      # a running stack -> DIR (made whole or not at all)
    python -m argml.stack restore DIR --dir NEW_STACK    # DIR -> a fresh stack folder, started

DIR holds `mlflow.dump` and `mlflow_auth.dump` (pg_dump's custom format: each one consistent snapshot),
`buckets/BUCKET/KEY` (every object of argml-mlflow and argml-dvc), `secrets.json` (the stack's passwords and S3
keys, so users' settings keep working after a restore; mode 0600, like the whole folder) and `manifest.json`
(sha256 and size of every file). The databases are dumped before the buckets are copied, and objects are
only ever added, so every artifact a dumped run names is in the copy. A restore checks every hash first.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path, PurePosixPath

from argml.core.files import atomic_dir, file_digest
from argml.stack import engines, postgres, seaweed
from argml.stack.state import BUCKETS, StackError, read_state, state_file, write_state

SECRET_KEYS = ("postgres_user", "postgres_password", "passwords", "flask_secret", "s3_keys")


def _object_path(root: Path, bucket: str, key: str) -> Path:
    parts = PurePosixPath(key).parts
    if not parts or key.endswith("/") or any(part in ("..", ".") for part in parts) or key.startswith("/"):
        raise StackError(f"s3://{bucket}/{key}: a key that cannot be kept as a file")
    return root / "buckets" / bucket / Path(*parts)


def bucket_objects(state: dict, bucket: str) -> list[str]:
    pages = seaweed.client(state).get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def backup(folder: str | Path, target: str | Path) -> dict:
    """Dump both databases and copy both buckets of the running stack in `folder` to `target`; -> manifest."""
    folder, target = Path(folder).resolve(), Path(target).resolve()
    state = read_state(folder)
    if target.exists():
        raise StackError(f"{target} exists: a backup goes to a new folder")
    for engine in ("postgres", "s3"):
        why = engines.HEALTH[engine](folder, state)
        if why is not None:
            raise StackError(f"cannot back up: {engine} does not answer ({why}); `python -m argml.stack status`")
    with atomic_dir(target) as staging:
        files: dict[str, dict] = {}
        for database in postgres.DATABASES:
            postgres.dump(state, database, staging / f"{database}.dump")
        s3 = seaweed.client(state)
        objects = {}
        for bucket in BUCKETS.values():
            objects[bucket] = bucket_objects(state, bucket)
            for key in objects[bucket]:
                path = _object_path(staging, bucket, key)
                path.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, key, str(path))
        secrets_file = staging / "secrets.json"
        secrets_file.touch(mode=0o600)
        secrets_file.write_text(json.dumps({key: state[key] for key in SECRET_KEYS}, indent=2) + "\n")
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            files[path.relative_to(staging).as_posix()] = {"sha256": file_digest(path, "sha256"),
                                                           "bytes": path.stat().st_size}
        manifest = {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "databases": list(postgres.DATABASES), "buckets": objects, "files": files}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    target.chmod(0o700)
    return manifest


def verify(source: Path) -> dict:
    """The backup's manifest, after checking every file it lists (StackError names the first bad one)."""
    manifest_file = source / "manifest.json"
    if not manifest_file.exists():
        raise StackError(f"{source} is not an argml stack backup (no manifest.json)")
    manifest = json.loads(manifest_file.read_text())
    for name, expected in manifest["files"].items():
        path = source / name
        if not path.is_file():
            raise StackError(f"backup {source} lacks {name}")
        if path.stat().st_size != expected["bytes"] or file_digest(path, "sha256") != expected["sha256"]:
            raise StackError(f"backup {source}: {name} does not match its sha256 in manifest.json")
    return manifest


def restore(source: str | Path, folder: str | Path, ports: str = "") -> dict:
    """Start a new stack in `folder` (which must hold none) from the backup `source`; -> its state."""
    source, folder = Path(source).resolve(), Path(folder).resolve()
    manifest = verify(source)
    if state_file(folder).exists() or (folder / "postgres").exists():
        raise StackError(f"{folder} already holds a stack: restore into a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    write_state(folder, {**json.loads((source / "secrets.json").read_text()), "pids": {}})

    def load(folder: Path, state: dict) -> None:
        for database in manifest["databases"]:
            postgres.restore(state, database, source / f"{database}.dump")
        s3 = seaweed.client(state)
        for bucket, keys in manifest["buckets"].items():
            for key in keys:
                s3.upload_file(str(_object_path(source, bucket, key)), bucket, key)

    return engines.up(folder, ports, before_mlflow=load)


def tree_digest(state: dict, bucket: str) -> dict[str, str]:
    """{key: sha256} of every object in `bucket`: what a round trip must keep."""
    s3 = seaweed.client(state)
    return {key: hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
            for key in bucket_objects(state, bucket)}
