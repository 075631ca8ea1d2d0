"""softmax_lib.physics against mpmath, SciPy, finite differences and sampling."""

from __future__ import annotations

import math
import warnings

import mpmath
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
import torch

from softmax_lib.physics import (
    boltzmann,
    entropy,
    free_energy,
    gumbel_max_sample,
    heat_capacity,
    log_partition_function,
    mean_energy,
    metropolis_acceptance,
    schottky_peak_temperature,
    simulated_annealing,
    tour_length,
    two_level_heat_capacity,
    two_opt_proposal,
)

mpmath.mp.dps = 50

ENERGIES = np.array([0.0, 0.3, 1.1, 2.0, -0.7, 4.5])


def mp_thermo(energies, t):
    """Z, p, U, C and S in 50-digit arithmetic, straight from the definitions."""
    t = mpmath.mpf(t)
    weights = [mpmath.exp(-mpmath.mpf(float(e)) / t) for e in energies]
    z = mpmath.fsum(weights)
    p = [w / z for w in weights]
    u = mpmath.fsum(pi * e for pi, e in zip(p, energies))
    second = mpmath.fsum(pi * mpmath.mpf(float(e)) ** 2 for pi, e in zip(p, energies))
    s = -mpmath.fsum(pi * mpmath.log(pi) for pi in p if pi > 0)
    return z, p, u, (second - u * u) / t**2, s


@pytest.mark.parametrize("t", [0.05, 0.5, 1.0, 3.0, 100.0])
def test_every_quantity_matches_mpmath_definitions(t):
    z, p, u, c, s = mp_thermo(ENERGIES, t)
    np.testing.assert_allclose(boltzmann(ENERGIES, t), np.array(p, dtype=float), rtol=1e-13, atol=1e-300)
    assert log_partition_function(ENERGIES, t) == pytest.approx(float(mpmath.log(z)), rel=1e-14, abs=1e-15)
    assert free_energy(ENERGIES, t) == pytest.approx(float(-t * mpmath.log(z)), rel=1e-14, abs=1e-15)
    assert mean_energy(ENERGIES, t) == pytest.approx(float(u), rel=1e-13, abs=1e-15)
    assert heat_capacity(ENERGIES, t) == pytest.approx(float(c), rel=1e-11, abs=1e-300)
    assert entropy(boltzmann(ENERGIES, t)) == pytest.approx(float(s), rel=1e-12, abs=1e-15)


def test_log_partition_function_is_finite_where_z_overflows():
    energies = np.array([-1e4, -1e4 + 0.5, -1e4 + 3.0])
    with np.errstate(over="ignore"):
        assert np.isinf(np.sum(np.exp(-energies)))  # Z itself overflows float64
    expected = mpmath.log(mpmath.fsum(mpmath.exp(-mpmath.mpf(e)) for e in energies))
    assert log_partition_function(energies) == pytest.approx(float(expected), rel=1e-15)
    assert free_energy(energies, 2.0) == pytest.approx(
        float(-2 * mpmath.log(mpmath.fsum(mpmath.exp(-mpmath.mpf(e) / 2) for e in energies))), rel=1e-15
    )
    assert np.isfinite(boltzmann(energies)).all() and np.isfinite(heat_capacity(energies))


@pytest.mark.parametrize("t", [0.2, 1.0, 7.0])
def test_free_energy_equals_mean_energy_minus_t_times_entropy(t):
    f = free_energy(ENERGIES, t)
    u = mean_energy(ENERGIES, t)
    s = entropy(boltzmann(ENERGIES, t))
    assert f == pytest.approx(u - t * s, rel=1e-13, abs=1e-14)


@pytest.mark.parametrize("t", [0.1, 0.7, 2.5])
def test_heat_capacity_is_the_derivative_of_mean_energy(t):
    h = 1e-5 * t
    derivative = (mean_energy(ENERGIES, t + h) - mean_energy(ENERGIES, t - h)) / (2 * h)
    assert heat_capacity(ENERGIES, t) == pytest.approx(derivative, rel=1e-7)


def test_heat_capacity_derivative_via_autograd_in_torch():
    t = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    energies = torch.tensor(ENERGIES)
    p = torch.softmax(-energies / t, 0)  # torch's own softmax, differentiated in t
    (du_dt,) = torch.autograd.grad((p * energies).sum(), t)
    assert heat_capacity(energies, 0.8).item() == pytest.approx(du_dt.item(), rel=1e-12)


def test_two_level_system_has_the_analytic_schottky_heat_capacity():
    temps = np.geomspace(0.02, 50, 40)
    numeric = np.array([heat_capacity([0.0, 1.7], t) for t in temps])
    np.testing.assert_allclose(numeric, two_level_heat_capacity(1.7, temps), rtol=1e-10, atol=1e-300)


