"""Benchmarks, run on this machine: `python -m argml.bench facenet|live|tracking [--runs 5]`.

facenet: time to build the model and load its weights, cold (parsing the frozen graph) and from the cache,
and forward throughput at batch 32 on real aligned UTKFace faces (or random images when ARGML_UTKFACE is
unset). Prints every run and the median with min-max spread.

live: end-to-end FPS of the headless live path (YOLO tracking + asynchronous classification + drawing) on
640x480 videos of real UTKFace faces, with 1 and with 3 faces, and the per-face classification latency.
Needs a trained model (`--model`, default models:/argml@champion) and ARGML_YOLO_FACE.

tracking: the cost of team mode. In `--repo` (a pipeline checkout whose data stages have run, e.g. with
data.limit: 300), `dvc repro --force` of the stages that talk to MLflow (train, evaluate, champion) against a
fresh local SQLite store and against the team stack's server (`--stack`, started by `make stack-up`),
alternating, `--runs` times each.
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


def bench_live(runs: int, model: str, frames: int = 150) -> None:
    import argml.live as live  # first: it imports torchvision before TensorFlow
    from pathlib import Path

    from argml.synthetic import Person, make_video

    folder = os.environ.get("ARGML_UTKFACE", "")
    if not Path(folder).is_dir():
        raise SystemExit("bench live needs ARGML_UTKFACE (real faces to put in the video)")
    names = sorted(os.listdir(folder))
    people = [Person(str(Path(folder) / names[i]), center, ((0, frames),))
              for i, center in zip((5000, 9000, 15000), ((130, 240), (320, 240), (510, 240)))]
    with tempfile.TemporaryDirectory() as scratch:
        for count in (1, 3):
            video = Path(scratch) / f"faces{count}.mp4"
            make_video(video, people[:count], frames, fps=30)
            rates, latencies = [], []
            for _ in range(runs):
                summary = live.run(str(video), model=model, headless=True)
                rates.append(summary["fps"])
                latencies += [seconds * 1000 for seconds in summary["classify_latency_per_face"]]
            print(f"live, 640x480, {count} face(s), {frames} frames: {_spread(rates, 'FPS')}")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["facenet", "live", "tracking"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="models:/argml@champion", help="live: the model to classify with")
    parser.add_argument("--repo", default=".", help="tracking: the pipeline checkout to rerun the stages in")
    parser.add_argument("--stack", default=".stack", help="tracking: the team stack's folder")
    args = parser.parse_args()
    if args.what == "facenet":
        bench_facenet(args.runs)
    elif args.what == "live":
        bench_live(args.runs, args.model)
    else:
        bench_tracking(args.runs, args.repo, args.stack)


if __name__ == "__main__":
    main()
