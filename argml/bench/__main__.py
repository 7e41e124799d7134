"""`argml bench NAME` (or `python -m argml.bench NAME`): benchmarks, run on this machine.

Each writes reports/bench/NAME.json with the machine it ran on, every run's figure and the spread; none of it
is a pipeline output. `argml bench NAME --help` tells what each one measures.
"""

from __future__ import annotations

import argparse
import sys

from argml.bench import BENCHMARKS, load
from argml.bench.report import BENCH_DIR, save
from argml.core.errors import command


def parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(BENCH_DIR), help="where NAME.json goes (default %(default)s)")
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    for name, summary in BENCHMARKS.items():
        module = load(name)
        sub = subparsers.add_parser(name, help=summary.replace("%", "%%"), description=module.__doc__,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
    return parser


@command("bench")
def main(argv: list[str] | None = None, prog: str = "python -m argml.bench") -> int:
    args = parser(prog).parse_args(argv)
    settings = {key: value for key, value in vars(args).items() if key not in ("benchmark", "out_dir")}
    figures = load(args.benchmark).run(args)
    save(args.benchmark, figures, settings, args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
