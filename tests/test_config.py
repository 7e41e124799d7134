"""argml.config: params.yaml -> typed frozen settings; typos and wrong types are errors naming the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from argml.core.config import Params, flatten, load_params

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def dotted(raw: dict, prefix: str = "") -> dict:
    """Nested mapping -> {'a.b.c': value}, independently of argml."""
    flat = {}
    for key, value in raw.items():
        name = f"{prefix}.{key}" if prefix else key
        flat.update(dotted(value, name) if isinstance(value, dict) else {name: value})
    return flat


def leaf_fields(instance, prefix: str = ""):
    """(dotted name, default) of every non-dataclass field, however deeply nested."""
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(value):
            yield from leaf_fields(value, name)
        else:
            yield name, value


def test_repo_params_yaml_loads_and_matches_the_file():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml")
    assert isinstance(params, Params)
    flat = flatten(params)
    for key, value in dotted(raw).items():
        assert flat[key] == value, key


def test_nested_unknown_key_is_named_with_its_full_path(tmp_path):
    nested = [(section.name, f.name, getattr(getattr(Params(), section.name), f.name))
              for section in dataclasses.fields(Params)
              for f in dataclasses.fields(getattr(Params(), section.name))
              if dataclasses.is_dataclass(getattr(getattr(Params(), section.name), f.name))]
    if not nested:
        pytest.skip("no nested parameter group in Params")
    section, group, _ = nested[0]
    with pytest.raises(ValueError, match=rf"{section}\.{group}\.typo_key\b"):
        load_params(write(tmp_path, {section: {group: {"typo_key": 1}}}))


def test_params_are_frozen():
    params = load_params(REPO / "params.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.align.size = 1


def test_missing_sections_and_keys_take_defaults(tmp_path):
    params = load_params(write(tmp_path, {"align": {"size": 96}}))
    assert params.align.size == 96
    assert params.align.padding == Params().align.padding
    assert params.data == Params().data


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("")
    assert load_params(path) == Params()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="params"):
        load_params(tmp_path / "nope.yaml")


def test_unknown_key_names_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"align\.paddin\b"):
        load_params(write(tmp_path, {"align": {"paddin": 0.3}}))


def test_unknown_section_names_the_section(tmp_path):
    with pytest.raises(ValueError, match=r"\bfeatures\b"):
        load_params(write(tmp_path, {"data": {"limit": 5}, "features": {"x": 1}}))


@pytest.mark.parametrize("section, key, value", [
    ("data", "limit", "ten"),
    ("data", "limit", 1.5),
    ("data", "limit", True),  # a bool is not an int here
    ("data", "limit", None),
    ("align", "padding", "wide"),
    ("download", "url", 123),
    ("augment", "jpeg_quality", [95]),
])
def test_wrong_type_names_the_key(tmp_path, section, key, value):
    with pytest.raises(ValueError, match=rf"{section}\.{key}\b"):
        load_params(write(tmp_path, {section: {key: value}}))


def test_section_that_is_not_a_mapping_is_named(tmp_path):
    with pytest.raises(ValueError, match="augment"):
        load_params(write(tmp_path, {"augment": [1, 2]}))


def test_int_is_accepted_for_a_float_and_becomes_float(tmp_path):
    params = load_params(write(tmp_path, {"align": {"padding": 1}}))
    assert params.align.padding == 1.0 and type(params.align.padding) is float


def test_flatten_gives_dotted_keys_for_every_field():
    flat = flatten(Params())
    assert flat == dict(leaf_fields(Params()))
    assert flat["align.size"] == 160
    assert flat["data.seed"] == 42
    assert all("." in key and not isinstance(value, dict) for key, value in flat.items())


@pytest.mark.parametrize("section, key, value, message", [
    ("data", "limit", -5, r"data\.limit must be at least 0"),
    ("data", "test_fraction", 0.7, r"data\.test_fraction must be between"),
    ("train", "dropout", 1.5, r"train\.dropout must be between"),
    ("features", "batch_size", 0, r"features\.batch_size must be between"),
    ("live", "detector_confidence", 0, r"live\.detector_confidence must be between"),
    ("train", "hidden_activation", "tanh", r"train\.hidden_activation must be one of linear, relu"),
    ("mlflow", "champion", "best", r"mlflow\.champion must be one of binned, exact"),
])
def test_out_of_range_values_are_refused_by_name(tmp_path, section, key, value, message):
    with pytest.raises(ValueError, match=message):
        load_params(write(tmp_path, {section: {key: value}}))


def test_every_range_and_choice_names_a_real_setting():
    from argml.core.config import CHOICES, RANGES

    names = dict(leaf_fields(Params()))
    assert set(RANGES) | set(CHOICES) <= set(names)
    for name, (low, high) in RANGES.items():  # the defaults themselves are in range
        assert (low is None or names[name] >= low) and (high is None or names[name] <= high), name
    assert all(names[name] in choices for name, choices in CHOICES.items())


def test_unknown_section_and_broken_yaml_are_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) trian"):
        load_params(write(tmp_path, {"trian": {"head_lr": 0.1}}))
    (tmp_path / "params.yaml").write_text("train: {head_lr: [\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_check_params_knows_facenet_blocks_and_weights(tmp_path):
    from argml.pipeline.params import check_params

    assert check_params(REPO / "params.yaml").features.from_block == "Mixed_7a"
    with pytest.raises(ValueError, match="unknown FaceNet block 'Mixed_9z'"):
        check_params(write(tmp_path, {"features": {"from_block": "Mixed_9z"}}))
    with pytest.raises(ValueError, match="features.weights"):
        check_params(write(tmp_path, {"features": {"weights": str(tmp_path / "missing.pt")}}))
