"""Evaluation metrics on predictions whose right answers are known."""

import numpy as np
import pytest

from argml.core.labels import age_bin, age_class
from argml.evaluation import metrics as evaluate
from conftest import make_card as described


def make_case(mode: str, ages: list[int], races: list[int], genders: list[int], age_probabilities: np.ndarray,
              race_guess: list[int], gender_guess: list[int]):
    n = len(ages)
    labels = {
        "age_years": np.array(ages), "age_bin": np.array([age_bin(a) for a in ages]),
        "age_class": np.array([age_class(a) for a in ages]), "race": np.array(races),
        "gender": np.array(genders), "file": np.array([f"{i}.jpg".encode() for i in range(n)]),
    }
    labels["age"] = labels["age_bin"] if mode == "binned" else labels["age_class"]
    probabilities = {"age": age_probabilities, "race": np.eye(5)[race_guess], "gender": np.eye(2)[gender_guess]}
    return probabilities, labels


def test_binned_metrics_with_known_answers():
    ages = [3, 30, 30, 70]
    age_values = [3, 9, 16, 23, 30, 38, 46, 55, 70]  # one age per bin
    age_probabilities = np.eye(9)[[0, 4, 5, 8]]  # right, right, wrong (35-42), right
    probabilities, labels = make_case("binned", ages, [0, 1, 2, 3], [0, 1, 0, 1], age_probabilities,
                                      race_guess=[0, 1, 2, 4], gender_guess=[0, 1, 1, 1])
    rows = evaluate.row_outcomes(probabilities, labels, described("binned", age_values))
    metrics = evaluate.summary_metrics(rows)
    assert metrics["age.accuracy"] == metrics["age.bin_accuracy"] == 0.75
    assert metrics["race.accuracy"] == 0.75
    assert metrics["gender.accuracy"] == 0.75
    assert metrics["age.mae"] == pytest.approx((0 + 0 + 8 + 0) / 4)
    assert metrics["age.cs5"] == 0.75
    assert metrics["age.exact_accuracy"] == 0.75  # expected ages 3, 30, 38, 70 -> exact classes


def test_exact_mode_maps_predictions_to_bins_and_expected_age():
    ages = [5, 40, 80]
    age_values = [float(a) for a in range(1, 63)] + [75.0]
    age_probabilities = np.zeros((3, 63))
    age_probabilities[0, 5] = 1.0  # predicts 6 for a 5-year-old: wrong class, wrong bin (6-12)
    age_probabilities[1, [38, 40]] = 0.5  # 39 or 41: expected 40, arg-max 39 -> right bin
    age_probabilities[2, 62] = 1.0  # 63+: right class, right bin 62+
    probabilities, labels = make_case("exact", ages, [0, 0, 0], [0, 0, 0], age_probabilities, [0, 0, 0], [0, 0, 0])
    rows = evaluate.row_outcomes(probabilities, labels, described("exact", age_values))
    assert rows["age_bin_pred"].tolist() == [1, 5, 8]
    assert rows["expected_age"].tolist() == pytest.approx([6, 40, 75])
    metrics = evaluate.summary_metrics(rows)
    assert metrics["age.exact_accuracy"] == pytest.approx(1 / 3)
    assert metrics["age.bin_accuracy"] == pytest.approx(2 / 3)
    assert metrics["age.mae"] == pytest.approx((1 + 0 + 5) / 3)


@pytest.mark.parametrize("classes, size", [(5, 400), (9, 30), (63, 50), (2, 1)])
def test_macro_f1_equals_sklearns(classes, size):
    """On samples where some classes are never true, never predicted, or both, as in small bootstrap groups."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(classes)
    for _ in range(20):
        truth, guess = rng.integers(0, classes, size), rng.integers(0, classes, size)
        guess[: size // 2] = truth[: size // 2]
        expected = f1_score(truth, guess, average="macro", zero_division=0)
        assert evaluate.macro_f1(truth, guess) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_per_group_counts_intervals_and_worst_group():
    rng = np.random.default_rng(0)
    n = 400
    races = rng.integers(0, 5, n)
    genders = rng.integers(0, 2, n)
    ages = rng.integers(1, 90, n)
    # race guess right for everyone but race 4 (Other), which is always wrong
    race_guess = np.where(races == 4, 0, races)
    age_probabilities = np.eye(9)[[age_bin(a) for a in ages]]
    probabilities, labels = make_case("binned", ages.tolist(), races.tolist(), genders.tolist(), age_probabilities,
                                      race_guess.tolist(), genders.tolist())
    rows = evaluate.row_outcomes(probabilities, labels, described("binned", [3, 9, 16, 23, 30, 38, 46, 55, 70]))
    groups = evaluate.per_group(rows, rounds=50)
    race_acc = groups[(groups["grouping"] == "race") & (groups["metric"] == "race.accuracy")].set_index("group")
    assert race_acc.loc["Other", "value"] == 0.0 and race_acc.loc["White", "value"] == 1.0
    assert race_acc["count"].sum() == n
    by_gender = groups[(groups["grouping"] == "gender") & (groups["metric"] == "age.mae")]
    assert (by_gender["ci_low"] <= by_gender["value"] + 1e-9).all() and (by_gender["value"] <= by_gender["ci_high"] + 1e-9).all()
    assert set(groups["grouping"]) == set(evaluate.GROUPINGS)
    gaps = evaluate.fairness(groups)
    race_row = gaps[(gaps["grouping"] == "race") & (gaps["metric"] == "race.accuracy")].iloc[0]
    assert race_row["worst_group"] == "Other" and race_row["gap"] == 1.0
    document = evaluate.metrics_document(evaluate.summary_metrics(rows), gaps)
    assert document["groups"]["race"]["race_accuracy_worst"] == "Other"
    assert "test" not in document and evaluate.flatten_numeric(document)["race.accuracy"] == document["race"]["accuracy"]
