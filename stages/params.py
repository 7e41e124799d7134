"""Stage params: check all of PARAMS_YAML before any other stage runs.

Every stage depends on CHECKED, so a typo, an unknown section or key, a wrong type or an out-of-range value
stops `dvc repro` here, before DVC removes any stage's outputs. CHECKED's content never changes, so a valid
edit reruns only the stages whose own params changed.
"""

import argparse
import sys

from argml.core.config import ParamsError
from argml.core.errors import stage
from argml.core.files import atomic_path
from argml.pipeline.params import check_params


@stage("params")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("params_yaml")
    parser.add_argument("checked")
    args = parser.parse_args()
    try:
        check_params(args.params_yaml)
    except (ValueError, FileNotFoundError) as error:
        raise ParamsError(f"{error}; fix {args.params_yaml}: no stage ran and no output was removed") from error
    with atomic_path(args.checked) as staging:
        staging.write_text("params.yaml passed argml's checks\n")
    print(f"params: {args.params_yaml} is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
