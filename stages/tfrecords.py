"""Stage tfrecords: sharded TFRecords per split (train with its augmented copies) and a manifest.

Reads SPLIT_TABLE, ALIGNED_DIR and AUGMENTED_DIR; writes OUT_DIR (shards + manifest.json).
Params: tfrecords.shard_size.
"""

import argparse

from argml import labels, tfrecords
from argml.config import load_params
from argml.files import atomic_dir, run_as_stage


def main() -> None:
    run_as_stage()
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("split_table", "aligned_dir", "augmented_dir", "out_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params().tfrecords

    examples = tfrecords.examples_table(labels.load_table(args.split_table), args.aligned_dir, args.augmented_dir)
    with atomic_dir(args.out_dir) as staging:
        manifest = tfrecords.write_all(examples, staging, params.shard_size)
    print("tfrecords: " + ", ".join(f"{split} {info['examples']}" for split, info in manifest["splits"].items()))


if __name__ == "__main__":
    main()
