"""`argml bench pipeline`: the whole pipeline's time, stage by stage, from a fresh clone of a commit.

For each `--commit` (default HEAD; give two to compare them side by side, or one twice to check that two clones
give the same outputs) it clones the repository into a scratch folder, optionally sets params (`-S key=value`,
committed in the clone), runs `--command` (default `dvc repro`) there with a fresh argml cache and MLflow store,
and times every stage from DVC's own `Running stage 'NAME'` lines, so it works on any commit of argml, including
ones older than this benchmark. Per run it records each stage's seconds, their sum, the total, the CPU seconds
of all processes, the load average before and after (other work on the machine slows the stages), the stages
DVC skipped, `git status` after the run (a deterministic pipeline leaves it clean), dvc.lock's sha256 and the
headline test metrics. Full data and defaults: 20-50 minutes per run on 2 CPUs. Needs $ARGML_UTKFACE (and
$ARGML_YOLO_FACE for the export and demo stages). `--merge` puts runs of earlier files side by side instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from argml.core.errors import BadInput

STARTED = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' (?:didn't change|is cached)")
HEADLINE = {"gender": ("gender", "accuracy"), "race": ("race", "accuracy"), "age_bins": ("age", "bin_accuracy"),
            "age_mae": ("age", "mae"), "age_cs5": ("age", "cs5")}
IDENTITY = {"GIT_AUTHOR_NAME": "argml bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
            "GIT_COMMITTER_NAME": "argml bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}


def add_arguments(parser) -> None:
    parser.add_argument("--commit", action="append", dest="commits", metavar="REV",
                        help="a commit to run (repeat to compare; default HEAD)")
    parser.add_argument("--repo", default=".", help="the repository to clone (default: this one)")
    parser.add_argument("--command", default="dvc repro",
                        help="what to run in each clone (default %(default)r; e.g. 'dvc repro --force' or 'make')")
    parser.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                        help="set a params.yaml value in each clone first, e.g. -S data.limit=150")
    parser.add_argument("--workdir", help="where the clones go (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep the clones (they hold the pipeline's data)")
    parser.add_argument("--merge", nargs="+", metavar="FILE",
                        help="run nothing: put the runs of earlier `bench pipeline` files of this machine side by "
                             "side (e.g. two commits run one after the other with --out-dir), the first run first")


def stage_times(lines: list[tuple[float, str]], end: float) -> tuple[dict[str, float], list[str]]:
    """({stage: seconds}, skipped stages) from a run's (time, line) pairs: a stage lasts from its `Running
    stage` line to the next one (or `end`), so DVC's hashing and lock update count with the stage."""
    starts = [(moment, match.group(1)) for moment, line in lines if (match := STARTED.search(line))]
    times = {name: round(following - moment, 1)
             for (moment, name), following in zip(starts, [moment for moment, _ in starts[1:]] + [end])}
    skipped = [match.group(1) for _, line in lines if (match := SKIPPED.search(line))]
    return times, skipped


def set_params(params_file: Path, assignments: list[str]) -> None:
    """Set `section.key=value` entries (values parsed as YAML) in params.yaml; comments are not kept."""
    document = yaml.safe_load(params_file.read_text())
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise ValueError(f"-S {assignment!r}: write KEY=VALUE, e.g. data.limit=150")
        *sections, last = key.split(".")
        node = document
        for section in sections:
            node = node.setdefault(section, {})
        node[last] = yaml.safe_load(value)
    params_file.write_text(yaml.safe_dump(document, sort_keys=False))


def clone(repo: str, commit: str, target: Path) -> str:
    """A fresh clone of `repo` at `commit` in `target`; -> the commit's full hash."""
    full = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", f"{commit}^{{commit}}"], capture_output=True,
                          text=True)
    if full.returncode != 0:
        raise ValueError(f"--commit {commit}: not a commit of {repo}")
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(Path(repo).resolve()), str(target)], check=True)
    subprocess.run(["git", "-C", str(target), "checkout", "-q", full.stdout.strip()], check=True)
    return full.stdout.strip()


def environment(folder: Path) -> dict[str, str]:
    """The run's environment: argml imported from the clone, a fresh cache and MLflow store inside it, and this
    Python's tools (dvc) first on PATH."""
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "PYTHONPATH")}
    env.update(IDENTITY)
    env.update({"PYTHONPATH": str(folder), "ARGML_CACHE": str(folder / ".cache"),
                "YOLO_CONFIG_DIR": str(folder / ".cache" / "ultralytics"), "YOLO_OFFLINE": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "2",
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"})
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_run(command: list[str], folder: Path, env: dict[str, str], log_path: Path) -> dict:
    """Run `command` in `folder`, time-stamping every output line (also written to `log_path`)."""
    lines: list[tuple[float, str]] = []
    load_before, cpu_before = os.getloadavg()[0], _children_cpu()
    start = time.monotonic()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        for line in process.stdout:
            moment = time.monotonic() - start
            lines.append((moment, line.rstrip("\n")))
            log.write(f"{moment:9.1f} {line}")
            log.flush()
        returncode = process.wait()
    total = time.monotonic() - start
    stages, skipped = stage_times(lines, total)
    return {"exit_code": returncode, "total_s": round(total, 1), "stage_s": stages,
            "stage_sum_s": round(sum(stages.values()), 1), "skipped": skipped,
            "cpu_s": round(_children_cpu() - cpu_before, 1),
            "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
            "tail": [line for _, line in lines[-15:]] if returncode else []}


def outcome(folder: Path, stages_run: dict[str, float]) -> dict:
    """What the run left: `git status` (changed files), dvc.lock's sha256 and the headline test metrics of each
    mode whose evaluate stage ran (the committed reports of a mode it did not evaluate are not this run's)."""
    status = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True,
                            check=True).stdout.splitlines()
    lock = folder / "dvc.lock"
    metrics = {}
    for path in sorted(folder.glob("reports/*/metrics.json")):
        if f"evaluate@{path.parent.name}" not in stages_run:
            continue
        document = json.loads(path.read_text())
        metrics[path.parent.name] = {name: document.get(task, {}).get(key) for name, (task, key) in HEADLINE.items()}
    return {"git_status": status, "dvc_lock_sha256": hashlib.sha256(lock.read_bytes()).hexdigest()
            if lock.exists() else None, "test_metrics": metrics}


def run_commit(repo: str, commit: str, folder: Path, command: list[str], assignments: list[str]) -> dict:
    full = clone(repo, commit, folder)
    env = environment(folder)
    if assignments:
        set_params(folder / "params.yaml", assignments)
        subprocess.run(["git", "commit", "-q", "-am", "bench: params"], cwd=folder, env=env, check=True)
    print(f"bench pipeline: {commit} ({full[:10]}) in {folder}: {shlex.join(command)}", flush=True)
    timed = timed_run(command, folder, env, folder.parent / f"{folder.name}.log")
    result = {"commit": full, "asked": commit, "command": shlex.join(command), "params": assignments, **timed,
              **outcome(folder, timed["stage_s"])}
    print(f"bench pipeline: {full[:10]}: exit {result['exit_code']}, stages {result['stage_sum_s']} s, total "
          f"{result['total_s']} s; {len(result['git_status'])} changed files", flush=True)
    return result


def compare(runs: list[dict]) -> dict:
    """Each run's stage sum and total against the first run's; whether the runs left equal dvc.lock files."""
    first = runs[0]
    return {"stage_sum_ratio": [round(run["stage_sum_s"] / first["stage_sum_s"], 3) if first["stage_sum_s"] else None
                                for run in runs],
            "total_ratio": [round(run["total_s"] / first["total_s"], 3) if first["total_s"] else None for run in runs],
            "same_dvc_lock": len({run["dvc_lock_sha256"] for run in runs}) == 1}


def print_comparison(comparison: dict) -> None:
    print(f"stage sums against the first run: {comparison['stage_sum_ratio']}; same dvc.lock: "
          f"{comparison['same_dvc_lock']}")


def merge(paths: list[str]) -> dict:
    """The runs of earlier `bench pipeline` files, in order, compared as one run would compare them. Every file
    must come from this machine (CPU model, cores, memory): stage times of other machines do not compare."""
    from argml.bench.report import machine

    here = machine()
    runs, sources = [], []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
        except json.JSONDecodeError as error:
            raise BadInput(f"--merge {path}: not JSON ({error})") from error
        if not isinstance(document, dict) or document.get("benchmark") != "pipeline":
            raise BadInput(f"--merge {path}: not a `bench pipeline` file")
        ran_on, found = document.get("machine") or {}, document.get("figures", {}).get("runs")
        if not isinstance(found, list):
            raise BadInput(f"--merge {path}: it holds no runs")
        if any(ran_on.get(key) != here[key] for key in ("cpu", "cores", "memory_gb")):
            raise BadInput(f"--merge {path}: measured on {ran_on.get('cpu')} ({ran_on.get('cores')} cores, "
                           f"{ran_on.get('memory_gb')} GB), not on this machine")
        runs += found
        sources.append({"file": str(path), "date": document.get("date"), "runs": len(found)})
    return {"runs": runs, "comparison": compare(runs), "merged_from": sources}


def run(args) -> dict:
    if args.merge:
        if args.commits:
            raise BadInput("--merge runs nothing: give it without --commit")
        figures = merge(args.merge)
        print_comparison(figures["comparison"])
        return figures
    if not os.environ.get("ARGML_UTKFACE"):
        print("bench pipeline: ARGML_UTKFACE is unset: the download stage will use params' download.url", flush=True)
    command = shlex.split(args.command)
    commits = args.commits or ["HEAD"]
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="argml-bench-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runs = []
    try:
        for index, commit in enumerate(commits):
            folder = workdir / f"run{index + 1}"
            if folder.exists():
                raise FileExistsError(f"{folder} exists: give an empty --workdir")
            runs.append(run_commit(args.repo, commit, folder, command, args.set_param))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    figures = {"runs": runs, "comparison": compare(runs)}
    for entry in runs:
        print(f"{entry['commit'][:10]}: " + ", ".join(f"{name} {seconds:g} s" for name, seconds in
                                                      entry["stage_s"].items()))
    if len(runs) > 1:
        print_comparison(figures["comparison"])
    return figures

