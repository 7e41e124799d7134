"""`argml bench live`: end-to-end FPS of the headless live loop (YOLO tracking, asynchronous classification,
drawing) on videos of real UTKFace faces: 640x480 with 1 and with 3 faces, 1280x720 with 12 faces, and the
same again while another process keeps one core busy; and the per-face classification latency. Needs a trained
model (`--model`, default models:/argml@champion; `--backend`, default params' live.backend) and
$ARGML_YOLO_FACE."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from argml.bench.report import describe, spread, utkface_folder
from argml.core.config import BACKENDS

CASES = (  # (name, frame size, faces, a CPU-bound process beside)
    ("640x480, 1 face", (640, 480), 1, False),
    ("640x480, 3 faces", (640, 480), 3, False),
    ("1280x720, 12 faces", (1280, 720), 12, False),
    ("1280x720, 12 faces, one core busy", (1280, 720), 12, True),
)


def add_arguments(parser) -> None:
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="models:/argml@champion", help="the model to classify with")
    parser.add_argument("--backend", choices=BACKENDS, help="the classifier's runtime (default: params' live.backend)")
    parser.add_argument("--frames", type=int, default=150)


def people(folder: Path, size: tuple[int, int], count: int, frames: int) -> list:
    """`count` real faces in a grid: 1-3 in a row at 640x480, up to 12 in a 4x3 grid at 1280x720."""
    from argml.live.synthetic import Person

    names = sorted(os.listdir(folder))
    columns = 3 if count <= 3 else 4
    rows = -(-count // columns)
    width, height = size
    centers = [(int((column + 0.5) * width / columns), int((row + 0.5) * height / rows))
               for row in range(rows) for column in range(columns)][:count]
    if count == 1:
        centers = [(130, 240)]
    return [Person(str(folder / names[5000 + 997 * i]), center, ((0, frames),)) for i, center in enumerate(centers)]


def run(args) -> dict:
    from argml.live import loop  # first: it fixes the import order of torchvision and TensorFlow
    from argml.live.synthetic import make_video

    folder = utkface_folder("live")
    figures = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, size, count, busy in CASES:
            video = Path(scratch) / f"{size[0]}x{size[1]}_{count}.mp4"
            if not video.exists():
                make_video(video, people(folder, size, count, args.frames), args.frames, size, fps=30)
            rates, latencies = [], []
            for _ in range(args.runs):
                burner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
                try:
                    summary = loop.run(loop.LiveOptions(str(video), model=args.model, headless=True,
                                                        backend=args.backend))
                finally:
                    if burner:
                        burner.kill()
                        burner.wait()
                rates.append(summary["fps"])
                latencies += [seconds * 1000 for seconds in summary["classify_latency_per_face"]]
            figures[name] = {"backend": summary["backend"], "fps": spread(rates),
                             "classify_ms_per_face": spread(latencies)}
            print(f"live ({summary['backend']}), {name}, {args.frames} frames: {describe(figures[name]['fps'], 'FPS')}; "
                  f"classification per face {describe(figures[name]['classify_ms_per_face'], 'ms')}")
    return figures
