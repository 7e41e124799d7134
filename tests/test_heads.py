"""The multi-task heads and the per-group learning rates of GroupedAdam."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from argml.core.labels import AgeMode  # noqa: E402
from argml.model.age import smoothed_targets  # noqa: E402
from argml.model.heads import AgeLoss, GroupedAdam, build_heads, compile_model, variable_group  # noqa: E402

FACTORS = {"age": 1.0, "race": 0.1, "gender": 0.1, "backbone": 0.01}


@pytest.mark.parametrize("mode, age_classes", [("binned", 9), ("exact", 63)])
def test_heads_give_distributions_per_task(mode, age_classes):
    heads = build_heads(1792, AgeMode.of(mode), hidden_units=128, dropout=0.2)
    out = heads.predict(np.random.default_rng(0).normal(size=(5, 1792)).astype("float32"), verbose=0)
    assert {k: v.shape for k, v in out.items()} == {"age": (5, age_classes), "race": (5, 5), "gender": (5, 2)}
    for values in out.values():
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    assert heads.get_layer("age_hidden").units == 128


def test_variable_groups():
    assert variable_group("age_hidden/kernel") == "age"
    assert variable_group("race/bias") == "race"
    assert variable_group("gender_hidden/kernel") == "gender"
    assert variable_group("Mixed_7a.Branch_0.Conv2d_0a_1x1/kernel") == "backbone"
    assert variable_group("Bottleneck/kernel") == "backbone"


def test_grouped_adam_scales_each_groups_step():
    """Adam's first step moves every weight by about its learning rate, whatever the gradient's size, so
    the step sizes show the per-group rates: age lr, race and gender lr/10, backbone lr/100."""
    features = keras.Input((8,), name="features")
    shared = keras.layers.Dense(8, name="Block8_dense")(features)
    heads = build_heads(8, AgeMode.of("binned"), hidden_units=4)
    model = keras.Model(features, heads(shared))
    compile_model(model, 1e-2, FACTORS, {"age": 1.0, "race": 1.0, "gender": 1.0}, age_values=range(9))
    before = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8)).astype("float32")
    ages = rng.integers(1, 80, 32)
    y = {"age": np.concatenate([smoothed_targets(ages, AgeMode.of("binned"), 0.0), ages[:, None]], axis=1),
         "race": np.eye(5)[rng.integers(0, 5, 32)], "gender": np.eye(2)[rng.integers(0, 2, 32)]}
    model.train_on_batch(x, y)
    steps = {}
    for variable in model.trainable_variables:
        moved = np.abs(variable.numpy() - before[variable.path])
        steps.setdefault(variable_group(variable.path), []).append(np.median(moved[moved > 0]))
    median = {group: float(np.median(values)) for group, values in steps.items()}
    assert median["age"] == pytest.approx(1e-2, rel=0.05)
    assert median["race"] == pytest.approx(1e-3, rel=0.05)
    assert median["gender"] == pytest.approx(1e-3, rel=0.05)
    assert median["backbone"] == pytest.approx(1e-4, rel=0.05)


def test_grouped_adam_round_trips_its_config():
    optimizer = GroupedAdam(FACTORS, learning_rate=0.5)
    clone = GroupedAdam.from_config(optimizer.get_config())
    assert clone.lr_factors == FACTORS
    with pytest.raises(ValueError, match="backbone"):
        GroupedAdam({"age": 1.0, "race": 0.1, "gender": 0.1})


def test_age_loss_is_cross_entropy_plus_the_weighted_l1_of_the_expected_age():
    values = [10.0, 20.0, 30.0]
    predicted = np.array([[0.2, 0.5, 0.3]], dtype="float32")  # expected age 21
    target = np.array([[0.0, 1.0, 0.0, 26.0]], dtype="float32")  # class 20, true age 26 years
    cross_entropy = -np.log(0.5)
    assert float(AgeLoss(values)(target, predicted)) == pytest.approx(cross_entropy, rel=1e-5)
    assert float(AgeLoss(values, l1_weight=0.1)(target, predicted)) == pytest.approx(cross_entropy + 0.5, rel=1e-5)
    clone = AgeLoss.from_config(AgeLoss(values, 0.1).get_config())
    assert clone.age_values == values and clone.l1_weight == 0.1
