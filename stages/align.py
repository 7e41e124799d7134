"""Stage align: dlib landmarks -> aligned 160x160 faces for every image of the split table.

Reads RAW_DIR and SPLIT_TABLE; writes OUT_DIR (aligned JPEGs, same names), REPORT_JSON (counts) and
FLAGS_CSV (every image that was not a plain aligned detection: fallback, unreadable, empty, grayscale).
Params: align.size, align.padding, align.upsample, align.workers, decode.* (the images' limits).
"""

import argparse
import sys
import time

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import atomic_dir, atomic_path, write_json
from argml.data import faces, utkface


@stage("align")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("raw_dir", "split_table", "out_dir", "report_json", "flags_csv"):
        parser.add_argument(name)
    args = parser.parse_args()
    all_params = load_params()
    params = all_params.align

    names = utkface.load_table(args.split_table)["file"].tolist()
    start = time.perf_counter()
    with atomic_dir(args.out_dir) as staging:
        status = faces.align_files(names, args.raw_dir, staging, params.size, params.padding,
                                   params.upsample, params.workers, all_params.decode.limits())
    seconds = time.perf_counter() - start

    counts = status["status"].value_counts().to_dict()
    report = {"images": len(status), **{k: int(counts.get(k, 0)) for k in ("aligned", "fallback", "empty", "unreadable")},
              "grayscale": int(status["grayscale"].sum())}
    write_json(args.report_json, report)
    with atomic_path(args.flags_csv) as staging:
        status[(status["status"] != "aligned") | status["grayscale"]].to_csv(staging, index=False)
    print(f"align: {report} in {seconds:.0f} s ({len(status) / seconds:.1f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
