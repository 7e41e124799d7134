"""`python -m argml COMMAND ...`: the same as the `argml` command (argml.cli)."""

import sys

from argml.cli import main

sys.exit(main())
