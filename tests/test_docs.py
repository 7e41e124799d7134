"""The docs: their generated parts equal the committed reports (`argml docs --check`), the generator follows a
changed report, the model cards say what they must, the site builds strictly, and the registered model carries
its card."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from argml.bench import report as bench_report
from argml.core.config import load_params
from argml.core.labels import AGE_MODES
from argml.evaluation import metrics, model_card
from argml.pipeline import docs, report_tables

REPO = Path(__file__).resolve().parents[1]
MKDOCS = Path(sys.executable).parent / "mkdocs"


def repository_docs_copy(target: Path) -> Path:
    """What `argml docs` reads and writes, copied: README.md, docs/, mkdocs.yml, params.yaml, dvc.yaml and
    reports/."""
    for name in ("README.md", "mkdocs.yml", "params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, target / name)
    shutil.copytree(REPO / "docs", target / "docs")
    shutil.copytree(REPO / "reports", target / "reports", ignore=shutil.ignore_patterns("tensorboard"))
    return target


def test_docs_agree_with_the_committed_reports():
    """What a user runs: `argml docs --check` exits 0 on the committed tree."""
    result = subprocess.run([sys.executable, "-m", "argml.cli", "docs", "--check"], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"the docs disagree with reports/; run `argml docs`:\n{result.stderr}"


def test_a_changed_report_makes_the_docs_stale_until_argml_docs_runs(tmp_path):
    root = repository_docs_copy(tmp_path)
    path = root / "reports" / "binned" / "metrics.json"
    document = json.loads(path.read_text())
    document["race"]["accuracy"] = 0.1234
    path.write_text(json.dumps(document))

    stale = {str(p.relative_to(root)) for p in docs.stale(docs.Reports(root))}
    assert {"README.md", "docs/results.md", "docs/model-card-binned.md"} <= stale
    assert "docs/model-card-exact.md" not in stale

    assert docs.main(["--root", str(root)]) == 0
    assert docs.stale(docs.Reports(root)) == []
    assert docs.main(["--root", str(root), "--check"]) == 0
    assert f"| `binned` | {100 * document['gender']['accuracy']:.1f} % [" in (root / "README.md").read_text()
    assert "| 12.3 % [" in (root / "README.md").read_text()  # race, binned


def test_check_fails_on_a_hand_edited_table(tmp_path, capsys):
    root = repository_docs_copy(tmp_path)
    readme = root / "README.md"
    gender = json.loads((root / "reports" / "exact" / "metrics.json").read_text())["gender"]["accuracy"]
    row = f"| `exact` | {100 * gender:.1f} %"
    assert row in readme.read_text()
    readme.write_text(readme.read_text().replace(row, "| `exact` | 99.9 %", 1))
    assert docs.main(["--root", str(root), "--check"]) == 1
    assert "README.md disagrees with the reports" in capsys.readouterr().err


@pytest.mark.parametrize("mode", AGE_MODES)
def test_results_row_is_metrics_json_with_an_interval_around_it(mode):
    """The README's row of each mode, read back: every figure is metrics.json's, inside its own interval."""
    document = json.loads((REPO / "reports" / mode / "metrics.json").read_text())
    row = next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(f"| `{mode}` |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert len(cells) == len(model_card.HEADLINE)
    for cell, (metric, _, _) in zip(cells, model_card.HEADLINE):
        task, name = metric.split(".")
        value = document[task][name]
        figure, low, high = (float(x) for x in cell.replace("%", "").replace("[", "").replace("]", "")
                             .replace(",", " ").split())
        scale = 1 if metric == "age.mae" else 100
        assert figure == round(scale * value, 2 if metric == "age.mae" else 1)
        assert low <= figure <= high


@pytest.mark.parametrize("mode", AGE_MODES)
def test_predictions_give_metrics_json(mode):
    """The intervals are bootstrapped over predictions.csv: the very faces whose metrics metrics.json holds."""
    rows = pd.read_csv(REPO / "reports" / mode / "predictions.csv")
    document = json.loads((REPO / "reports" / mode / "metrics.json").read_text())
    for metric, value in metrics.summary_metrics(rows).items():
        task, name = metric.split(".")
        assert round(value, 4) == document[task][name], metric


def test_overall_interval_is_the_binomial_spread():
    """For an accuracy, the bootstrap interval's half-width is about 1.96 standard errors of a binomial share."""
    rows = pd.read_csv(REPO / "reports" / "binned" / "predictions.csv")
    intervals = model_card.bootstrap_intervals(rows, 2000, 0.95)
    for metric in ("gender.accuracy", "race.accuracy", "age.bin_accuracy"):
        task = metric.split(".")[0]
        truth, guess = ("age_bin_true", "age_bin_pred") if metric == "age.bin_accuracy" else (
            f"{task}_true", f"{task}_pred")
        share = float((rows[truth] == rows[guess]).mean())
        half = 1.96 * math.sqrt(share * (1 - share) / len(rows))
        low, high = intervals[metric]
        assert abs((high - low) / 2 - half) < 0.003, metric
        assert low < share < high


