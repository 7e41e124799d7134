"""Stage export@MODE: LiteRT exports of MODE's model, measured against it on the test split.

Writes EXPORT_DIR/model.fp32.tflite, model.int8.tflite and model.json, and REPORT (reports/MODE/export.json):
per backend (Keras, LiteRT fp32, LiteRT int8) the test metrics, faces/s at batch 1 and 8 on this machine,
and for each export its deltas against Keras (overall and the largest per group), how often its labels
agree with Keras' and whether it is within tolerance. Logs the exports and the report to the mode's MLflow
run (folder `litert`) and tags the version registered as `MODE` with their sha256. Registers the photo
model (argml.photos: encoded images in, one row per face out; the int8 export where it is within tolerance)
as `<mlflow.model_name>-photos` with alias MODE; the face detector comes from $ARGML_YOLO_FACE.
Params: export.*, live.detector_*, mlflow.model_name.
"""

import argparse
import json
import shutil
from pathlib import Path

from argml import detect, litert, photos, tfrecords, tracking  # detect first: torchvision before TensorFlow
from argml.config import load_params
from argml.files import atomic_path, run_as_stage, write_json


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("mode", "model_dir", "tfrecords_dir", "export_dir", "report"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    settings = params.export
    model_dir, export_dir = Path(args.model_dir), Path(args.export_dir)

    for kind in litert.KINDS:
        litert.export(model_dir / "model.keras", export_dir / litert.export_name(kind), kind)
    with atomic_path(export_dir / "model.json") as staging:
        shutil.copyfile(model_dir / "model.json", staging)
    test = tfrecords.load_dataset(args.tfrecords_dir, "test", args.mode, settings.batch_size, shuffle=False,
                                  with_meta=True)
    report = litert.measure(model_dir, export_dir, test, args.mode, (1, 8), settings.threads, settings.timing_runs,
                            settings.accuracy_points, settings.mae_years)
    write_json(args.report, report)

    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    tracking.configure(create=True)
    version = litert.log_exports(run_id, export_dir, args.report, params.mlflow.model_name, args.mode)
    # The photo model serves the int8 export where it is within tolerance, else the Keras model.
    int8 = report["int8"]["within_tolerance"]
    photo_version = photos.log_photo_model(
        run_id, export_dir if int8 else model_dir, litert.export_name("int8") if int8 else "model.keras",
        "litert" if int8 else "keras", detect.resolve_detector(), params.live, photos.model_name(params.mlflow.model_name),
        args.mode, example_rgb=next(test.take(1).as_numpy_iterator())[0][0])
    for name in ("keras", *litert.KINDS):
        entry = report[name]
        print(f"export[{args.mode}] {name}: {entry['faces_per_s_batch8']} faces/s at batch 8, "
              f"delta {entry.get('delta', {})}")
    print(f"export[{args.mode}]: int8 within tolerance: {int8}; tagged {params.mlflow.model_name} v{version}; "
          f"registered {photos.model_name(params.mlflow.model_name)} v{photo_version} @{args.mode}")


if __name__ == "__main__":
    main()
