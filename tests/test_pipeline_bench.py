"""`argml bench pipeline` and `argml bench litert`: real runs, their JSON, and the docs tables made from it."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import REPO, run

pytestmark = pytest.mark.slow


def argml_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_bench_pipeline_times_each_stage_of_a_fresh_clone(utkface_dir, tmp_path):
    out, clones = tmp_path / "bench", tmp_path / "clones"
    run([sys.executable, "-m", "argml", "bench", "--out-dir", str(out), "pipeline", "--repo", str(REPO),
         "--command", "dvc repro labels", "-S", "data.limit=150", "--workdir", str(clones)], tmp_path, argml_env())
    document = json.loads((out / "pipeline.json").read_text())
    assert document["machine"]["cpu"] and document["machine"]["cores"] >= 1
    [result] = document["figures"]["runs"]
    assert result["exit_code"] == 0 and result["params"] == ["data.limit=150"]
    assert list(result["stage_s"]) == ["params", "download", "labels"]
    assert all(seconds > 0 for seconds in result["stage_s"].values())
    assert result["stage_sum_s"] == pytest.approx(sum(result["stage_s"].values()), abs=0.2)
    assert result["stage_sum_s"] <= result["total_s"] and result["cpu_s"] > 0
    # 150 faces instead of the committed full-data reports: exactly what the labels stage writes changed
    assert sorted(line[3:] for line in result["git_status"]) == ["dvc.lock", "reports/data.json",
                                                                 "reports/split.csv.gz"]
    assert len(result["dvc_lock_sha256"]) == 64 and result["test_metrics"] == {}
    assert not clones.exists()  # the clones hold the pipeline's data: removed unless --keep

    from argml.pipeline import pipeline_page

    table = pipeline_page.stage_times_table(out / "pipeline.json")
    assert "| labels |" in table and "| **sum of stages** |" in table and result["commit"][:7] in table

    # --merge: runs of earlier files of this machine side by side, nothing run; another machine's file refused
    merged = tmp_path / "merged"
    run([sys.executable, "-m", "argml", "bench", "--out-dir", str(merged), "pipeline", "--merge",
         str(out / "pipeline.json"), str(out / "pipeline.json")], tmp_path, argml_env())
    figures = json.loads((merged / "pipeline.json").read_text())["figures"]
    assert figures["runs"] == [result, result] and figures["comparison"]["stage_sum_ratio"] == [1.0, 1.0]
    assert figures["comparison"]["same_dvc_lock"] and [source["runs"] for source in figures["merged_from"]] == [1, 1]
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({**document, "machine": {**document["machine"], "cores": 4096}}))
    refused, output = run([sys.executable, "-m", "argml", "bench", "pipeline", "--merge", str(elsewhere)], tmp_path,
                          argml_env(), check=False)
    assert refused.returncode == 2 and "not on this machine" in output, output


def test_bench_litert_times_keras_and_both_exports(pipeline_repo, tmp_path):
    copy, env, _ = pipeline_repo
    run([sys.executable, "-m", "argml", "bench", "--out-dir", str(tmp_path), "litert", "--mode", "binned",
         "--model-dir", str(copy / "data" / "models" / "binned"), "--export-dir", str(copy / "data" / "litert" / "binned"),
         "--runs", "2", "--seconds", "0.3"], copy, env)
    document = json.loads((tmp_path / "litert.json").read_text())
    figures = document["figures"]
    assert document["settings"]["runs"] == 2 and figures["mode"] == "binned" and figures["threads"] >= 1
    for name in ("keras", "fp32", "int8"):
        for size in (1, 8):
            rates = figures["faces_per_s"][name][f"batch_{size}"]
            assert rates["runs"] == len(rates["values"]) == 2 and rates["min"] > 0, (name, size, rates)
    assert figures["size_mb"]["int8"] < 0.5 * figures["size_mb"]["keras"]

    from argml.pipeline import pipeline_page

    assert "| int8 |" in pipeline_page.litert_table(tmp_path / "litert.json")