def test_model_card_says_what_it_must():
    params = load_params(REPO / "params.yaml")
    card, summary = model_card.from_reports(REPO / "reports" / "binned", "binned", params.evaluate, "argml")
    for needed in ("## Intended use", "## Must not be used for", "non-commercial research purposes only",
                   "## Known failure groups", "## Per group", "hiring", "surveillance", "bootstrap interval",
                   "23,056 unique faces"):
        assert needed in card, needed
    assert len(summary) < 5000  # MLflow's limit for a version's description
    assert (REPO / "docs" / "model-card-binned.md").read_text() == card


def test_failure_groups_are_those_whose_interval_lies_below():
    """Recomputed from per_group.csv and metrics.json without the card's code."""
    groups = pd.read_csv(REPO / "reports" / "binned" / "per_group.csv")
    document = json.loads((REPO / "reports" / "binned" / "metrics.json").read_text())
    overall = document["race"]["accuracy"]
    expected = set(groups[(groups["metric"] == "race.accuracy") & (groups["grouping"] != "race_x_gender")
                          & (groups["ci_high"] < overall)]["group"])
    params = load_params(REPO / "params.yaml")
    found = model_card.Evaluation.load(REPO / "reports" / "binned", "binned", params.evaluate).failure_groups()
    assert {f["group"] for f in found if f["metric"] == "race.accuracy"} == expected
    assert "Other" in expected  # 47.5 % [38.6, 55.1] against 87.3 % overall in the committed reports


def test_benchmarks_render_with_machine_settings_and_every_run(tmp_path):
    """Any benchmark file, nested figures included, shows its machine, settings, median, range and runs."""
    figures = {"640x480, 3 faces": {"backend": "litert", "fps": bench_report.spread([35.2, 24.2, 35.8])},
               "cold_s": bench_report.spread([1.04, 0.98]), "cosine_min": 0.9999999}
    bench_report.save("example", figures, {"runs": 3, "frames": 150}, tmp_path / "bench")
    report = json.loads((tmp_path / "bench" / "example.json").read_text())
    text = report_tables.benchmarks([report], {"example": "what it measures"})
    assert "### `argml bench example`" in text and "what it measures" in text
    assert report["machine"]["cpu"] in text and f"{report['machine']['cores']} cores" in text
    assert "`--runs 3 --frames 150`" in text
    assert "| 640x480, 3 faces / fps | 35.2 | 24.2 – 35.8 | 3 | 35.2, 24.2, 35.8 |" in text
    assert "| 640x480, 3 faces / backend | litert |" in text
    assert "| cosine_min | 0.9999999 |" in text
    assert "No benchmark" in report_tables.benchmarks([], {})


def test_every_committed_benchmark_is_on_the_speed_page():
    page = (REPO / "docs" / "speed.md").read_text()
    for path in sorted((REPO / "reports" / "bench").glob("*.json")):
        assert f"`argml bench {json.loads(path.read_text())['benchmark']}`" in page


