"""`python -m argml.stack up|down|status|env`: the team stack (see argml.stack)."""

import sys

from argml.stack.engines import main

if __name__ == "__main__":
    sys.exit(main())
