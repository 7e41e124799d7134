"""Stage export@MODE: LiteRT exports of MODE's model, measured against it on the test split.

Writes EXPORT_DIR/model.fp32.tflite, model.int8.tflite and model.json, and REPORT (reports/MODE/export.json):
per export its test metrics, its deltas against Keras (overall and the largest in any group), how often its
labels are Keras' labels (Keras' answers: evaluate's PREDICTIONS), whether it is within tolerance, and its size.
No timing: `argml bench litert` measures speed. Logs the exports and the report to the mode's MLflow run
(folder `litert`) and tags the version registered as `MODE` with their sha256. Registers the photo model
(argml.serving.photos: encoded images in, one row per face out; the int8 export where it is within
tolerance) as `<mlflow.model_name>-photos` with alias MODE; the face detector comes from $ARGML_YOLO_FACE.
Params: export.*, live.detector_*, decode.*, mlflow.model_name.
"""

from argml.serving import detect  # first: torchvision before TensorFlow

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

from argml.core.card import ModelCard  # noqa: E402
from argml.core.config import load_params  # noqa: E402
from argml.core.errors import stage  # noqa: E402
from argml.core.files import atomic_path, write_json  # noqa: E402
from argml.core.labels import AgeMode  # noqa: E402
from argml.data import tfrecords  # noqa: E402
from argml.evaluation import exports as measured  # noqa: E402
from argml.serving import convert, exports, photos  # noqa: E402
from argml.serving.litert import LiteClassifier  # noqa: E402
from argml.tracking import registry, runs  # noqa: E402


@stage("export")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "model_dir", "tfrecords_dir", "predictions", "export_dir", "report"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    settings = params.export
    mode = AgeMode.of(args.mode)
    model_dir, export_dir = Path(args.model_dir), Path(args.export_dir)

    card = ModelCard.load(model_dir / "model.json")
    for kind in convert.KINDS:
        convert.export(model_dir / "model.keras", export_dir / convert.export_name(kind), kind)
    with atomic_path(export_dir / "model.json") as staging:
        shutil.copyfile(model_dir / "model.json", staging)
    test = tfrecords.load_dataset(args.tfrecords_dir, "test", mode, settings.batch_size, shuffle=False,
                                  with_meta=True)
    lite = {kind: LiteClassifier(export_dir / convert.export_name(kind), card, settings.threads)
            for kind in convert.KINDS}
    report = measured.compare(pd.read_csv(args.predictions), lite, test, card, settings.accuracy_points,
                              settings.mae_years)
    report["size_mb"] = {"keras": round((model_dir / "model.keras").stat().st_size / 1e6, 1),
                         **{kind: round(classifier.path.stat().st_size / 1e6, 1) for kind, classifier in lite.items()}}
    write_json(args.report, report)

    runs.configure(create=True)
    run_id = registry.run_of(model_dir)
    version = exports.log_exports(run_id, export_dir, args.report, params.mlflow.model_name, mode.name)
    # The photo model serves the int8 export where it is within tolerance, else the Keras model.
    int8 = report["int8"]["within_tolerance"]
    photo_version = photos.log_photo_model(
        run_id, export_dir if int8 else model_dir, convert.export_name("int8") if int8 else "model.keras",
        "litert" if int8 else "keras", detect.resolve_detector(), params.live, params.decode,
        photos.model_name(params.mlflow.model_name), mode.name,
        example_rgb=next(test.take(1).as_numpy_iterator())[0][0])
    for kind in convert.KINDS:
        print(f"export[{mode.name}] {kind}: delta {report[kind]['delta']}, labels as Keras "
              f"{report[kind]['label_agreement']}")
    print(f"export[{mode.name}]: int8 within tolerance: {int8}; tagged {params.mlflow.model_name} v{version}; "
          f"registered {photos.model_name(params.mlflow.model_name)} v{photo_version} @{mode.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
