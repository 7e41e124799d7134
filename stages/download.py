"""Stage download: fill OUT_DIR with the UTKFace images.

Source: $ARGML_UTKFACE (a folder, .tar.gz or .zip) when set, else params download.url + download.sha256.
Params: download.url, download.sha256.
"""

import argparse
import sys

from argml.core.config import load_params
from argml.core.errors import stage
from argml.data import download


@stage("download")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir")
    args = parser.parse_args()
    params = load_params().download
    report = download.fetch_dataset(args.out_dir, url=params.url, sha256=params.sha256)
    print(f"download: {report['images']} images from {report['source']} into {args.out_dir}; "
          f"{report['skipped_non_images']} non-image files skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
