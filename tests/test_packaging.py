"""The package's metadata installs without deprecation warnings (setuptools reads pyproject.toml as pip would)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

READ = """
import warnings
warnings.simplefilter("always")
from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution
dist = apply_configuration(Distribution(), "pyproject.toml")
print("license", dist.metadata.license_expression or dist.metadata.license)
"""


def test_pyproject_reads_without_deprecation_warnings():
    result = subprocess.run([sys.executable, "-c", READ], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "license MIT" in result.stdout
    assert "Deprecat" not in result.stderr and "license" not in result.stderr.lower(), result.stderr
