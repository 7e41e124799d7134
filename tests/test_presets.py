"""Presets hold only what they change, and are applied onto params.yaml by `argml presets`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from argml.pipeline.presets import apply, changes, dotted

REPO = Path(__file__).resolve().parents[1]
PRESETS = sorted((REPO / "presets").glob("*.yaml"))


@pytest.fixture
def params_copy(tmp_path) -> Path:
    return Path(shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml"))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda path: path.name)
def test_a_preset_changes_only_its_own_keys_keeps_the_comments_and_passes_the_checks(preset, params_copy):
    before = dotted(yaml.safe_load(params_copy.read_text()))
    wanted = dotted(yaml.safe_load(preset.read_text()))
    changed = apply(preset, params_copy)  # check_params runs on the result before it replaces the file
    # every key of the preset changes a value: a key equal to the default would be dead weight
    assert sorted(changed) == sorted(wanted)
    after = dotted(yaml.safe_load(params_copy.read_text()))
    assert after == {**before, **wanted}
    comment_lines = [line for line in (REPO / "params.yaml").read_text().splitlines() if line.lstrip().startswith("#")]
    assert [line for line in params_copy.read_text().splitlines() if line.lstrip().startswith("#")] == comment_lines
    assert changes(preset, params_copy) == {}  # applying twice changes nothing more


def test_a_key_params_yaml_lacks_or_a_bad_value_leaves_params_yaml_untouched(tmp_path, params_copy):
    original = params_copy.read_text()
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  finetune_epoch: 3\n")
    with pytest.raises(ValueError, match=r"train\.finetune_epoch not in"):
        apply(typo, params_copy)
    out_of_range = tmp_path / "bad.yaml"
    out_of_range.write_text("train:\n  finetune_epochs: -3\n")
    with pytest.raises(ValueError, match="train.finetune_epochs must be between"):
        apply(out_of_range, params_copy)
    assert params_copy.read_text() == original
    assert sorted(path.name for path in params_copy.parent.iterdir()) == ["bad.yaml", "params.yaml", "typo.yaml"]


def test_the_command_lists_the_changes_and_a_dry_run_writes_nothing(params_copy):
    original = params_copy.read_text()
    command = [sys.executable, "-m", "argml.pipeline.presets", str(REPO / "presets" / "gpu.yaml"), "--params", str(params_copy)]
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, cwd=REPO, check=True)
    assert "would change" in dry.stdout and "features.from_block: Mixed_7a -> Mixed_6a" in dry.stdout
    assert params_copy.read_text() == original
    applied = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True)
    assert "changed" in applied.stdout and params_copy.read_text() != original
    missing = subprocess.run([*command[:3], str(params_copy.parent / "none.yaml"), *command[4:]],
                             capture_output=True, text=True, cwd=REPO)
    assert missing.returncode != 0 and "was not changed" in missing.stderr
