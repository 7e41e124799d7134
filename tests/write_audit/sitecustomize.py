"""Put on PYTHONPATH by the tests for the pipeline copy's `dvc repro` (conftest.repository_copy): every Python
process of the run records, in $ARGML_WRITE_LOG, each file it opens for writing and each rename, with its own
command line. tests/test_reliability.py reads the log to check that no stage writes an output in place (a
kill would leave it half-written) but only through a staging path that is renamed when complete."""

import json
import os
import sys

_LOG = os.environ.get("ARGML_WRITE_LOG")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

if _LOG:
    _fd = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # before the hook: not recorded

    def _record(kind: str, *paths) -> None:
        line = json.dumps({"kind": kind, "paths": [os.path.abspath(os.fsdecode(p)) for p in paths],
                           "argv": list(sys.argv[:2]), "pid": os.getpid()})
        os.write(_fd, (line + "\n").encode())  # one write per line: lines of concurrent processes stay whole

    def _hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS):
                _record("write", path)
        elif event in ("os.rename", "os.replace"):
            _record("rename", args[0], args[1])

    sys.addaudithook(_hook)
