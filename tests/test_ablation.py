"""`argml ablation` on the session's pipeline (conftest.pipeline_repo): a row as a real `dvc exp run`, its table;
and docs/pipeline.md's tables as `argml docs` writes them."""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from conftest import DVC, REPO, run

pytestmark = pytest.mark.slow


def workspace(copy) -> dict[str, bytes]:
    paths = [copy / "params.yaml", copy / "dvc.lock", *(p for p in (copy / "reports").rglob("*") if p.is_file())]
    return {str(path.relative_to(copy)): path.read_bytes() for path in paths}


def test_the_defaults_row_becomes_an_experiment_and_a_table_row(pipeline_repo, tmp_path):
    from argml.pipeline import ablation

    copy, env, _ = pipeline_repo
    before = workspace(copy)
    run([sys.executable, "-m", "argml", "ablation", "run", "backbone-0.3"], copy, env)
    assert workspace(copy) == before  # the workspace is put back as it was
    _, status = run([str(DVC), "status"], copy, env)
    assert "up to date" in status, status
    _, listed = run([str(DVC), "exp", "list", "--name-only"], copy, env)
    assert "backbone-0.3" in listed.split()

    out = tmp_path / "ablation.csv"
    run([sys.executable, "-m", "argml", "ablation", "table", "--out", str(out)], copy, env)
    table = pd.read_csv(out)
    validation = json.loads((copy / "reports" / "binned" / "validation.json").read_text())
    [row] = table.to_dict("records")  # the defaults did not change: its figures are the workspace's
    assert (row["row"], row["name"]) == (len(ablation.ROWS), "backbone-0.3")
    assert row["command"] == "dvc exp run -n backbone-0.3 train@binned"
    for column, key in (("gender", "gender.accuracy"), ("race", "race.accuracy"), ("age_bins", "age.bin_accuracy"),
                        ("mae", "age.mae"), ("cs5", "age.cs5")):
        assert row[column] == validation["metrics"][key], column
    assert row["readout"].startswith(validation["readout"]["bins"])
    assert row["precision"] == validation["precision"]["train"]
    markdown = out.with_suffix(".md").read_text()
    assert f"| {len(ablation.ROWS)} | `backbone-0.3`" in markdown and f"{100 * row['gender']:.1f} %" in markdown


def test_the_rows_rebuild_the_readme_ablation_from_todays_params():
    from argml.core.config import load_params
    from argml.pipeline import ablation

    params = load_params(REPO / "params.yaml").train
    assert [row.name for row in ablation.ROWS] == ["baseline", "cosine-schedule", "age-distribution",
                                                   "label-smoothing", "heads-full-rate", "backbone-0.3"]
    # each row undoes the levers of the rows below it: fewer settings from row to row, none for the defaults
    counts = [len(row.settings) for row in ablation.ROWS]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    assert (params.lr_factors.backbone, params.label_smoothing, params.age_sigma) == (0.3, 0.1, 2.0)


def test_the_pipeline_page_is_what_the_committed_files_give():
    """docs/pipeline.md's tables are `argml docs` blocks: the stage table is dvc.yaml's stages, as rendered now."""
    from argml.pipeline import docs

    page = (REPO / "docs" / "pipeline.md").read_text()
    for block in ("stages", "stage-times", "litert", "ablation"):
        assert f"<!-- argml docs: {block} -->" in page, block
    stages = docs.render_block("stages", docs.Reports(REPO)).strip()
    assert stages in page and "| `train@MODE` |" in stages