"""Stage labels: parse file names, drop malformed names and duplicates, sample, split 80/10/10.

Reads RAW_DIR; writes the published split table SPLIT_TABLE (.csv.gz: file, md5, labels, split) and
REPORT_JSON (counts per split and class, malformed names, duplicates).
Params: data.limit, data.seed, data.val_fraction, data.test_fraction.
"""

import argparse
import sys

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import write_json
from argml.data import utkface


@stage("labels")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw_dir")
    parser.add_argument("split_table")
    parser.add_argument("report_json")
    args = parser.parse_args()
    params = load_params().data

    parsed, malformed = utkface.scan(args.raw_dir)
    unique, duplicates = utkface.deduplicate(parsed)
    chosen = utkface.sample(unique, params.limit, params.seed)
    table = utkface.split(chosen, params.val_fraction, params.test_fraction, params.seed)
    utkface.save_table(table, args.split_table)

    report = {"images_seen": len(parsed) + sum(not m["recovered"] for m in malformed),
              "parsed": len(parsed), "after_dedup": len(unique), "limit": params.limit,
              "malformed": malformed, "duplicates": duplicates, **utkface.summary(table)}
    write_json(args.report_json, report)
    sizes = {split: part["images"] for split, part in report["per_split"].items()}
    print(f"labels: {report['images_seen']} images, {len(malformed)} malformed names "
          f"({sum(m['recovered'] for m in malformed)} recovered), {duplicates['removed_total']} removed as duplicates "
          f"-> {len(unique)} unique; split {sizes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
