"""`argml bench served`: the photo model under load with bad requests mixed in. It starts `mlflow models serve
-m MODEL` on 127.0.0.1 itself (so it can watch the server's memory), then `--clients` clients send requests for
`--seconds`, `--runs` times: one real UTKFace photo per request, and every tenth request (`--bad-every`) a bad
one instead, in turn a decompression bomb (a 389 KB PNG of 20000 x 20000 pixels), a truncated JPEG, random
bytes and text that is not base64. It reports the good requests' latency (p50, p90, p99) and errors, how each
bad request was answered (its error in its row, or an HTTP error), the server's resident memory (its process
tree's, sampled every 0.2 s: after warm-up, peak, at the end) and whether it is still answering."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from argml.bench.report import spread, utkface_folder
from argml.core.errors import BadInput, Unavailable

HOST = "127.0.0.1"
BAD_KINDS = ("bomb", "truncated", "random", "not-base64")


def add_arguments(parser) -> None:
    parser.add_argument("--model", default="models:/argml-photos@champion", help="the photo model to serve")
    parser.add_argument("--port", type=int, default=0, help="the server's port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="how long they send, per run")
    parser.add_argument("--runs", type=int, default=2, help="runs against the same server")
    parser.add_argument("--bad-every", type=int, default=10, help="every Nth request is a bad one (10: 10 %%)")


# --- the requests -------------------------------------------------------------------------------------------

def zeros_png(width: int, height: int) -> bytes:
    """A valid grayscale PNG of zeros: 20000 x 20000 is 389 KB on disk, 400 million pixels once decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, rows = zlib.compressobj(9), b"\0" * (width + 1) * 1000
    data = b"".join(compressor.compress(rows[:(width + 1) * min(1000, height - start)])
                    for start in range(0, height, 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def body(name: str, image: str) -> bytes:
    return json.dumps({"dataframe_records": [{"name": name, "image": image}]}).encode()


def request_bodies(folder: Path) -> tuple[list[bytes], dict[str, bytes]]:
    """Good bodies (one real photo each) and one bad body of each kind."""
    names = sorted(os.listdir(folder))[::211][:50]
    good = [body(name, base64.b64encode((folder / name).read_bytes()).decode()) for name in names]
    photo = (folder / names[0]).read_bytes()
    bad = {"bomb": body("bomb.png", base64.b64encode(zeros_png(20000, 20000)).decode()),
           "truncated": body("truncated.jpg", base64.b64encode(photo[: len(photo) // 2]).decode()),
           "random": body("random.jpg", base64.b64encode(np.random.default_rng(0).bytes(20_000)).decode()),
           "not-base64": body("text.jpg", "this is not base64 at all!")}
    return good, bad


def send(url: str, data: bytes) -> tuple[float, int, list | None]:
    """(seconds, HTTP status, the answer's rows or None)."""
    request = urllib.request.Request(f"{url}/invocations", data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            rows = json.loads(response.read())["predictions"]
            return time.perf_counter() - start, response.status, rows
    except urllib.error.HTTPError as error:
        return time.perf_counter() - start, error.code, None
    except OSError:
        return time.perf_counter() - start, 0, None  # no answer at all (refused, reset, timed out)


# --- the server and its memory --------------------------------------------------------------------------------

def port_in_use(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex((HOST, port)) == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue += children.get(pid, [])
    return found


def tree_rss_mb(root: int) -> float:
    total = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/status") as status:
                total += next((int(line.split()[1]) for line in status if line.startswith("VmRSS:")), 0)
        except OSError:
            continue
    return total / 1024


class MemoryWatch(threading.Thread):
    """Samples the server tree's resident memory every `interval` seconds."""

    def __init__(self, root: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.interval, self.samples, self.stopped = root, interval, [], threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            self.samples.append(tree_rss_mb(self.root))

    def stop(self) -> list[float]:
        self.stopped.set()
        self.join()
        return self.samples


def start_server(model: str, port: int, scratch: str) -> subprocess.Popen:
    from argml.tracking import runs

    env = {**os.environ, "MLFLOW_TRACKING_URI": runs.configure(), "TMPDIR": scratch}  # its model copy goes there
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow) if mlflow.exists() else "mlflow", "models", "serve", "-m", model, "--env-manager", "local",
               "-h", HOST, "-p", str(port)]
    log = open(Path(scratch) / "server.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=2).close()
            return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(1)
    stop_server(server)
    tail = (Path(scratch) / "server.log").read_text()[-1500:]
    raise Unavailable(f"mlflow models serve -m {model} did not answer on {HOST}:{port}: {tail.strip().splitlines()[-1:]}")


def stop_server(server: subprocess.Popen) -> None:
    import signal

    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


# --- one run ----------------------------------------------------------------------------------------------------

def answered_in_its_row(rows: list | None, kind: str) -> bool:
    """A bad request's one row carries an error that says what is wrong with it."""
    expected = {"bomb": "pixels is over the limit", "truncated": "truncated JPEG", "random": "not a readable",
                "not-base64": "not valid base64"}[kind]
    return bool(rows) and len(rows) == 1 and expected in (rows[0].get("error") or "")


def answered_with_a_face(outcome: tuple[float, int, list | None]) -> bool:
    _, status, rows = outcome
    return status == 200 and bool(rows) and not any(row.get("error") for row in rows)


def load(url: str, good: list[bytes], bad: dict[str, bytes], clients: int, seconds: float, bad_every: int) -> dict:
    results: list[tuple[str, float, int, list | None]] = []  # (kind, seconds, status, rows)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        sent = 0
        while time.perf_counter() < deadline:
            index = sent * clients + number
            kind = BAD_KINDS[(index // bad_every) % len(BAD_KINDS)] if index % bad_every == bad_every - 1 else "good"
            outcome = send(url, bad[kind] if kind != "good" else good[index % len(good)])
            with lock:
                results.append((kind, *outcome))
            sent += 1

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    good_results = [r for r in results if r[0] == "good"]
    good_ok = [r for r in good_results if answered_with_a_face(r[1:])]
    latencies = [r[1] for r in good_ok] or [0.0]
    bad_results = [r for r in results if r[0] != "good"]
    return {
        "seconds": round(elapsed, 1), "requests": len(results), "good_requests": len(good_results),
        "good_errors": len(good_results) - len(good_ok),
        "good_latency_ms": {f"p{q}": round(float(np.percentile(latencies, q)) * 1000) for q in (50, 90, 99)}
        | {"max": round(max(latencies) * 1000)},
        "photos_per_s": round(len(good_ok) / elapsed, 1),
        "bad_requests": {kind: sum(r[0] == kind for r in bad_results) for kind in BAD_KINDS},
        "bad_answered_in_their_row": sum(answered_in_its_row(r[3], r[0]) for r in bad_results),
        "bad_http_errors": sorted({r[2] for r in bad_results if r[2] != 200}),
        "bad_latency_ms": {kind: round(float(np.median([r[1] for r in bad_results if r[0] == kind] or [0])) * 1000)
                           for kind in BAD_KINDS},
    }


def run(args) -> dict:
    if args.clients < 1 or args.seconds <= 0 or args.runs < 1 or args.bad_every < 2:
        raise BadInput("bench served: --clients and --runs at least 1, --seconds above 0, --bad-every at least 2")
    if args.port and port_in_use(args.port):
        raise Unavailable(f"port {args.port} on {HOST} is in use: pass another --port, or 0 for a free one")
    port = args.port or free_port()
    url = f"http://{HOST}:{port}"
    good, bad = request_bodies(utkface_folder("served"))
    with tempfile.TemporaryDirectory(prefix="argml-bench-served-") as scratch:
        server = start_server(args.model, port, scratch)
        try:
            # Warm-up (the first calls trace the model), which also keeps the photos the detector finds a face
            # in: a photo answered with no row is not a failure, and would count as one below.
            with_face = [data for data in good if answered_with_a_face(send(url, data))]
            without_face, good = len(good) - len(with_face), with_face
            if not good:
                raise Unavailable(f"the photo model found no face in any of the {without_face} photos")
            before = tree_rss_mb(server.pid)
            watch = MemoryWatch(server.pid)
            watch.start()
            runs = [load(url, good, bad, args.clients, args.seconds, args.bad_every) for _ in range(args.runs)]
            samples = watch.stop()
            after = tree_rss_mb(server.pid)
            alive = server.poll() is None and send(url, good[0])[1] == 200
        finally:
            stop_server(server)
    figures = {
        "model": args.model, "clients": args.clients, "bad_share": round(1 / args.bad_every, 3), "runs": runs,
        "good_photos": len(good), "good_photos_without_a_face": without_face,
        "good_p50_ms": spread([r["good_latency_ms"]["p50"] for r in runs], 0),
        "good_p99_ms": spread([r["good_latency_ms"]["p99"] for r in runs], 0),
        "photos_per_s": spread([r["photos_per_s"] for r in runs], 1),
        "good_errors": sum(r["good_errors"] for r in runs),
        "bad_requests": sum(sum(r["bad_requests"].values()) for r in runs),
        "bad_answered_in_their_row": sum(r["bad_answered_in_their_row"] for r in runs),
        "server_rss_mb": {"after_warm_up": round(before), "peak": round(max(samples or [before])),
                          "at_end": round(after)},
        "server_alive_at_end": alive,
    }
    print(f"served: {args.clients} clients x {args.runs} runs of {args.seconds:g} s, every {args.bad_every}th "
          f"request bad: good p50 {figures['good_p50_ms']['median']:g} ms, p99 {figures['good_p99_ms']['median']:g} ms, "
          f"{figures['good_errors']} good errors; {figures['bad_answered_in_their_row']} of {figures['bad_requests']} "
          f"bad requests answered in their row; server RSS {figures['server_rss_mb']}; alive: {alive}")
    return figures
