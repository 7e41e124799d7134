"""Stage features: run FaceNet's frozen layers over every example once and cache what training needs.

Reads TFRECORDS_DIR; writes OUT_DIR (per split: the fine-tuning block's inputs, the heads' input features,
labels; info.json, which records the precision the frozen layers computed in). Params: features.* (from_block,
head_input, weights, batch_size, mirror_train, precision).
"""

import argparse
import sys
import time

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import atomic_dir
from argml.model import features, precision


@stage("features")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tfrecords_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args()
    params = load_params().features

    start = time.perf_counter()
    with atomic_dir(args.out_dir) as staging:
        info = features.cache_all(args.tfrecords_dir, staging, params.from_block, params.head_input,
                                  params.weights, params.batch_size, params.mirror_train,
                                  compute=precision.resolve(params.precision))
    seconds = time.perf_counter() - start
    total = sum(info.examples.values())
    print(f"features: {total} examples cached at {params.from_block} in {info.precision} in {seconds:.0f} s "
          f"({total / seconds:.1f} img/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
