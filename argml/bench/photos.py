"""`argml bench photos`: latency percentiles of a served photo model (`mlflow models serve -m
models:/argml-photos@champion`, `--url`, loopback only) under `--clients` concurrent clients for `--seconds`,
one real UTKFace photo per request."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import urllib.request
from urllib.parse import urlparse

import numpy as np

from argml.core.errors import BadInput, Unavailable
from argml.bench.report import utkface_folder

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:5002", help="the served photo model (loopback only)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="how long they send")
    parser.add_argument("--images", type=int, default=1, help="photos per request")


def run(args) -> dict:
    if urlparse(args.url).hostname not in LOOPBACK:
        raise BadInput(f"bench photos loads a server hard: loopback URLs only, got {args.url}")
    folder = utkface_folder("photos")
    names = sorted(os.listdir(folder))[::211][:50]
    count = args.images
    bodies = [json.dumps({"dataframe_records": [
        {"name": name, "image": base64.b64encode((folder / name).read_bytes()).decode()}
        for name in names[i:i + count]]}).encode() for i in range(0, len(names) - count + 1, count)]
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + args.seconds

    def client(number: int) -> None:
        sent = number
        while time.perf_counter() < deadline:
            request = urllib.request.Request(f"{args.url.rstrip('/')}/invocations", data=bodies[sent % len(bodies)],
                                             headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            try:
                urllib.request.urlopen(request, timeout=120).read()
                latencies.append(time.perf_counter() - start)
            except OSError as error:
                errors.append(str(error))
            sent += args.clients

    threads = [threading.Thread(target=client, args=(number,)) for number in range(args.clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        raise Unavailable(f"no request succeeded: {errors[:3]}")
    p50, p90, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 90, 99))
    figures = {"requests": len(latencies), "errors": len(errors), "seconds": round(elapsed, 1),
               "photos_per_s": round(len(latencies) * count / elapsed, 1),
               "latency_ms": {"p50": round(p50), "p90": round(p90), "p99": round(p99),
                              "max": round(max(latencies) * 1000)}}
    print(f"photos, {args.clients} clients, {count} photo(s) per request, {elapsed:.0f} s: {len(latencies)} "
          f"requests ({figures['photos_per_s']} photos/s), {len(errors)} errors; latency p50 {p50:.0f} ms, "
          f"p90 {p90:.0f} ms, p99 {p99:.0f} ms")
    return figures
