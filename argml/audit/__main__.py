"""`argml audit PATH... --out DIR` (or `python -m argml.audit`): the make-up of a photo collection.

Every face of every photo (folders, list files, Parquet/CSV manifests of paths or URIs, images) is found by
the YOLO face model, aligned and classified (the int8 LiteRT export where it is within tolerance of Keras);
DIR gets one row per face (faces.parquet), one per photo (photos.parquet) and a report: per task the raw
shares and the shares corrected for the model's errors on its validation split, with bootstrap intervals
(report.json, report.md, report.png), logged as an MLflow run in the experiment `argml-audits`.

Runs in this process by default; `--engine dask --address tcp://HOST:PORT` (or ray, spark) runs the same
shards on a cluster. A rerun with the same DIR skips finished shards and gives the same report. Unreadable,
truncated, oversized (params.yaml `decode`) or missing photos are counted and listed, never fatal.

Labels are UTKFace's appearance-based categories. An audit describes a collection; the per-face rows exist to
check it, not to act on any person (docs/audit.md, "Responsible use").
"""

from __future__ import annotations

import argparse
import sys

from argml.core.config import BACKENDS
from argml.core.errors import BadInput, command

SHOWN_PROBLEMS = 20  # unreadable files printed; report.json and photos.parquet list them


def parser(prog: str) -> argparse.ArgumentParser:
    from argml.audit import quantify, report
    from argml.audit.engines import ENGINES
    from argml.audit.run import DEFAULT_SHARD_SIZE
    from argml.serving.inference import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="folders, list files (.txt/.lst), manifests (.parquet/.csv: a path, uri or file column), "
                             "images or URIs")
    parser.add_argument("--out", required=True, help="the audit's folder (a rerun resumes it)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="models:/ URI (default %(default)s) or a .keras/.tflite file")
    parser.add_argument("--backend", choices=BACKENDS, help="classifier runtime (default: params' live.backend)")
    parser.add_argument("--detector", help="YOLO face model path or URL (default $ARGML_YOLO_FACE)")
    parser.add_argument("--detector-sha256", default="", help="expected sha256 of a --detector URL's download")
    parser.add_argument("--params", default="params.yaml", help="for live.detector_* and decode.* (default %(default)s)")
    parser.add_argument("--engine", choices=ENGINES, default="local", help="where shards run (default %(default)s)")
    parser.add_argument("--address", help="the cluster: tcp://HOST:PORT (dask), HOST:PORT (ray), spark://HOST:PORT")
    parser.add_argument("--threads-per-worker", type=int, default=1,
                        help="runtime threads per shard on a cluster (default %(default)s; local uses every core)")
    parser.add_argument("--shard-size", type=int, default=DEFAULT_SHARD_SIZE, help="photos per shard (default %(default)s)")
    parser.add_argument("--validation", help="the model's validation answers (.npz) when the model has none "
                                             "(see python -m argml.audit.labelled)")
    parser.add_argument("--method", choices=("chosen", *quantify.METHODS), default="chosen",
                        help="correction of every task (default: per task, the one that won the correction table: "
                             + ", ".join(f"{task} {method}" for task, method in report.CHOSEN.items()) + ")")
    parser.add_argument("--rounds", type=int, default=report.ROUNDS, help="bootstrap rounds (default %(default)s)")
    parser.add_argument("--confidence", type=float, default=report.CONFIDENCE, help="interval level (default %(default)s)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log the audit as an MLflow run")
    return parser


@command("audit")
def main(argv: list[str] | None = None, prog: str = "python -m argml.audit") -> int:
    args = parser(prog).parse_args(argv)
    from argml.audit import report
    from argml.audit.run import Options, audit

    if not 0.5 <= args.confidence < 1:
        raise BadInput(f"--confidence must be in [0.5, 1), got {args.confidence}")
    options = Options(paths=args.paths, out=args.out, model=args.model, backend=args.backend, detector=args.detector,
                      detector_sha256=args.detector_sha256, params=args.params, engine=args.engine,
                      address=args.address, threads_per_worker=args.threads_per_worker, shard_size=args.shard_size,
                      validation=args.validation, mlflow=not args.no_mlflow,
                      correction=report.Settings.one_method(args.method, args.rounds, args.confidence))
    summary = audit(options)
    photos = summary["photos"]
    problems = summary["unreadable"]
    for reason in problems[:SHOWN_PROBLEMS]:
        print(f"audit: skipped {reason}", file=sys.stderr)
    if len(problems) > SHOWN_PROBLEMS:
        print(f"audit: ... and {len(problems) - SHOWN_PROBLEMS} more unreadable (photos.parquet lists them all)",
              file=sys.stderr)
    print(f"audit: {photos['inputs']} photos ({photos['with_faces']} with faces, {photos['faces']} faces, "
          f"{photos['without_face']} without a face, {photos['unreadable']} unreadable); {summary['shards_run']} of "
          f"{summary['shards']} shards run now ({summary['model']['backend']} classifier) -> {args.out}"
          + (f"; MLflow run {summary['run_id']}" if summary["run_id"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
