"""`python -m argml.live [SOURCE] [--model URI|FILE] [--detector PATH|URL] [--headless ...]`: the live demo.

A webcam (default 0), a video file, an image or a folder of images through YOLO face tracking, alignment and
the classifier; each person's answers pooled over time and drawn on the frame (`q` quits). Settings: the
`live` section of params.yaml.
"""

from __future__ import annotations

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

import argparse  # noqa: E402
import sys  # noqa: E402

from argml.core.config import BACKENDS  # noqa: E402
from argml.core.errors import command  # noqa: E402
from argml.live.loop import LiveOptions, run  # noqa: E402
from argml.serving.detect import ENV_DETECTOR  # noqa: E402


def parser(prog: str = "python -m argml.live") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", default="0",
                        help="webcam index (default 0), a video file, an image or a folder of images")
    parser.add_argument("--model", default=inference.DEFAULT_MODEL,
                        help="MLflow models:/ URI (default %(default)s) or a .keras file with model.json beside it")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="classifier runtime (default: params' live.backend, auto = the model's int8 LiteRT "
                             "export where it is within tolerance of Keras)")
    parser.add_argument("--detector", help=f"YOLO face model path or URL (default ${ENV_DETECTOR})")
    parser.add_argument("--detector-sha256", default="", help="expected sha256 of a --detector URL's download")
    parser.add_argument("--headless", action="store_true", help="no window (use with --output/--jsonl)")
    parser.add_argument("--output", help="write the annotated video here (.mp4)")
    parser.add_argument("--jsonl", help="write per-frame predictions here (.jsonl)")
    parser.add_argument("--inline", action="store_true",
                        help="classify in the main loop, on the stream's own clock for files (debugging; repeatable)")
    parser.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = no limit)")
    parser.add_argument("--params", default="params.yaml", help="settings file (its `live` section)")
    return parser


@command("live")
def main(argv: list[str] | None = None, prog: str = "python -m argml.live") -> int:
    args = parser(prog).parse_args(argv)
    summary = run(LiveOptions(**vars(args)))
    print(f"live: {summary['frames']} frames ({summary['unreadable_frames']} unreadable), "
          f"{len(summary['tracks'])} people tracked, {summary['fps']:.1f} FPS, {summary['backend']} classifier")
    if summary["frames"] == 0:
        print(f"live: no frame of {args.source} could be read (a damaged or unsupported file?)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
