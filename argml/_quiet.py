"""TensorFlow's native libraries print start-up lines on stderr while they load ("All log messages before
absl::InitializeLog()", "oneDNN custom operations are on", CPU feature notes), before Python or
TF_CPP_MIN_LOG_LEVEL can stop them. The first `import tensorflow` in an argml process is therefore run with
file descriptor 2 captured; afterwards every captured line except those known start-up notes is written back.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

NOISE = re.compile(r"WARNING: All log messages before absl::InitializeLog|oneDNN custom operations are on|"
                   r"cpu_feature_guard|This TensorFlow binary is optimized to use available CPU instructions|"
                   r"To enable the following instructions|Unable to register cu(DNN|FFT|BLAS) factory|"
                   r"computation placer already registered|Could not find cuda drivers")


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader, finder):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        if self.finder in sys.meta_path:  # once: later lookups (find_spec checks, reloads) are left alone
            sys.meta_path.remove(self.finder)
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                        if not NOISE.search(line)]
                sys.stderr.write("".join(kept))


class _QuietFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "tensorflow":  # a find_spec() check (ultralytics does one) may come before the import
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


def install() -> None:
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
