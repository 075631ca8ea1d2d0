"""softmax_lib.temperature: temperature scaling, calibration error, Boltzmann bandits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as sp_log_softmax

from softmax_lib import temperature as tm


def labels_drawn_at_temperature(logits: np.ndarray, temperature: float, rng) -> np.ndarray:
    """Sample y_n ~ Categorical(softmax(z_n / T)) by inverse CDF (scipy's log_softmax)."""
    cdf = np.cumsum(np.exp(sp_log_softmax(logits / temperature, axis=-1)), axis=-1)
    u = rng.random((logits.shape[0], 1))
    return np.minimum((u > cdf).sum(axis=-1), logits.shape[1] - 1)


def scipy_nll(logits, labels, temperature):
    return -np.mean(sp_log_softmax(logits / temperature, axis=-1)[np.arange(len(labels)), labels])


# ----------------------------------------------------------------------------- fit_temperature


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_at(true_temperature):
    rng = np.random.default_rng(7)
    logits = rng.normal(size=(20000, 10)) * 3
    labels = labels_drawn_at_temperature(logits, true_temperature, rng)
    fitted = tm.fit_temperature(logits, labels)
    assert isinstance(fitted, float)
    assert abs(fitted / true_temperature - 1) < 0.05


def test_fit_agrees_with_scipy_bounded_minimisation_of_the_nll():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(500, 5)) * 4
    labels = labels_drawn_at_temperature(logits, 1.7, rng)
    fitted = tm.fit_temperature(logits, labels)
    ref = minimize_scalar(lambda s: scipy_nll(logits, labels, np.exp(s)), bounds=(-5, 5), method="bounded",
                          options={"xatol": 1e-10})
    assert abs(fitted - np.exp(ref.x)) < 1e-6
    # and it is a minimum: nearby temperatures are no better
    best = scipy_nll(logits, labels, fitted)
    assert best <= scipy_nll(logits, labels, fitted * 1.01) and best <= scipy_nll(logits, labels, fitted / 1.01)
    assert abs(tm.temperature_nll(logits, labels, fitted) - best) < 1e-13


def test_fit_is_invariant_to_shifting_logits_and_scales_with_them():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(300, 4)) * 2
    labels = labels_drawn_at_temperature(logits, 1.3, rng)
    fitted = tm.fit_temperature(logits, labels)
    assert abs(tm.fit_temperature(logits + rng.normal(size=(300, 1)) * 50, labels) - fitted) < 1e-8
    assert abs(tm.fit_temperature(3 * logits, labels) - 3 * fitted) < 1e-8


def test_fit_accepts_torch_tensors():
    rng = np.random.default_rng(11)
    logits = rng.normal(size=(200, 3)) * 2
    labels = labels_drawn_at_temperature(logits, 1.0, rng)
    expected = tm.fit_temperature(logits, labels)
    assert abs(tm.fit_temperature(torch.tensor(logits), torch.tensor(labels)) - expected) < 1e-12


