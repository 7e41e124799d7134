"""`argml COMMAND ...`: one entry point for every argml command, as `dvc`, `mlflow` and `yolo` have.

Each command is a module with `main(argv, prog)`; it is imported only when it runs, so `argml --help` is quick.
`argml COMMAND --help` shows the command's own help. The pipeline itself runs through `dvc repro`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import argml

COMMANDS = {  # name -> (module with main(argv, prog), what it does)
    "live": ("argml.live.__main__", "the live demo: a webcam, video or images through YOLO and the classifier"),
    "predict": ("argml.serving.predict", "batch prediction: images and folders -> one row per face (CSV/JSONL)"),
    "bench": ("argml.bench.__main__", "benchmarks on this machine -> reports/bench/NAME.json"),
    "stack": ("argml.stack.cli", "team mode: PostgreSQL, S3 (SeaweedFS) and the MLflow server on 127.0.0.1"),
    "presets": ("argml.pipeline.presets", "apply a preset (e.g. presets/gpu.yaml) onto params.yaml"),
    "ensemble": ("argml.evaluation.ensemble", "measure an ensemble of trained models on the feature cache"),
    "docs": ("argml.pipeline.docs", "write the docs' generated tables and model cards from the committed reports"),
    "ui": ("argml.tracking.ui", "open an MLflow UI page in headless Chromium, check its text, screenshot it"),
    "ablation": ("argml.pipeline.ablation", "the training ablation as dvc experiments (run) and its table (table)"),
    "audit": ("argml.audit.__main__", "the make-up of a photo collection, corrected for the model's errors"),
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argml", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"argml {argml.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, summary) in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)  # its own parser answers --help
    return parser


def main(argv: list[str] | None = None) -> int:
    args, rest = parser().parse_known_args(sys.argv[1:] if argv is None else argv)
    module, _ = COMMANDS[args.command]
    return importlib.import_module(module).main(rest, prog=f"argml {args.command}")


if __name__ == "__main__":
    sys.exit(main())
