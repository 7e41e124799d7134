"""Benchmarks, run on this machine: `python -m argml.bench facenet|finetune|live|tracking|photos [--runs 5]`.

facenet: time to build the model and load its weights, cold (parsing the frozen graph) and from the cache,
and forward throughput at batch 32 on real aligned UTKFace faces (or random images when ARGML_UTKFACE is
unset); then what the features stage computes, with Keras and with a LiteRT fp32 conversion (images/s and
cosine between the two). Prints every run and the median with min-max spread.

finetune: training images/s of FaceNet from each `--blocks` start block (default Mixed_7a and two starts
inside the block17 stack) with argml's heads, one train step at batch 64 on random inputs of the cached shape.

live: end-to-end FPS of the headless live path (YOLO tracking + asynchronous classification + drawing) on
videos of real UTKFace faces: 640x480 with 1 and with 3 faces, 1280x720 with 12 faces, and the same again
while another process keeps one core busy; and the per-face classification latency. Needs a trained model
(`--model`, default models:/argml@champion; `--backend`, default params' live.backend) and ARGML_YOLO_FACE.

tracking: the cost of team mode. In `--repo` (a pipeline checkout whose data stages have run, e.g. with
data.limit: 300), `dvc repro --force` of the stages that talk to MLflow (train, evaluate, champion) against a
fresh local SQLite store and against the team stack's server (`--stack`, started by `make stack-up`),
alternating, `--runs` times each.

photos: latency percentiles of a served photo model (`mlflow models serve -m models:/argml-photos@champion`,
`--url`, loopback only) under `--clients` concurrent clients for `--seconds`, one real photo per request.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def _spread(values: list[float], unit: str) -> str:
    return (f"median {statistics.median(values):.2f} {unit} (min {min(values):.2f}, max {max(values):.2f}, "
            f"{len(values)} runs)")


def _faces(count: int) -> np.ndarray:
    from pathlib import Path

    from argml.faces import FaceAligner, decode_image

    folder = os.environ.get("ARGML_UTKFACE", "")
    if not Path(folder).is_dir():
        print("ARGML_UTKFACE unset: timing on random images")
        return np.random.default_rng(0).integers(0, 256, (count, 160, 160, 3), dtype=np.uint8)
    aligner = FaceAligner()
    names = sorted(os.listdir(folder))[::97][:count]
    return np.stack([aligner.align_dataset_image(decode_image((Path(folder) / n).read_bytes()).rgb)[0]
                     for n in names])


def bench_facenet(runs: int, batch_size: int = 32) -> None:
    from argml import facenet

    cold, cached = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["ARGML_CACHE"] = cache
            start = time.perf_counter()
            facenet.load_facenet()
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            model = facenet.load_facenet()
            cached.append(time.perf_counter() - start)
    print(f"build + load weights, cold (parse graph_final.pb): {_spread(cold, 's')}")
    print(f"build + load weights, from the cache:              {_spread(cached, 's')}")

    images = _faces(batch_size)
    model.predict_on_batch(images)  # warm-up: tracing
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(4):
            model.predict_on_batch(images)
        rates.append(4 * batch_size / (time.perf_counter() - start))
    print(f"forward, batch {batch_size}, {os.cpu_count()} CPUs: {_spread(rates, 'images/s')}")
    bench_features_litert(model, images, runs)


def bench_finetune(runs: int, blocks: list[str], batch_size: int = 64, steps: int = 4) -> None:
    """Fine-tuning throughput from each start block: train steps of FaceNet from the block on plus argml's
    heads (binned), on random inputs of the cached shape (data loading left out), as train runs them."""
    import keras

    from argml import facenet, features
    from argml.age import smoothed_targets
    from argml.heads import build_heads, compile_model

    backbone = facenet.load_facenet()
    rng = np.random.default_rng(0)
    ages = rng.integers(1, 90, batch_size)
    targets = {"age": np.concatenate([smoothed_targets(ages, "binned", 0.0), ages[:, None]], axis=1),
               "race": np.eye(5)[rng.integers(0, 5, batch_size)], "gender": np.eye(2)[rng.integers(0, 2, batch_size)]}
    for block in blocks:
        _, upper = facenet.split(backbone, block)
        upper_features = facenet.feature_model(upper, features.head_input_layer("pooled"))
        heads = build_heads(upper_features.output.shape[-1], "binned", dropout=0.2)
        block_input = keras.Input(upper.input_shape[1:])
        model = keras.Model(block_input, heads(upper_features(block_input)))
        compile_model(model, 1e-4, {"age": 1.0, "race": 0.1, "gender": 0.1, "backbone": 0.1},
                      {"age": 1.0, "race": 1.0, "gender": 1.0}, age_values=range(9))
        inputs = rng.normal(size=(batch_size, *upper.input_shape[1:])).astype(np.float32)
        model.train_on_batch(inputs, targets)  # warm-up: tracing
        rates = []
        for _ in range(runs):
            start = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(inputs, targets)
            rates.append(steps * batch_size / (time.perf_counter() - start))
        print(f"fine-tune from {block}, batch {batch_size}, {os.cpu_count()} CPUs: {_spread(rates, 'images/s')}")


def bench_features_litert(backbone, images: np.ndarray, runs: int) -> None:
    """What the features stage computes (the input of features.from_block's default, Mixed_7a, and the pooled
    features) with Keras and with a LiteRT fp32 conversion (XNNPACK): images/s and agreement."""
    import keras

    from argml import facenet, litert

    lower, _ = facenet.split(backbone, "Mixed_7a")
    both = keras.Model(backbone.inputs, [lower.output, facenet.feature_model(backbone, "pooled").output])
    with tempfile.TemporaryDirectory() as scratch:
        path = litert.convert(both, os.path.join(scratch, "features.tflite"), "fp32")
        from ai_edge_litert.interpreter import Interpreter

        runner = Interpreter(model_path=str(path), num_threads=os.cpu_count()).get_signature_runner("serving_default")
        [input_name] = runner.get_input_details()
        keras_outputs = sorted((np.asarray(o) for o in both.predict_on_batch(images)), key=lambda a: a.shape[-1])
        lite_outputs = sorted(runner(**{input_name: images.astype(np.float32)}).values(), key=lambda a: a.shape[-1])
        for ours, theirs in zip(lite_outputs, keras_outputs):
            ours, theirs = ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1)
            cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
            print(f"features {ours.shape[1]}-d: LiteRT vs Keras cosine min {cosine.min():.7f}")
        for name, forward in (("Keras", both.predict_on_batch),
                              ("LiteRT fp32", lambda x: runner(**{input_name: x.astype(np.float32)}))):
            forward(images)
            rates = []
            for _ in range(runs):
                start = time.perf_counter()
                for _ in range(4):
                    forward(images)
                rates.append(4 * len(images) / (time.perf_counter() - start))
            print(f"features stage forward ({name}), batch {len(images)}: {_spread(rates, 'images/s')}")


LIVE_CASES = (  # (name, frame size, faces, a CPU-bound process beside)
    ("640x480, 1 face", (640, 480), 1, False),
    ("640x480, 3 faces", (640, 480), 3, False),
    ("1280x720, 12 faces", (1280, 720), 12, False),
    ("1280x720, 12 faces, one core busy", (1280, 720), 12, True),
)


def _live_people(folder, size: tuple[int, int], count: int, frames: int) -> list:
    """`count` real faces in a grid: 1-3 in a row at 640x480, up to 12 in a 4x3 grid at 1280x720."""
    from pathlib import Path

    from argml.synthetic import Person

    names = sorted(os.listdir(folder))
    columns = 3 if count <= 3 else 4
    rows = -(-count // columns)
    width, height = size
    centers = [(int((column + 0.5) * width / columns), int((row + 0.5) * height / rows))
               for row in range(rows) for column in range(columns)][:count]
    if count == 1:
        centers = [(130, 240)]
    return [Person(str(Path(folder) / names[5000 + 997 * i]), center, ((0, frames),))
            for i, center in enumerate(centers)]


def bench_live(runs: int, model: str, backend: str | None = None, frames: int = 150) -> None:
    import argml.inference  # noqa: F401  first: it fixes the import order of torchvision and TensorFlow
    import subprocess
    import sys
    from pathlib import Path

    from argml import live
    from argml.synthetic import make_video

    folder = os.environ.get("ARGML_UTKFACE", "")
    if not Path(folder).is_dir():
        raise SystemExit("bench live needs ARGML_UTKFACE (real faces to put in the video)")
    with tempfile.TemporaryDirectory() as scratch:
        for name, size, count, busy in LIVE_CASES:
            video = Path(scratch) / f"{size[0]}x{size[1]}_{count}.mp4"
            if not video.exists():
                make_video(video, _live_people(folder, size, count, frames), frames, size, fps=30)
            rates, latencies = [], []
            for _ in range(runs):
                burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    summary = live.run(str(video), model=model, headless=True, backend=backend)
                finally:
                    if burner:
                        burner.kill()
                        burner.wait()
                rates.append(summary["fps"])
                latencies += [seconds * 1000 for seconds in summary["classify_latency_per_face"]]
            print(f"live ({summary['backend']}), {name}, {frames} frames: {_spread(rates, 'FPS')}")
            print(f"  classification per face: {_spread(latencies, 'ms')} over all batches")


MLFLOW_STAGES = ("train@binned", "train@exact", "evaluate@binned", "evaluate@exact", "champion")


def bench_tracking(runs: int, repo: str, stack_dir: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from argml import stack

    dvc = Path(sys.executable).with_name("dvc")
    seconds: dict[str, list[float]] = {"sqlite": [], "server": []}
    with tempfile.TemporaryDirectory() as scratch:
        stores = {"sqlite": {"MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db"},
                  "server": stack.client_env(stack.read_state(stack_dir))}
        for _ in range(runs):
            for name, settings in stores.items():
                start = time.perf_counter()
                subprocess.run([str(dvc), "repro", "--force", "--single-item", *MLFLOW_STAGES], cwd=repo,
                               env={**os.environ, **settings}, check=True, capture_output=True)
                seconds[name].append(time.perf_counter() - start)
                print(f"{name}: {seconds[name][-1]:.1f} s")
    for name, values in seconds.items():
        print(f"{' '.join(MLFLOW_STAGES)} with {name}: {_spread(values, 's')}")
    extra = statistics.median(seconds["server"]) - statistics.median(seconds["sqlite"])
    print(f"server vs SQLite: {extra:+.1f} s ({extra / statistics.median(seconds['sqlite']):+.1%}) median")


def bench_photos(url: str, clients: int, seconds: float, images: int = 1) -> None:
    """`clients` threads post `images` real UTKFace photos per request to a served photo model for `seconds`."""
    import base64
    import json
    import threading
    import urllib.request
    from pathlib import Path
    from urllib.parse import urlparse

    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"bench photos loads a server hard: loopback URLs only, got {url}")
    folder = os.environ.get("ARGML_UTKFACE", "")
    if not Path(folder).is_dir():
        raise SystemExit("bench photos needs ARGML_UTKFACE (real photos to send)")
    names = sorted(os.listdir(folder))[::211][:50]
    bodies = [json.dumps({"dataframe_records": [
        {"name": name, "image": base64.b64encode((Path(folder) / name).read_bytes()).decode()}
        for name in names[i:i + images]]}).encode() for i in range(0, len(names) - images + 1, images)]
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    def client(number: int) -> None:
        sent = number
        while time.perf_counter() < deadline:
            request = urllib.request.Request(f"{url.rstrip('/')}/invocations", data=bodies[sent % len(bodies)],
                                             headers={"Content-Type": "application/json"})
            start = time.perf_counter()
            try:
                urllib.request.urlopen(request, timeout=120).read()
                latencies.append(time.perf_counter() - start)
            except OSError as error:
                errors.append(str(error))
            sent += clients

    threads = [threading.Thread(target=client, args=(number,)) for number in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if not latencies:
        raise SystemExit(f"no request succeeded: {errors[:3]}")
    p50, p90, p99 = (float(np.percentile(latencies, q)) * 1000 for q in (50, 90, 99))
    print(f"photos, {clients} clients, {images} photo(s) per request, {elapsed:.0f} s: {len(latencies)} requests "
          f"({len(latencies) * images / elapsed:.1f} photos/s), {len(errors)} errors; latency p50 {p50:.0f} ms, "
          f"p90 {p90:.0f} ms, p99 {p99:.0f} ms, max {max(latencies) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["facenet", "finetune", "live", "tracking", "photos"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--blocks", nargs="+", default=["Mixed_7a", "Repeat_1.block17_9", "Repeat_1.block17_6"],
                        help="finetune: the start blocks to time")
    parser.add_argument("--model", default="models:/argml@champion", help="live: the model to classify with")
    parser.add_argument("--backend", choices=("auto", "keras", "litert"),
                        help="live: the classifier's runtime (default: params' live.backend)")
    parser.add_argument("--repo", default=".", help="tracking: the pipeline checkout to rerun the stages in")
    parser.add_argument("--stack", default=".stack", help="tracking: the team stack's folder")
    parser.add_argument("--url", default="http://127.0.0.1:5002", help="photos: the served photo model (loopback)")
    parser.add_argument("--clients", type=int, default=4, help="photos: concurrent clients")
    parser.add_argument("--seconds", type=float, default=60, help="photos: how long they send")
    args = parser.parse_args()
    if args.what == "facenet":
        bench_facenet(args.runs)
    elif args.what == "finetune":
        bench_finetune(args.runs, args.blocks)
    elif args.what == "live":
        bench_live(args.runs, args.model, args.backend)
    elif args.what == "photos":
        bench_photos(args.url, args.clients, args.seconds)
    else:
        bench_tracking(args.runs, args.repo, args.stack)


if __name__ == "__main__":
    main()