def test_fit_without_finite_minimiser_raises_value_error():
    logits = np.array([[3.0, 0.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="T -> 0"):
        tm.fit_temperature(logits, [0, 1])  # every example right: sharper is always better
    with pytest.raises(ValueError, match="infinity"):
        tm.fit_temperature(logits, [1, 0])  # every example wrong: flatter is always better


def test_fit_rejects_bad_shapes_and_labels():
    with pytest.raises(ValueError, match="logits"):
        tm.fit_temperature(np.ones(5), [0])
    with pytest.raises(ValueError, match="labels"):
        tm.fit_temperature(np.ones((3, 2)), [0, 1])
    with pytest.raises(ValueError, match="labels"):
        tm.fit_temperature(np.ones((2, 2)), [0, 2])
    with pytest.raises(TypeError, match="labels"):
        tm.fit_temperature(np.ones((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        tm.fit_temperature(np.array([[np.inf, 0.0], [0.0, 1.0]]), [0, 1])


# ----------------------------------------------------------------------------- ECE


def test_ece_of_three_predictions_in_three_bins_is_hand_value():
    probs = [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]]
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right); 5 bins, each alone in its bin:
    # gaps 0.1, 0.6, 0.3 -> mean 1/3
    assert tm.expected_calibration_error(probs, [0, 1, 1], n_bins=5) == pytest.approx(1 / 3, abs=1e-15)


def test_ece_averages_within_a_bin_before_taking_the_gap():
    probs = [[0.75, 0.25], [0.35, 0.65], [1.0, 0.0]]
    # bin (0.6, 0.8]: confidences 0.75, 0.65, accuracy 1/2 -> gap 0.2, weight 2/3; bin (0.8, 1]: gap 0
    ece = tm.expected_calibration_error(probs, [0, 0, 0], n_bins=5)
    assert ece == pytest.approx(2 / 3 * 0.2, abs=1e-15)


def test_ece_is_zero_when_confidence_equals_accuracy_in_every_bin():
    probs = np.array([[0.5, 0.5]] * 4 + [[0.0, 1.0]] * 3)
    labels = np.array([0, 1, 0, 1, 1, 1, 1])
    assert tm.expected_calibration_error(probs, labels) == 0.0


def test_ece_of_a_confidently_wrong_model_is_one():
    assert tm.expected_calibration_error(np.eye(3), [1, 2, 0]) == 1.0


def test_bins_are_closed_on_the_right():
    diagram = tm.reliability_diagram_data([[0.25, 0.75], [0.5, 0.5], [0.75, 0.25]], [1, 1, 0], n_bins=4)
    np.testing.assert_array_equal(diagram.counts, [0, 1, 2, 0])  # 0.5 -> (0.25, 0.5]; 0.75 -> (0.5, 0.75]
    np.testing.assert_allclose(diagram.confidence[1:3], [0.5, 0.75])
    np.testing.assert_allclose(diagram.accuracy[1:3], [0.0, 1.0])
    assert np.isnan(diagram.confidence[0]) and np.isnan(diagram.accuracy[3])
    np.testing.assert_allclose(diagram.bin_edges, [0, 0.25, 0.5, 0.75, 1.0])


def test_ece_matches_an_explicit_loop_over_bins():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4) * 0.5, size=1000)
    labels = rng.integers(0, 4, size=1000)
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, 11)
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            expected += inside.mean() * abs((pred[inside] == labels[inside]).mean() - conf[inside].mean())
    assert tm.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, abs=1e-14)
    assert 0.0 <= expected <= 1.0


def test_ece_rejects_bad_input():
    with pytest.raises(ValueError, match="probs"):
        tm.expected_calibration_error([[1.2, -0.2]], [0])
    with pytest.raises(ValueError, match="probs"):
        tm.expected_calibration_error([0.2, 0.8], [0])
    with pytest.raises(ValueError, match="labels"):
        tm.expected_calibration_error([[0.2, 0.8]], [0, 1])
    with pytest.raises(TypeError, match="labels"):
        tm.expected_calibration_error([[0.2, 0.8]], [1.0])
    with pytest.raises(ValueError, match="n_bins"):
        tm.expected_calibration_error([[0.2, 0.8]], [1], n_bins=0)


# ----------------------------------------------------------------------------- bandit


def test_bandit_with_equal_arms_has_zero_regret():
    assert np.all(tm.boltzmann_bandit([0.3, 0.3, 0.3], 0.5, n_steps=50, n_runs=10, rng=0) == 0)


def test_bandit_at_huge_temperature_pulls_uniformly():
    means = np.array([0.0, 1.0, 2.0, 3.0])
    regret = tm.boltzmann_bandit(means, 1e6, n_steps=200, n_runs=500, rng=1)
    assert abs(regret.mean() - (means.max() - means.mean())) < 0.03


def test_bandit_is_reproducible_from_its_seed_and_learns_at_moderate_temperature():
    means = [0.0, 0.5, 1.0]
    a = tm.boltzmann_bandit(means, 0.2, n_steps=300, n_runs=200, rng=4)
    b = tm.boltzmann_bandit(means, 0.2, n_steps=300, n_runs=200, rng=4)
    np.testing.assert_array_equal(a, b)
    assert a[-50:].mean() < 0.5 * a[:10].mean()


@pytest.mark.parametrize("c", [1e-12, 1e-9, 1e9, 1e12])
def test_fit_temperature_is_scale_equivariant_far_from_unit_logits(c):
    # T(c z) = c T(z): the search must follow the logits' scale
    rng = np.random.default_rng(5)
    z = rng.normal(size=(300, 5)) * 3
    y = np.where(rng.random(300) < 0.7, z.argmax(-1), rng.integers(0, 5, 300))
    t0 = tm.fit_temperature(z, y)
    assert math.isclose(tm.fit_temperature(z * c, y), c * t0, rel_tol=1e-9)


def test_fit_temperature_on_constant_rows_says_so():
    with pytest.raises(ValueError, match="constant"):
        tm.fit_temperature(np.zeros((3, 2)), [0, 1, 0])