def test_ablation_table_from_csv_or_markdown(tmp_path):
    assert "No ablation table" in report_tables.ablation(tmp_path)
    pd.DataFrame({"experiment": ["baseline", "cosine"], "gender": ["92.3 %", "93.8 %"]}).to_csv(
        tmp_path / "ablation.csv", index=False)
    assert "| cosine | 93.8 % |" in report_tables.ablation(tmp_path)
    (tmp_path / "ablation.md").write_text("| a | b |\n| --- | --- |\n| 1 | 2 |\n")
    assert report_tables.ablation(tmp_path) == "| a | b |\n| --- | --- |\n| 1 | 2 |"


def test_markers_inside_code_fences_are_left_alone():
    text = "```markdown\n<!-- argml docs: nonsense -->\nexample\n<!-- /argml docs -->\n```\n"
    assert docs.fill(text, docs.Reports(REPO)) == text
    with pytest.raises(ValueError, match="unknown docs block 'nonsense'"):
        docs.fill("<!-- argml docs: nonsense -->\nexample\n<!-- /argml docs -->\n", docs.Reports(REPO))


def test_params_reference_lists_every_setting():
    """Every leaf of params.yaml is a row of the configuration page, with its default."""
    import yaml

    from argml.pipeline.presets import dotted

    page = (REPO / "docs" / "configuration.md").read_text()
    for section, values in yaml.safe_load((REPO / "params.yaml").read_text()).items():
        for key in dotted(values):
            assert f"| `{key}` |" in page, f"{section}.{key}"


def test_demo_frame_is_a_frame_of_the_demo_video():
    import cv2

    image = REPO / docs.FRAME_FILE
    assert image.stat().st_size < 300_000
    frame = cv2.imread(str(image))
    video = cv2.VideoCapture(str(REPO / "reports" / "demo.mp4"))
    index = docs.demo_frame_index(REPO / "reports" / "demo.jsonl")
    video.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, original = video.read()
    video.release()
    assert ok and frame.shape == original.shape
    assert np.abs(frame.astype(int) - original.astype(int)).mean() < 2  # seeking may decode a hair differently
    labelled = [sum(1 for face in json.loads(line)["faces"] if face["labels"])
                for line in (REPO / "reports" / "demo.jsonl").read_text().splitlines()]
    assert labelled[index] == max(labelled)


def test_site_builds_strictly_and_a_dead_link_fails_it(tmp_path):
    if not MKDOCS.exists():
        pytest.skip(f"no mkdocs next to {sys.executable}: install the docs extra")
    site = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert site.returncode == 0, site.stderr[-3000:]
    assert (tmp_path / "site" / "model-card-binned" / "index.html").exists()

    (tmp_path / "copy").mkdir()
    root = repository_docs_copy(tmp_path / "copy")
    (root / "docs" / "data.md").write_text((root / "docs" / "data.md").read_text() + "\n[gone](missing.md)\n")
    broken = subprocess.run([str(MKDOCS), "build", "--strict", "--site-dir", str(tmp_path / "site2")], cwd=root,
                            capture_output=True, text=True, timeout=300)
    assert broken.returncode != 0 and "missing.md" in broken.stderr


def test_registered_versions_carry_their_model_card(pipeline_repo):
    """The small pipeline's evaluate stage logged each mode's card beside its registered version, equal to the card
    its reports give now, and the version's description summarises it."""
    import os

    import mlflow

    from argml.tracking import cards

    copy, env, _ = pipeline_repo
    params = load_params(copy / "params.yaml")
    previous, previous_uri = os.getcwd(), mlflow.get_tracking_uri()
    os.chdir(copy)
    try:
        mlflow.set_tracking_uri(f"sqlite:///{copy / 'mlflow.db'}")
        client = mlflow.MlflowClient()
        for mode in AGE_MODES:
            version = int(client.get_model_version_by_alias(params.mlflow.model_name, mode).version)
            card, summary = model_card.from_reports(copy / "reports" / mode, mode, params.evaluate,
                                                    params.mlflow.model_name)
            assert cards.card_of(params.mlflow.model_name, version) == card
            assert client.get_model_version(params.mlflow.model_name, str(version)).description == summary
            assert mlflow.pyfunc.load_model(f"models:/{params.mlflow.model_name}/{version}") is not None
    finally:
        os.chdir(previous)
        mlflow.set_tracking_uri(previous_uri)