def test_schottky_peak_matches_a_root_finder_and_a_grid_search():
    x_star = scipy.optimize.brentq(lambda x: x * np.tanh(x / 2) - 2, 1.0, 4.0, xtol=1e-15)
    assert schottky_peak_temperature(2.0) == pytest.approx(2.0 / x_star, rel=1e-13)
    temps = np.linspace(0.3, 0.6, 300001)
    grid_peak = temps[np.argmax(two_level_heat_capacity(1.0, temps))]
    assert schottky_peak_temperature() == pytest.approx(grid_peak, abs=2e-6)


def test_entropy_treats_zero_log_zero_as_zero():
    assert entropy([0.5, 0.5, 0.0]) == pytest.approx(math.log(2), rel=1e-15)
    assert entropy([1.0, 0.0]) == 0.0
    p = np.array([[0.2, 0.0, 0.8], [0.1, 0.6, 0.3]])
    np.testing.assert_allclose(entropy(p), scipy.stats.entropy(p, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(entropy(p.T, axis=0), scipy.stats.entropy(p.T, axis=0), rtol=1e-14)


def test_a_certain_outcome_has_entropy_plus_zero_as_scipy_gives_it():
    # -(0.0) would print as -0.0; scipy.stats.entropy gives +0.0 for a one-hot vector
    for p in ([1.0, 0.0], [[0.0, 1.0, 0.0]], torch.tensor([0.0, 1.0]), np.array([1.0], np.float32)):
        s = entropy(p)
        assert s == 0 and not np.signbit(np.asarray(s)).any()
    assert not np.signbit(scipy.stats.entropy([1.0, 0.0]))


def test_entropy_gradient_is_finite_at_zero_probability():
    p = torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64, requires_grad=True)
    entropy(p).backward()
    assert torch.isfinite(p.grad).all()
    expected = -(torch.log(p.detach()[1:]) + 1)  # dS/dp_i = -(log p_i + 1)
    torch.testing.assert_close(p.grad[1:], expected)


def test_entropy_rejects_negative_probabilities():
    with pytest.raises(ValueError, match="p must be non-negative"):
        entropy([0.5, 0.6, -0.1])
    with pytest.raises(ValueError, match="p must be non-negative"):
        entropy(torch.tensor([1.1, -0.1]))


def test_entropy_rejects_infinite_entries_and_propagates_nan():
    with pytest.raises(ValueError, match="p must be finite"):
        entropy([math.inf, 0.5])
    with pytest.raises(ValueError, match="p must be finite"):
        entropy(torch.tensor([0.5, math.inf]))
    assert math.isnan(entropy([math.nan, 0.5])) and math.isnan(scipy.stats.entropy([math.nan, 0.5]))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_non_positive_or_non_finite_temperature_is_refused(bad):
    for fn in (boltzmann, log_partition_function, free_energy, mean_energy, heat_capacity):
        with pytest.raises(ValueError, match="temperature"):
            fn(ENERGIES, bad)


def test_string_temperature_is_a_type_error():
    with pytest.raises(TypeError, match="temperature"):
        boltzmann(ENERGIES, "hot")


def test_boltzmann_is_softmax_of_negative_energies_over_t_in_torch():
    energies = torch.tensor(ENERGIES, requires_grad=True)
    p = boltzmann(energies, 0.6)
    torch.testing.assert_close(p, torch.softmax(-energies / 0.6, 0))
    # d log Z / dE_i = -p_i / T
    (grad,) = torch.autograd.grad(log_partition_function(energies, 0.6), energies)
    torch.testing.assert_close(grad, -p.detach() / 0.6)


def test_batches_run_along_the_given_axis():
    energies = np.random.default_rng(0).normal(size=(4, 6))
    by_rows = np.array([log_partition_function(row, 1.3) for row in energies.T])
    np.testing.assert_allclose(log_partition_function(energies, 1.3, axis=0), by_rows, rtol=1e-14)


def test_forbidden_state_of_infinite_energy_gets_zero_weight_and_finite_moments():
    energies = np.array([0.0, 1.0, np.inf])
    assert boltzmann(energies)[2] == 0.0
    assert mean_energy(energies) == pytest.approx(mean_energy(energies[:2]), rel=1e-15)
    assert heat_capacity(energies) == pytest.approx(heat_capacity(energies[:2]), rel=1e-15)


def test_low_temperature_concentrates_on_the_ground_state():
    assert boltzmann(ENERGIES, 1e-3)[4] == 1.0
    assert free_energy(ENERGIES, 1e-3) == pytest.approx(ENERGIES.min(), abs=1e-9)


def test_half_precision_energies_keep_their_dtype():
    p = boltzmann(np.array([0.0, 1.0, 2.0], dtype=np.float16))
    assert p.dtype == np.float16
    np.testing.assert_allclose(p, boltzmann([0.0, 1.0, 2.0]), rtol=1e-3)


# --- simulated annealing -----------------------------------------------------------------


def test_metropolis_acceptance_is_min_one_boltzmann_factor():
    d = np.array([-2.0, 0.0, 0.5, 3.0])
    np.testing.assert_allclose(metropolis_acceptance(d, 0.5), [1.0, 1.0, math.exp(-1.0), math.exp(-6.0)], rtol=1e-15)


def test_annealing_finds_the_optimal_tour_of_cities_on_a_circle():
    n = 12
    angles = 2 * np.pi * np.arange(n) / n
    cities = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    start = np.random.default_rng(1).permutation(n)
    result = simulated_annealing(
        lambda tour: tour_length(cities, tour), start, two_opt_proposal, 2, t_start=1.0, t_end=1e-3, n_steps=4000
    )
    optimum = 2 * n * math.sin(math.pi / n)  # the perimeter of the regular polygon
    assert tour_length(cities, start) > 1.5 * optimum
    assert result["best_energy"] == pytest.approx(optimum, rel=1e-12)
    assert sorted(result["best_state"]) == list(range(n))
    assert result["energies"].shape == (4000,)


def test_annealing_escapes_local_minima_of_a_rugged_landscape():
    xs = np.linspace(-5, 5, 401)
    rugged = 0.3 * xs**2 + np.sin(5 * xs)
    start = int(np.argmin(np.abs(xs - 4.0)))  # inside a local well far from the global one

    def step(i, rng):
        return int(np.clip(i + rng.integers(-20, 21), 0, len(xs) - 1))

    result = simulated_annealing(lambda i: rugged[i], start, step, 0, t_start=2.0, t_end=1e-2, n_steps=3000)
    assert result["best_energy"] == rugged.min()  # brute force over the grid
    greedy = simulated_annealing(lambda i: rugged[i], start, step, 0, t_start=1e-9, t_end=1e-9, n_steps=3000)
    assert greedy["best_energy"] > rugged.min() + 0.5  # zero temperature gets stuck


def test_annealing_is_reproducible_with_a_seed():
    f = lambda x: (x - 3) ** 2  # noqa: E731
    runs = [simulated_annealing(f, 0.0, lambda x, r: x + r.normal(), 7, n_steps=200)["energies"] for _ in range(2)]
    np.testing.assert_array_equal(*runs)


def test_annealing_rejects_rising_schedule():
    with pytest.raises(ValueError, match="t_end"):
        simulated_annealing(abs, 0.0, lambda x, r: x, 0, t_start=0.1, t_end=1.0)


# --- Gumbel-max ----------------------------------------------------------------------------


def test_gumbel_max_frequencies_pass_a_chi_square_test_against_softmax():
    logits = np.array([1.0, -0.5, 2.0, 0.0, 0.3])
    n = 40_000
    samples = gumbel_max_sample(logits, np.random.default_rng(3), n)
    counts = np.bincount(samples, minlength=5)
    probs = np.exp(logits) / np.exp(logits).sum()
    assert scipy.stats.chisquare(counts, n * probs).pvalue > 1e-3
    assert np.all(np.abs(counts / n - probs) < 5 * np.sqrt(probs * (1 - probs) / n))  # 5 sigma


def test_gumbel_max_never_picks_minus_infinity_and_batches_rows():
    logits = np.array([[0.0, -np.inf, 0.0], [-np.inf, 5.0, -np.inf]])
    samples = gumbel_max_sample(logits, 0, (100, 2))
    assert samples.shape == (100, 2, 2)
    assert np.all(samples[..., 0] != 1) and np.all(samples[..., 1] == 1)


def test_gumbel_max_torch_generator_frequencies_and_reproducibility():
    logits = torch.tensor([0.5, 1.5, -1.0])
    a = gumbel_max_sample(logits, torch.Generator().manual_seed(0), 30_000)
    b = gumbel_max_sample(logits, torch.Generator().manual_seed(0), 30_000)
    assert torch.equal(a, b)
    counts = torch.bincount(a, minlength=3).numpy()
    probs = torch.softmax(logits.double(), 0).numpy()
    assert scipy.stats.chisquare(counts, 30_000 * probs).pvalue > 1e-3


# --------------------------------------------------------------------------------------
# Scales far from 1 and NaN input (review of 2026-11-23)
# --------------------------------------------------------------------------------------


def _schottky_exact(gap_over_t):
    """C of a two-level system, (D/T)^2 e^{-D/T} / (1 + e^{-D/T})^2, in mpmath."""
    x = mpmath.mpf(gap_over_t)
    return float(x**2 * mpmath.exp(-x) / (1 + mpmath.exp(-x)) ** 2)


@pytest.mark.parametrize("scale", [1e-170, 1e-23, 1.0, 1e20, 1e160, 1e200])
def test_heat_capacity_depends_only_on_energy_over_temperature(scale):
    # C(sE, sT) = C(E, T): the variance of E must not be formed in units of E^2
    expected = _schottky_exact(1.0)
    got = heat_capacity(np.array([0.0, 1.0]) * scale, scale)
    assert math.isclose(got, expected, rel_tol=1e-14)
    got_t = heat_capacity(torch.tensor([0.0, 1.0], dtype=torch.float64) * scale, scale)
    assert math.isclose(float(got_t), expected, rel_tol=1e-14)


@pytest.mark.parametrize("energies, temperature", [
    ([0.0, 1.0], 1e-160),  # the frozen limit: (E - U) / T of the empty state overflows when squared
    ([0.0, 1e155], 1.0),
    ([0.0, 1e200], 1e-200),  # (E - U) / T overflows
    ([1e308, -1e308], 1.0),  # E - U overflows
])
def test_heat_capacity_of_a_frozen_system_is_zero_without_overflow_warnings(energies, temperature):
    # Var(E) / T^2 in 60 digits: the excited state's probability e^(-dE/T) is far below
    # the smallest float64, so C rounds to 0; no warning may escape (pyproject: error)
    with mpmath.workdps(60):
        e = [mpmath.mpf(v) for v in energies]
        t = mpmath.mpf(temperature)
        w = [mpmath.exp(-(v - min(e)) / t) for v in e]
        p = [x / sum(w) for x in w]
        u = sum(pi * v for pi, v in zip(p, e))
        exact = float(sum(pi * ((v - u) / t) ** 2 for pi, v in zip(p, e)))
    assert exact == 0.0
    assert heat_capacity(energies, temperature) == exact
    assert float(heat_capacity(torch.tensor(energies, dtype=torch.float64), temperature)) == exact


def test_heat_capacity_float32_at_si_scale():
    energies = np.array([0.0, 1.0], dtype=np.float32) * np.float32(1e-21)  # joules
    got = heat_capacity(energies, 1e-21)
    assert got.dtype == np.float32 and math.isclose(float(got), _schottky_exact(1.0), rel_tol=1e-5)


@pytest.mark.parametrize("energies, temperature, exact", [
    ([1.0, 2.0], 1e-310, 1.0),  # -E/T overflows; F is the ground state
    ([1e10, 2e10], 1e-300, 1e10),
    ([-1e10, 0.0], 1e-300, -1e10),
    ([1.5e308, 1.6e308], 0.5, 1.5e308),
])
def test_free_energy_is_finite_where_log_z_overflows(energies, temperature, exact):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert free_energy(energies, temperature) == exact
        got = free_energy(torch.tensor(energies, dtype=torch.float64), temperature)
    assert float(got) == exact


def test_free_energy_matches_mpmath_with_axes():
    e = np.random.default_rng(3).normal(size=(3, 4, 5)) * 50
    t = 0.7

    def exact(rows):  # -T log sum exp(-E/T) of each row, in 40 digits
        with mpmath.workdps(40):
            return np.array([float(-t * mpmath.log(mpmath.fsum(mpmath.exp(-mpmath.mpf(v) / t) for v in row)))
                             for row in rows])

    cases = {-1: e, 0: np.moveaxis(e, 0, -1), (0, 2): np.moveaxis(e, [0, 2], [-2, -1]), None: e}
    for axis, moved in cases.items():
        got = np.asarray(free_energy(e, t, axis=axis))
        rows = moved.reshape(-1, 60 if axis is None else moved.shape[-1] * (3 if axis == (0, 2) else 1))
        assert np.allclose(got.reshape(-1), exact(rows), rtol=1e-13, atol=0), axis


def test_nan_energies_and_probabilities_give_nan():
    # a NaN is not a state of probability 0: it must not vanish from the sums
    assert np.isnan(mean_energy([np.nan, 0.0])) and np.isnan(heat_capacity([np.nan, 0.0]))
    assert np.isnan(entropy([np.nan, 0.5, 0.5]))
    assert np.isnan(scipy.stats.entropy([np.nan, 0.5, 0.5]))  # the oracle agrees
    nan = float("nan")
    assert torch.isnan(mean_energy(torch.tensor([nan, 0.0])))
    assert torch.isnan(entropy(torch.tensor([nan, 0.5, 0.5])))
    # while states of probability 0 (forbidden, E = +inf) still contribute nothing
    assert mean_energy([np.inf, 0.0]) == 0.0 and entropy([0.0, 1.0]) == 0.0
