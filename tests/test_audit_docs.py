"""docs/audit.md's generated tables: the correction table from reports/audit/correction.json and the throughput
table from reports/bench/audit.json (a one-line placeholder until that benchmark has run), and the committed
correction table agrees with the correction `argml audit` uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from argml.bench import report as bench_report
from argml.pipeline import audit_tables, docs

REPO = Path(__file__).resolve().parents[1]
METHODS = ("cc", "pcc", "acc", "pacc", "em")
PAGE = "# Audit\n\n<!-- argml docs: audit-correction -->\n<!-- /argml docs -->\n\n" \
       "<!-- argml docs: audit-throughput -->\n<!-- /argml docs -->\n"


def correction_result() -> dict:
    """A small correction table in argml.audit.proof's layout: race is corrected best by acc, the rest by pacc."""
    def figures(own: float, everywhere: float) -> dict:
        return {"mae_points_own": own, "coverage_own": 0.951, "mae_points_all": everywhere, "coverage_all": 0.874}

    summary = {task: {"methods": {method: figures(4.0 + number, 3.0 + number) for number, method in enumerate(METHODS)},
                      "chosen": "pacc"} for task in ("gender", "race", "age")}
    summary["gender"]["methods"]["pacc"] = figures(0.76, 0.92)
    summary["age"]["methods"]["pacc"] = figures(1.84, 2.97)
    summary["race"]["methods"]["acc"] = figures(1.17, 1.5)
    summary["race"]["chosen"] = "acc"
    table = [{"scenario": scenario, "size": size, "task": task, "method": method, "mae_points": 2.5 + number,
              "mae_points_sd": 0.5, "coverage": 0.9}
             for scenario in ("split's own", "70 % Other") for size in (500, 2000) for task in ("gender", "race", "age")
             for number, method in enumerate(METHODS)]
    table[0]["mae_points"] = 14.37  # split's own, 500, gender, cc
    return {"draws": 7, "sizes": [500, 2000], "rounds": 20, "confidence": 0.9, "seed": 3, "pool_faces": 2306,
            "validation_faces": 2305, "scenarios": {"split's own": None, "70 % Other": [[4], 0.7]},
            "summary": summary, "chosen": {task: summary[task]["chosen"] for task in summary}, "table": table,
            "model": "models/binned", "test_source": "test.npz"}


def throughput_figures() -> dict:
    """figures in argml.bench.audit's layout: in-process, and dask with 1 and 2 workers."""
    return {"photos": 384, "shard_size": 32, "backend": "litert", "model": "models:/argml/7", "cpus": 2,
            "in_process": {"photos_per_s": bench_report.spread([3.1, 2.9, 3.3]), "peak_mb": 1234},
            "dask": {"install_mb": 29.3,
                     "workers_1": {"photos_per_s": bench_report.spread([1.4, 1.5, 1.45]), "startup_s": 9.8,
                                   "idle_worker_mb": [96], "peak_worker_mb": [867]},
                     "workers_2": {"photos_per_s": bench_report.spread([2.5, 2.7, 2.6]), "startup_s": 12.4,
                                   "idle_worker_mb": [97, 98], "peak_worker_mb": [870, 1012]}}}


def reports_root(tmp_path: Path, correction: dict, bench: dict | None) -> Path:
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "reports" / "audit").mkdir(parents=True)
    (tmp_path / "reports" / "audit" / "correction.json").write_text(json.dumps(correction))
    if bench is not None:
        bench_report.save("audit", bench, {"photos": 384, "runs": 3, "engines": ["dask"], "workers": [1, 2]},
                          tmp_path / "reports" / "bench")
    return tmp_path


def test_the_correction_table_shows_each_tasks_choice_against_raw_counting():
    text = audit_tables.audit_correction(correction_result())
    assert ("| race | its own skews and the split's | 4.00 (95 %) | 5.00 (95 %) | **1.17 (95 %)** | 7.00 (95 %) "
            "| 8.00 (95 %) |") in text
    assert "| gender | every scenario | 3.00 (87 %) | 4.00 (87 %) | 5.00 (87 %) | 0.92 (87 %) | 7.00 (87 %) |" in text
    assert "**1.84 (95 %)**" in text and "**0.76 (95 %)**" in text
    assert "- **race**: `acc`, 1.17 points against raw counting's 4.00 (2.83 points better)" in text
    assert "- **gender**: `pacc`, 0.76 points against raw counting's 4.00 (3.24 points better)" in text
    assert "higher by 2.83 (`cc`), 3.83 (`pcc`), 5.83 (`pacc`), 6.83 (`em`) points" in text  # race, against 1.17
    assert "| split's own | 500 | gender | 14.4 (90 %) | 3.5 (90 %) |" in text
    assert "| 70 % Other | 2,000 | age |" in text
    assert "7 collections of 500 and 2,000 faces" in text and "2,305 validation faces" in text
    assert "90 % intervals" in text and "seed 3" in text


def test_a_chosen_method_worse_than_raw_counting_is_said_so():
    result = correction_result()
    result["summary"]["age"]["methods"]["pacc"]["mae_points_own"] = 4.5
    assert "- **age**: `pacc`, 4.50 points against raw counting's 4.00 (0.50 points worse)" in \
        audit_tables.audit_correction(result)


def test_both_audit_blocks_fill_a_page_from_the_reports(tmp_path):
    root = reports_root(tmp_path, correction_result(), throughput_figures())
    page = docs.fill(PAGE, docs.Reports(root))
    assert "**1.17 (95 %)**" in page
    assert "| in-process (2 CPUs) | 3.1 (2.9 – 3.3, 3 runs) | – | 1,234 MiB (the process) | – |" in page
    assert "| dask, 1 worker | 1.45 (1.4 – 1.5, 3 runs) | 96 MiB | 867 MiB | 9.8 s |" in page
    assert "| dask, 2 workers | 2.6 (2.5 – 2.7, 3 runs) | 97, 98 MiB | 870, 1,012 MiB | 12.4 s |" in page
    assert "dask adds 29.3 MB of packages" in page and "`litert` classifier of `models:/argml/7`" in page
    assert "`--photos 384 --runs 3 --engines dask --workers 1 2`" in page
    # 10 million photos: 10e6 / 3.1 / 3600 = 896 hours in-process; 2 workers: 1.3 photos/s each, 89 workers a day
    assert "10,000,000 photos take 896 hours in-process" in page
    assert "at 1.30 photos/s per single-CPU dask worker (the 2-worker figure), 2,137 worker-hours, e.g. 89 such " \
           "workers for 24 hours" in page
    assert docs.fill(page, docs.Reports(root)) == page  # filled once, the page is what --check expects


def test_throughput_before_the_benchmark_ran_is_a_one_line_placeholder(tmp_path):
    root = reports_root(tmp_path, correction_result(), None)
    text = docs.render_block("audit-throughput", docs.Reports(root))
    assert text.startswith("Not measured yet: run `argml bench audit ") and "\n" not in text
    assert "**1.17 (95 %)**" in docs.fill(PAGE, docs.Reports(root))


def test_the_committed_correction_table_chose_what_argml_audit_uses_and_it_beats_raw_counting():
    from argml.audit import report

    result = json.loads((REPO / "reports" / "audit" / "correction.json").read_text())
    assert result["chosen"] == report.CHOSEN
    for task, method in result["chosen"].items():
        figures = result["summary"][task]["methods"]
        assert figures[method]["mae_points_own"] < figures["cc"]["mae_points_own"], task
    assert "<!-- argml docs: audit-correction -->" in (REPO / "docs" / "audit.md").read_text()
