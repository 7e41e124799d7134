"""What every benchmark shares: the spread of repeated timings, real faces to time on, and the report file.

Speed is a fact about a machine, not about the data, so no pipeline stage records it: each benchmark writes
`reports/bench/<name>.json` (outside dvc.lock) with the machine it ran on (CPU model, cores, versions), every
run's figure and the median with min and max. The docs' speed tables are generated from these files.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

import numpy as np

from argml.core.files import atomic_path

BENCH_DIR = Path("reports/bench")
PACKAGES = ("tensorflow-cpu", "keras", "ai-edge-litert", "ultralytics", "opencv-python", "mlflow", "dvc", "numpy")


def spread(values: list[float], digits: int = 2) -> dict:
    """Every run's figure, and their median, min and max."""
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "runs": len(values), "values": [round(v, digits) for v in values]}


def describe(figure: dict, unit: str) -> str:
    return f"median {figure['median']} {unit} (min {figure['min']}, max {figure['max']}, {figure['runs']} runs)"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine() -> dict:
    """The machine a benchmark ran on: CPU, cores, memory, OS, Python and the packages that set the speed."""
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gb = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": memory_gb, "os": platform.platform(),
            "python": platform.python_version(), "git_commit": commit,
            "packages": {name: version for name in PACKAGES if (version := _version(name))}}


def save(name: str, figures: dict, settings: dict, out_dir: str | Path = BENCH_DIR) -> Path:
    """Write `<out_dir>/<name>.json`: the figures, the settings they were measured with, and the machine."""
    path = Path(out_dir) / f"{name}.json"
    document = {"benchmark": name, "date": datetime.date.today().isoformat(), "machine": machine(),
                "settings": settings, "figures": figures}
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(document, indent=2) + "\n")
    print(f"bench {name}: wrote {path}")
    return path


def real_faces(count: int) -> np.ndarray:
    """`count` real UTKFace faces ($ARGML_UTKFACE), aligned as in training; random images when it is unset."""
    from argml.core import images
    from argml.data.faces import FaceAligner

    folder = os.environ.get("ARGML_UTKFACE", "")
    if not Path(folder).is_dir():
        print("ARGML_UTKFACE unset: timing on random images")
        return np.random.default_rng(0).integers(0, 256, (count, 160, 160, 3), dtype=np.uint8)
    aligner = FaceAligner()
    names = sorted(os.listdir(folder))[::97][:count]
    return np.stack([aligner.align_dataset_image(images.read(Path(folder) / name)[:, :, ::-1].copy())[0]
                     for name in names])


def utkface_folder(benchmark: str) -> Path:
    folder = Path(os.environ.get("ARGML_UTKFACE", ""))
    if not folder.is_dir() or not str(folder):
        raise FileNotFoundError(f"bench {benchmark} needs ARGML_UTKFACE (a folder of UTKFace images)")
    return folder
