"""An audit's folder: its plan, one pair of Parquet files per finished shard, and the assembled tables.

    DIR/plan.json              what is audited and how (inputs' digest, shard size, model, detector, limits)
    DIR/inputs.parquet         the entries, in order (shard k holds entries k*S .. k*S+S-1)
    DIR/shards/NNNNN.faces.parquet, NNNNN.photos.parquet   one finished shard (photos written last)
    DIR/faces.parquet, DIR/photos.parquet                  every shard's rows, in entry order

Only the engine's driver writes here, each file through argml.core.files.atomic_path, so a killed run leaves
no half-written shard, and a shard whose files exist is never written again (`write_shard` keeps the first).
A rerun with the same plan skips finished shards; one with another plan is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from argml.audit.worker import FACES_SCHEMA, PHOTOS_SCHEMA, AuditSettings, ShardResult
from argml.core.files import atomic_path, write_json

PLAN_VERSION = 1


@dataclass(frozen=True)
class Plan:
    entries: list[str]
    duplicates: int
    shard_size: int
    settings: AuditSettings

    @property
    def shard_count(self) -> int:
        return -(-len(self.entries) // self.shard_size)

    def shard(self, index: int) -> list[str]:
        return self.entries[index * self.shard_size:(index + 1) * self.shard_size]

    def document(self) -> dict:
        digest = hashlib.sha256("\n".join(self.entries).encode()).hexdigest()
        settings = {key: value for key, value in asdict(self.settings).items() if key not in ("threads", "batch_size",
                                                                                                  "cache_dir")}
        return {"version": PLAN_VERSION, "inputs": len(self.entries), "inputs_sha256": digest,
                "duplicates": self.duplicates, "shard_size": self.shard_size, "shards": self.shard_count,
                "settings": settings}


class AuditFolder:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.shards = self.folder / "shards"

    def faces_path(self, index: int) -> Path:
        return self.shards / f"{index:05d}.faces.parquet"

    def photos_path(self, index: int) -> Path:
        return self.shards / f"{index:05d}.photos.parquet"

    def prepare(self, plan: Plan) -> None:
        """Start the folder for `plan`, or check that the audit already in it followed the same plan."""
        document = plan.document()
        recorded = self.folder / "plan.json"
        if recorded.exists():
            previous = json.loads(recorded.read_text())
            if previous != document:
                changed = sorted(key for key in set(previous) | set(document) if previous.get(key) != document.get(key))
                if "settings" in changed:
                    changed.remove("settings")
                    changed += sorted(f"settings.{key}" for key in set(previous["settings"]) | set(document["settings"])
                                      if previous["settings"].get(key) != document["settings"].get(key))
                raise ValueError(f"{self.folder} holds an audit of other inputs or settings (differs in "
                                 f"{', '.join(changed)}): use another --out, or delete it to start over")
            return
        self.shards.mkdir(parents=True, exist_ok=True)
        inputs = self.folder / "inputs.parquet"
        with atomic_path(inputs) as staging:
            pd.DataFrame({"file": plan.entries}).to_parquet(staging, index=False)
        write_json(recorded, document)  # last: a folder with plan.json is a complete start

    def done(self, index: int) -> bool:
        return self.photos_path(index).exists()

    def pending(self, plan: Plan) -> list[int]:
        return [index for index in range(plan.shard_count) if not self.done(index)]

    def write_shard(self, result: ShardResult) -> bool:
        """Write a finished shard's tables, unless that shard is already written; -> whether it wrote."""
        if self.done(result.index):
            return False
        with atomic_path(self.faces_path(result.index)) as staging:
            pq.write_table(result.faces, staging)
        with atomic_path(self.photos_path(result.index)) as staging:  # last: it marks the shard done
            pq.write_table(result.photos, staging)
        return True

    def assemble(self, plan: Plan) -> tuple[Path, Path]:
        """faces.parquet and photos.parquet: every shard's rows in entry order, streamed shard by shard."""
        paths = []
        for name, path_of, schema in (("faces", self.faces_path, FACES_SCHEMA),
                                      ("photos", self.photos_path, PHOTOS_SCHEMA)):
            target = self.folder / f"{name}.parquet"
            with atomic_path(target) as staging, pq.ParquetWriter(staging, schema) as writer:
                for index in range(plan.shard_count):
                    writer.write_table(pq.read_table(path_of(index), schema=schema))
            paths.append(target)
        return paths[0], paths[1]
