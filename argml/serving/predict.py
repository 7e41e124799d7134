"""`python -m argml.predict PATH... --out preds.csv|preds.jsonl [--model URI|FILE] [--aligned]`: batch prediction.

Images and folders (searched recursively) -> one row per face found: file, face index, box, detector
confidence, and per task the label and its probability, plus the age bin and years under the model's
read-out. Faces are found by the YOLO face model and aligned as in training; with `--aligned`, each image
already is one face aligned as in training (e.g. the pipeline's data/aligned), classified as it is. Unreadable
files, images over the `decode` limits of params.yaml (argml.core.images), and with --aligned images of another
size, are listed with the reason and counted, not fatal.
"""

from __future__ import annotations

from argml.serving import inference  # first: it fixes the import order of torchvision and TensorFlow

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from argml.core import images  # noqa: E402
from argml.core.config import BACKENDS  # noqa: E402
from argml.core.errors import BadInput, NotFound, command  # noqa: E402
from argml.core.files import IMAGE_SUFFIXES, atomic_path, check_writable  # noqa: E402
from argml.serving import detect  # noqa: E402

COLUMNS = ["file", *inference.BOX_COLUMNS]


def image_paths(paths: list[str]) -> list[Path]:
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise NotFound(f"{path} does not exist")
    return found


def _read(path: Path, problems: dict[str, str], limits: images.Limits):
    """The image's pixels, or None with the reason kept in `problems` (the file goes on the unreadable list)."""
    try:
        return images.read(path, limits)
    except images.ImageError as error:
        problems[str(path)] = str(error)
        return None


def predict_files(files: list[Path], classifier: inference.FaceClassifier, face_detector,
                  limits: images.Limits = images.Limits()) -> tuple[pd.DataFrame, dict[str, str]]:
    tables, unreadable = [], {}
    for path in tqdm(files, desc="predict", unit="img"):
        image = _read(path, unreadable, limits)
        if image is None:
            continue
        faces = inference.predict_image(image, face_detector, classifier)
        if len(faces):
            tables.append(faces.assign(file=str(path)))
    if not tables:
        return pd.DataFrame(columns=COLUMNS), unreadable
    table = pd.concat(tables, ignore_index=True)
    return table[COLUMNS + [column for column in table.columns if column not in COLUMNS]], unreadable


def predict_aligned(files: list[Path], classifier: inference.FaceClassifier, batch_size: int = 32,
                    limits: images.Limits = images.Limits()) -> tuple[pd.DataFrame, dict[str, str]]:
    """One row per image that is an aligned face of the model's input size; the others are returned, each
    with the reason."""
    import cv2
    import numpy as np

    size, rejected, tables = classifier.classifier.input_size, {}, []
    faces, names = [], []

    def flush():
        if faces:
            tables.append(classifier.classifier.predict(np.stack(faces)).assign(file=names.copy()))
            faces.clear()
            names.clear()

    for path in tqdm(files, desc="predict", unit="img"):
        image = _read(path, rejected, limits)
        if image is None:
            continue
        if image.shape[:2] != (size, size):
            rejected[str(path)] = f"{path}: {image.shape[1]}x{image.shape[0]}, not an aligned face of {size}x{size}"
            continue
        faces.append(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        names.append(str(path))
        if len(faces) == batch_size:
            flush()
    flush()
    if not tables:
        return pd.DataFrame(columns=["file"]), rejected
    table = pd.concat(tables, ignore_index=True)
    return table[["file"] + [column for column in table.columns if column != "file"]], rejected


def save(table: pd.DataFrame, out: str | Path) -> None:
    out = Path(out)
    with atomic_path(out) as staging:
        if out.suffix == ".jsonl":
            table.to_json(staging, orient="records", lines=True)
        elif out.suffix == ".csv":
            table.to_csv(staging, index=False)
        else:
            raise BadInput(f"--out must end in .csv or .jsonl, got {out.name!r}")


def run(paths: list[str], out: str, model: str = inference.DEFAULT_MODEL, detector: str | None = None,
        params: str = "params.yaml", detector_sha256: str = "", backend: str | None = None,
        aligned: bool = False) -> dict:
    check_writable(out, (".csv", ".jsonl"), "--out")
    settings, limits = inference.settings(params), inference.decode_limits(params)
    face_detector = None if aligned else inference.open_detector(settings, detector, detector_sha256)
    files = image_paths(paths)
    backend = inference.choose_backend(model, backend or settings.backend)
    classifier = inference.FaceClassifier(model, backend)
    if aligned:
        table, unreadable = predict_aligned(files, classifier, limits=limits)
    else:
        table, unreadable = predict_files(files, classifier, face_detector, limits)
    save(table, out)
    return {"images": len(files), "faces": len(table), "unreadable": list(unreadable), "problems": unreadable,
            "backend": backend}


def parser(prog: str = "python -m argml.predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="images and folders")
    parser.add_argument("--out", required=True, help="preds.csv or preds.jsonl")
    parser.add_argument("--model", default=inference.DEFAULT_MODEL, help="models:/ URI (default %(default)s) or a .keras file")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="classifier runtime (default: params' live.backend, auto = the model's int8 LiteRT "
                             "export where it is within tolerance of Keras)")
    parser.add_argument("--detector", help=f"YOLO face model path or URL (default ${detect.ENV_DETECTOR})")
    parser.add_argument("--detector-sha256", default="", help="expected sha256 of a --detector URL's download")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--aligned", action="store_true",
                        help="each image is one face already aligned as in training (no detection)")
    return parser


@command("predict")
def main(argv: list[str] | None = None, prog: str = "python -m argml.predict") -> int:
    args = parser(prog).parse_args(argv)
    summary = run(args.paths, args.out, args.model, args.detector, args.params, args.detector_sha256, args.backend,
                  args.aligned)
    for reason in summary["problems"].values():
        print(f"predict: skipped {reason}", file=sys.stderr)
    print(f"predict: {summary['faces']} faces in {summary['images']} images "
          f"({len(summary['unreadable'])} unreadable, {summary['backend']} classifier) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
