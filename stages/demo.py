"""Stage demo: the live loop (registered champion, YOLO face tracking, pooling), headless and inline, on a clip
made from test-split faces: several people walking, one leaving and coming back.

Reads RAW_DIR (the images) and SPLIT_CSV; the face detector from $ARGML_YOLO_FACE. Writes VIDEO (the
annotated clip), JSONL (per frame and face: track, box, pooled labels) and SUMMARY_JSON (DVC metrics: tracks,
pool resets, and how often each person's pooled labels matched their true labels). All three are the same on
every run: the clip is classified on its own clock, not the machine's. Params: demo.*, live.*, mlflow.model_name.
"""

from argml.live import demo  # first: it fixes the import order of torchvision and TensorFlow

import argparse  # noqa: E402
import sys  # noqa: E402

from argml.core.config import load_params  # noqa: E402
from argml.core.errors import stage  # noqa: E402
from argml.core.files import write_json  # noqa: E402
from argml.live.loop import LiveOptions  # noqa: E402


@stage("demo")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("raw_dir", "split_csv", "video", "jsonl", "summary_json"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params()
    live = LiveOptions(model=f"models:/{params.mlflow.model_name}@champion")
    summary = demo.run(args.raw_dir, args.split_csv, args.video, args.jsonl, params.demo, live)
    write_json(args.summary_json, summary)
    print(f"demo: {summary['frames']} frames ({summary['backend']}), {summary['people']} people, "
          f"{summary['tracks']} tracks, {summary['pool_resets']} pool resets; pooled labels matched {summary['match']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
