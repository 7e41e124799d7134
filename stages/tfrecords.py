"""Stage tfrecords: sharded TFRecords per split (train with its augmented copies) and a manifest.

Reads SPLIT_TABLE, ALIGNED_DIR and AUGMENTED_DIR; writes OUT_DIR (shards + manifest.json).
Params: tfrecords.shard_size.
"""

import argparse
import sys

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import atomic_dir
from argml.data import tfrecords, utkface


@stage("tfrecords")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("split_table", "aligned_dir", "augmented_dir", "out_dir"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params().tfrecords

    examples = tfrecords.examples_table(utkface.load_table(args.split_table), args.aligned_dir, args.augmented_dir)
    with atomic_dir(args.out_dir) as staging:
        manifest = tfrecords.write_all(examples, staging, params.shard_size)
    print("tfrecords: " + ", ".join(f"{split} {info['examples']}" for split, info in manifest["splits"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
