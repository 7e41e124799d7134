"""Benchmarks: one module per benchmark, each with `add_arguments(parser)` and `run(args) -> figures`;
`argml bench NAME` runs one and writes reports/bench/NAME.json (argml.bench.report)."""

from __future__ import annotations

import importlib

BENCHMARKS = {  # name -> what it measures (the module argml.bench.<name> does it)
    "facenet": "FaceNet load times, forward throughput, the features stage on Keras vs LiteRT",
    "finetune": "fine-tuning images/s from each start block",
    "live": "end-to-end FPS of the live loop on 1, 3 and 12 real faces",
    "litert": "faces/s of a trained model at batch 1 and 8: Keras, LiteRT fp32 and int8",
    "pipeline": "every stage's time of `dvc repro` (or make) in a fresh clone of one or more commits",
    "photos": "latency of a served photo model under concurrent clients",
    "quantization": "dynamic-range int8 vs full-integer int8 LiteRT exports: agreement with Keras and faces/s",
    "served": "the served photo model under load with 10 % bad requests (bombs, junk): latency, errors, memory",
    "stack": "the team stack under 8 concurrent training clients, and dvc push/fetch MB/s through its S3",
    "tracking": "team mode's cost: pipeline stages against the MLflow server vs SQLite",
    "audit": "argml audit's photos/s in-process and on 1 and 2 cluster workers, memory per worker, engine costs",
}


def load(name: str):
    return importlib.import_module(f"argml.bench.{name}")
