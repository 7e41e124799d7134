"""Stage augment: class-balancing copies of training images (rotation, flip, noise, noise + flip).

Reads SPLIT_TABLE and ALIGNED_DIR; writes OUT_DIR (new JPEGs and index.csv: file, source, purpose,
adjustment, labels) and REPORT_JSON (counts per purpose, adjustment and race).
Params: augment.* (seed, targets, angle, noise).
"""

import argparse
import sys

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import atomic_dir, write_json
from argml.data import augment, utkface


@stage("augment")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("split_table", "aligned_dir", "out_dir", "report_json"):
        parser.add_argument(name)
    args = parser.parse_args()
    params = load_params().augment

    table = utkface.with_files(utkface.load_table(args.split_table), args.aligned_dir)
    train = table[table["split"] == "train"]
    planned = augment.plan(train, params.race_target, params.exact_age_target, params.seed)
    with atomic_dir(args.out_dir) as staging:
        augment.make_images(planned, args.aligned_dir, staging, params.max_angle, params.noise_sigma,
                            params.jpeg_quality)
        planned.to_csv(staging / "index.csv", index=False)

    report = augment.summary(train, planned)
    write_json(args.report_json, report)
    print(f"augment: {len(planned)} new images {report['per_purpose']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
