"""Age as a distribution: smoothed targets and the read-outs, on hand-made ages and probability vectors."""

import numpy as np
import pytest

from argml.core.card import FeatureCache, ModelCard, Readout
from argml.core.labels import AGE_BIN_NAMES, AgeMode, age_bin, age_class
from argml.model import age
from argml.model.answers import predictions_table


@pytest.mark.parametrize("mode,sigma", [("exact", 1.0), ("exact", 3.0), ("binned", 2.0), ("binned", 0.0)])
def test_smoothed_targets_sum_to_one_and_peak_at_the_true_age(mode, sigma):
    ages = np.arange(1, 51)  # well below the open top class 63+, whose width draws the peak near it
    targets = age.smoothed_targets(ages, AgeMode.of(mode), sigma)
    true_class = [age_class(a) if mode == "exact" else age_bin(a) for a in ages]
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-6)
    assert (targets.argmax(axis=1) == true_class).all()
    assert (targets >= 0).all()


def test_smoothing_spreads_over_the_neighbouring_ages_only():
    sharp, smooth = age.smoothed_targets(np.array([30]), AgeMode.of("exact"), 0.0)[0], age.smoothed_targets(np.array([30]), AgeMode.of("exact"), 2.0)[0]
    assert sharp[age_class(30)] == 1.0 and sharp.sum() == 1.0
    assert smooth[age_class(30)] == pytest.approx(0.197, abs=0.002)  # N(0, 2) over [-0.5, 0.5]
    assert smooth[age_class(29)] == pytest.approx(smooth[age_class(31)])  # symmetric
    assert smooth[age_class(20)] < 1e-5 and smooth[age_class(40)] < 1e-5


def test_bin_read_outs_on_hand_made_vectors():
    values = [float(a) for a in range(1, 63)] + [70.0]
    exact = np.zeros((1, 63))
    exact[0, [19, 20, 21]] = [0.2, 0.2, 0.2]  # ages 20-22: together 0.6 in bin 20-26
    exact[0, 17] = 0.4  # age 18 alone is the arg-max, in bin 13-19
    assert age.read_bins(exact, AgeMode.of("exact"), values, "argmax").tolist() == [age_bin(18)]
    assert age.read_bins(exact, AgeMode.of("exact"), values, "summed").tolist() == [age_bin(21)]
    assert age.expected_years(exact, values)[0] == pytest.approx(0.4 * 18 + 0.2 * (20 + 21 + 22))
    assert age.read_bins(exact, AgeMode.of("exact"), values, "expected").tolist() == [age_bin(20)]  # 19.8 rounds to 20
    binned = np.array([[0.0, 0.0, 0.45, 0.0, 0.0, 0.55 / 2, 0.55 / 2, 0.0, 0.0]])
    bin_values = [3, 9, 16, 23, 30, 38, 46, 55, 70]
    assert age.read_bins(binned, AgeMode.of("binned"), bin_values, "argmax").tolist() == [2]
    assert age.read_bins(binned, AgeMode.of("binned"), bin_values, "expected").tolist() == [age_bin(round(0.45 * 16 + 0.275 * 84))]
    with pytest.raises(ValueError, match="exact"):
        age.read_bins(binned, AgeMode.of("binned"), bin_values, "summed")


def test_year_read_outs_mean_and_median():
    exact = np.zeros((2, 63))
    exact[0, [9, 49]] = [0.6, 0.4]  # ages 10 and 50: mean 26, median 10
    exact[1, 62] = 1.0  # all of it on 63+
    values = [float(a) for a in range(1, 63)] + [70.0]
    assert age.read_years(exact, AgeMode.of("exact"), values, "mean").tolist() == pytest.approx([26.0, 70.0])
    median = age.read_years(exact, AgeMode.of("exact"), values, "median")
    assert median[0] == pytest.approx(10.0 - 0.5 + 0.5 / 0.6)  # inside the year of age 10
    assert median[1] >= 63
    binned = np.zeros((1, 9))
    binned[0, 3] = 1.0  # all on 20-26: the median is the middle of the bin's ages
    assert age.median_years(binned, AgeMode.of("binned"))[0] == pytest.approx(23.0)


def test_the_read_out_is_chosen_by_validation_accuracy_and_error():
    values = [float(a) for a in range(1, 63)] + [70.0]
    rows = np.zeros((2, 63))
    rows[:, [19, 20, 21]] = 0.2
    rows[:, 17] = 0.4  # arg-max says 13-19, the summed bins say 20-26
    chosen = age.choose_readout(rows, np.array([21.0, 22.0]), AgeMode.of("exact"), values)
    assert chosen["bins"] == "summed" and chosen["scores"]["bin_accuracy"]["argmax"] == 0.0
    assert chosen["years"] == "median"  # medians 20.0 beat means 19.8 for ages 21 and 22
    tie = age.choose_readout(np.eye(9)[[3]], np.array([23.0]), AgeMode.of("binned"), [3, 9, 16, 23, 30, 38, 46, 55, 70])
    assert tie["bins"] == "argmax"  # a tie keeps the simpler read-out


def test_predictions_follow_the_recorded_read_out():
    probabilities = {"gender": np.array([[0.9, 0.1]]), "race": np.eye(5)[[2]], "age": np.zeros((1, 63))}
    probabilities["age"][0, [19, 20, 21]] = 0.2
    probabilities["age"][0, 17] = 0.4
    card = ModelCard(AgeMode.of("exact"), 160, tuple(float(a) for a in range(1, 63)) + (70.0,),
                     FeatureCache("Mixed_7a", "pooled", "casia-webface", (8, 8, 896), {}), align=None)
    plain = predictions_table(probabilities, card)  # no read-out recorded: arg-max and mean
    assert plain.loc[0, "age"] == "18" and plain.loc[0, "age_bin"] == AGE_BIN_NAMES[age_bin(18)]
    chosen = predictions_table(probabilities, card.with_readout(Readout(bins="summed", years="median")))
    assert chosen.loc[0, "age"] == "18"  # the exact class stays the arg-max
    assert chosen.loc[0, "age_bin"] == AGE_BIN_NAMES[age_bin(21)]
    assert chosen.loc[0, "age_years"] == pytest.approx(age.median_years(probabilities["age"], AgeMode.of("exact"))[0])
