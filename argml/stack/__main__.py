"""`python -m argml.stack up|down|status|env|backup|restore`: the team stack (see argml.stack.cli)."""

import sys

from argml.stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
