"""Stage demo: the live path (registered champion, YOLO face tracking, pooling), headless, on a clip made from
test-split faces: several people walking, one leaving and coming back.

Reads RAW_DIR (the images) and SPLIT_CSV; the face detector from $ARGML_YOLO_FACE. Writes VIDEO (the
annotated clip), JSONL (per frame and face: track, box, pooled labels) and SUMMARY_JSON (DVC metrics: FPS,
tracks, pool resets, and how often each person's pooled labels matched their true labels).
Params: demo.*, live.*, mlflow.model_name.
"""

import argparse

from argml import demo
from argml.config import load_params
from argml.files import run_as_stage, write_json


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("raw_dir", "split_csv", "video", "jsonl", "summary_json"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    settings = params.demo
    model = f"models:/{params.mlflow.model_name}@champion"
    summary = demo.run(args.raw_dir, args.split_csv, args.video, args.jsonl, model, settings.people,
                       settings.frames, settings.fps, settings.seed)
    write_json(args.summary_json, summary)
    print(f"demo: {summary['frames']} frames at {summary['fps']} FPS ({summary['backend']}), {summary['people']} "
          f"people, {summary['tracks']} tracks, {summary['pool_resets']} pool resets; pooled labels matched "
          f"{summary['match']}")


if __name__ == "__main__":
    main()
