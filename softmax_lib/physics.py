r"""Statistical mechanics with softmax: the Boltzmann distribution and friends (Chapter 6).

Units with :math:`k_B = 1`.  A system in equilibrium at temperature :math:`T` is in
state :math:`i`, of energy :math:`E_i`, with the Boltzmann (Gibbs) probability

.. math::

    p_i = \frac{e^{-E_i/T}}{Z}, \qquad Z = \sum_j e^{-E_j/T},

which is ``softmax(-E, temperature=T)``: energies are negative logits.  The
thermodynamic quantities are all derived from :math:`\log Z`, a logsumexp:

.. math::

    F = -T \log Z, \quad U = \langle E \rangle, \quad
    S = -\sum_i p_i \log p_i = (U - F)/T, \quad C = \frac{\partial U}{\partial T}
      = \frac{\operatorname{Var}(E)}{T^2}.

Also here: the Metropolis acceptance rule and :func:`simulated_annealing`, a tiny
travelling-salesman instance to anneal, the analytic Schottky heat capacity of a
two-level system, and the Gumbel-max trick (:func:`gumbel_max_sample`), which
samples from a softmax by adding noise and taking an argmax (the bridge to the
Gumbel-softmax of Chapter 7).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import numpy as np

from ._array import (
    as_float_array,
    check_positive_int,
    check_temperature,
    check_torch_dim,
    is_torch,
    normalize_numpy_axis,
    to_output,
)
from .core import logsumexp, softmax

__all__ = [
    "boltzmann",
    "log_partition_function",
    "free_energy",
    "mean_energy",
    "heat_capacity",
    "entropy",
    "two_level_heat_capacity",
    "schottky_peak_temperature",
    "metropolis_acceptance",
    "simulated_annealing",
    "tour_length",
    "two_opt_proposal",
    "gumbel_max_sample",
]


def _energies(energies, temperature, axis):
    """Validated ``(work, out_dtype, axis, T)``; axis as core accepts it."""
    work, out_dtype = as_float_array(energies, "energies")
    temperature = check_temperature(temperature)
    if is_torch(work):
        axis = check_torch_dim(axis, work.ndim)
    else:
        axis = normalize_numpy_axis(axis, work.ndim)
    return work, out_dtype, axis, temperature


def _sum(x, axis, keepdims=False):
    if is_torch(x):
        return x.sum(axis, keepdim=keepdims)
    return np.sum(x, axis=axis, keepdims=keepdims)


def _weighted(p, values):
    """``p * values`` with ``0 * inf = 0``: states of probability 0 contribute nothing."""
    if is_torch(p):  # (a NaN probability is not 0: it gives NaN, as it should)
        import torch

        zero = torch.zeros_like(p)
        return torch.where(p == 0, zero, p * torch.where(p == 0, zero, values))
    return np.where(p == 0, 0.0, p * np.where(p == 0, 0.0, values))


def _ground_state(work, axis):
    """The lowest finite energy of each slice (kept dims), 0 where there is none: the
    shift that keeps ``(E - E_min) / T`` from overflowing when ``T`` is tiny."""
    if is_torch(work):
        import torch

        if work.numel() == 0:
            return torch.zeros((), dtype=work.dtype, device=work.device)
        low = work.amin(axis, keepdim=True)
        return torch.where(torch.isfinite(low), low, torch.zeros_like(low))
    low = np.min(work, axis=axis, keepdims=True, initial=np.inf)
    return np.where(np.isfinite(low), low, 0.0).astype(work.dtype)


def boltzmann(energies, temperature=1.0, axis=-1):
    r"""Boltzmann (Gibbs) distribution :math:`p_i = e^{-E_i/T} / Z`.

    Exactly ``softmax(-energies, axis, temperature=T)``, computed stably (the
    lowest energy is shifted to zero first, Chapter 2).  A state of energy ``+inf``
    is forbidden (probability 0).  As ``T -> 0`` the mass concentrates on the ground
    state(s), as ``T -> inf`` it spreads uniformly (Chapter 6).

    Reference: J. W. Gibbs, *Elementary Principles in Statistical Mechanics* (1902).
    """
    work, out_dtype, axis, temperature = _energies(energies, temperature, axis)
    return to_output(softmax(-work, axis=axis, temperature=temperature), out_dtype)


def log_partition_function(energies, temperature=1.0, axis=-1):
    r"""Logarithm of the partition function, :math:`\log Z = \operatorname{LSE}(-E/T)`.

    Finite wherever the energies are, also where :math:`Z` itself overflows (energies
    of ``-1e4`` at ``T = 1``: :math:`Z = e^{10^4}`, :math:`\log Z \approx 10^4`).
    """
    work, out_dtype, axis, temperature = _energies(energies, temperature, axis)
    with np.errstate(over="ignore"):  # -E/T beyond the range: log Z is then +-inf too
        return to_output(logsumexp(-work / temperature, axis=axis), out_dtype)


def free_energy(energies, temperature=1.0, axis=-1):
    r"""Helmholtz free energy :math:`F = -T \log Z`.

    A smooth minimum of the energies: :math:`E_{min} - T\log K \le F \le E_{min}`
    for :math:`K` states; it tends to the ground-state energy as ``T -> 0``.
    """
    work, out_dtype, axis, temperature = _energies(energies, temperature, axis)
    # F = E_min - T log sum exp(-(E - E_min)/T): finite whenever F is, even where
    # log Z = -E/T itself overflows (T = 1e-310)
    ground = _ground_state(work, axis)
    with np.errstate(over="ignore"):
        lse = logsumexp(-(work - ground) / temperature, axis=axis)
    if ground.ndim:
        ground = ground.reshape(lse.shape)  # drop the kept dims
    return to_output(ground - temperature * lse, out_dtype)


def mean_energy(energies, temperature=1.0, axis=-1):
    r"""Internal energy :math:`U = \langle E\rangle = \sum_i p_i E_i` under the Boltzmann distribution."""
    work, out_dtype, axis, temperature = _energies(energies, temperature, axis)
    p = softmax(-work, axis=axis, temperature=temperature)
    return to_output(_sum(_weighted(p, work), axis), out_dtype)


def heat_capacity(energies, temperature=1.0, axis=-1):
    r"""Heat capacity :math:`C = \partial U / \partial T = \operatorname{Var}(E) / T^2`.

    The fluctuation-dissipation identity: the response of the mean energy to the
    temperature is the variance of the energy.  Computed from the centred second
    moment :math:`\sum_i p_i (E_i - U)^2`, which never cancels catastrophically.
    A two-level system shows the Schottky bump (:func:`two_level_heat_capacity`).
    """
    work, out_dtype, axis, temperature = _energies(energies, temperature, axis)
    p = softmax(-work, axis=axis, temperature=temperature)
    # A state of probability 0 may lie so far from U that its (E - U)^2 / T^2
    # overflows; _weighted drops it, so NumPy need not warn about it.
    with contextlib.nullcontext() if is_torch(work) else np.errstate(over="ignore", invalid="ignore"):
        u = _sum(_weighted(p, work), axis, keepdims=True)
        centred = (work - u) / temperature  # in units of T: T**2 is never formed
        return to_output(_sum(_weighted(p, centred * centred), axis), out_dtype)


def entropy(p, axis=-1):
    r"""Gibbs/Shannon entropy in nats, :math:`S = -\sum_i p_i \log p_i`, with :math:`0 \log 0 = 0`.

    ``p`` must be non-negative and finite (``ValueError`` otherwise; NaN propagates);
    it is not renormalised.
    For the Boltzmann distribution :math:`S = (U - F)/T`.  For torch input the
    gradient at an entry equal to 0 is taken as 0.

    Reference: C. E. Shannon, "A mathematical theory of communication" (1948).
    """
    work, out_dtype = as_float_array(p, "p")
    if is_torch(work):
        import torch

        axis = check_torch_dim(axis, work.ndim)
        if bool((work < 0).any()):
            raise ValueError("p must be non-negative (a probability vector), got a negative entry")
        if bool(torch.isposinf(work).any()):
            raise ValueError("p must be finite (a probability vector), got an infinite entry")
        nonzero = work != 0  # 0 log 0 = 0; a NaN entry makes the entropy NaN
        safe = torch.where(nonzero, work, torch.ones_like(work))
        terms = torch.where(nonzero, work * torch.log(safe), torch.zeros_like(work))
        return to_output(0.0 - terms.sum(axis), out_dtype)  # 0.0 - 0.0 is +0, not -0
    axis = normalize_numpy_axis(axis, work.ndim)
    if np.any(work < 0):
        raise ValueError("p must be non-negative (a probability vector), got a negative entry")
    if np.any(np.isposinf(work)):
        raise ValueError("p must be finite (a probability vector), got an infinite entry")
    nonzero = work != 0
    terms = np.where(nonzero, work * np.log(np.where(nonzero, work, 1.0)), 0.0)
    return to_output(0.0 - np.sum(terms, axis=axis), out_dtype)  # a certain outcome: +0, not -0


# --------------------------------------------------------------------------------------
# The two-level system: the Schottky anomaly
# --------------------------------------------------------------------------------------


def two_level_heat_capacity(gap, temperature):
    r"""Heat capacity of a two-level system with energies ``0`` and ``gap`` (analytic).

    .. math::

        C(T) = \Big(\frac{\Delta}{T}\Big)^2 \frac{e^{\Delta/T}}{(1 + e^{\Delta/T})^2}
             = \Big(\frac{\Delta}{2T}\Big)^2 \operatorname{sech}^2\frac{\Delta}{2T}

    The Schottky bump: zero at both ends, maximal near ``T = 0.417 gap``
    (:func:`schottky_peak_temperature`).  ``temperature`` may be an array (NumPy).
    """
    gap = check_temperature(gap, "gap")
    t = np.asarray(temperature, dtype=np.float64)
    if np.any(~np.isfinite(t) | (t <= 0)):
        raise ValueError("temperature must be finite and > 0")
    x = gap / (2.0 * t)  # > 0
    sech = 2.0 * np.exp(-x) / (1.0 + np.exp(-2.0 * x))  # 1/cosh(x), no overflow
    return (x * sech) ** 2


def schottky_peak_temperature(gap=1.0) -> float:
    r"""Temperature of the maximum of :func:`two_level_heat_capacity`.

    With :math:`x = \Delta/T`, setting :math:`dC/dx = 0` gives
    :math:`x \tanh(x/2) = 2`, solved here by Newton's method
    (:math:`x^* \approx 2.3994`, :math:`T^* \approx 0.41678\,\Delta`).
    """
    gap = check_temperature(gap, "gap")
    x = 2.4
    for _ in range(50):
        th = math.tanh(x / 2.0)
        f = x * th - 2.0
        df = th + x * (1.0 - th * th) / 2.0
        step = f / df
        x -= step
        if abs(step) < 1e-15 * x:
            break
    return gap / x


# --------------------------------------------------------------------------------------
# Simulated annealing
# --------------------------------------------------------------------------------------


def metropolis_acceptance(delta_energy, temperature):
    r"""Probability of accepting a move that changes the energy by ``delta_energy``.

    .. math:: a = \min(1, e^{-\Delta E / T})

    Downhill moves are always accepted; uphill ones with the Boltzmann factor, which
    makes the Boltzmann distribution the stationary law of the chain (Metropolis et
    al., 1953).  NumPy in, NumPy out.
    """
    temperature = check_temperature(temperature)
    d = np.asarray(delta_energy, dtype=np.float64)
    with np.errstate(over="ignore"):
        return np.exp(-np.maximum(d, 0.0) / temperature)[()]


def simulated_annealing(
    energy: Callable[[Any], float],
    initial_state: Any,
    propose: Callable[[Any, np.random.Generator], Any],
    rng,
    *,
    t_start: float = 1.0,
    t_end: float = 1e-3,
    n_steps: int = 10_000,
):
    r"""Minimise ``energy`` by the Metropolis chain at a slowly falling temperature.

    At step ``n`` the temperature is geometric,
    :math:`T_n = T_{start} (T_{end}/T_{start})^{n/(N-1)}`; a proposed state is
    accepted with :func:`metropolis_acceptance`.  Hot, the chain explores (it climbs
    out of local minima); cold, it only descends (Kirkpatrick et al., 1983).

    Parameters
    ----------
    energy : callable, state -> float
    initial_state : any
    propose : callable, (state, rng) -> new state (must not modify ``state``)
    rng : int or numpy.random.Generator
    t_start, t_end : float, ``t_start >= t_end > 0``
    n_steps : int

    Returns
    -------
    dict with ``best_state``, ``best_energy``, ``energies`` (the current energy after
    every step, shape ``(n_steps,)``), ``temperatures`` (shape ``(n_steps,)``) and
    ``acceptance_rate``.
    """
    rng = np.random.default_rng(rng)
    t_start = check_temperature(t_start, "t_start")
    t_end = check_temperature(t_end, "t_end")
    if t_end > t_start:
        raise ValueError(f"t_end ({t_end}) must not exceed t_start ({t_start})")
    n_steps = check_positive_int(n_steps, "n_steps")
    temperatures = t_start * (t_end / t_start) ** (np.arange(n_steps) / max(n_steps - 1, 1))
    state, e = initial_state, float(energy(initial_state))
    best_state, best_e = state, e
    trace = np.empty(n_steps)
    accepted = 0
    for n, t in enumerate(temperatures):
        candidate = propose(state, rng)
        e_new = float(energy(candidate))
        if e_new <= e or rng.random() < math.exp(-(e_new - e) / t):
            state, e = candidate, e_new
            accepted += 1
            if e < best_e:
                best_state, best_e = state, e
        trace[n] = e
    return {
        "best_state": best_state,
        "best_energy": best_e,
        "energies": trace,
        "temperatures": temperatures,
        "acceptance_rate": accepted / n_steps,
    }


def tour_length(cities, tour) -> float:
    """Length of the closed tour visiting ``cities[tour[0]], cities[tour[1]], ...`` and back.

    ``cities`` has shape ``(n, 2)``; ``tour`` is a permutation of ``range(n)``.
    """
    pts = np.asarray(cities, dtype=np.float64)[np.asarray(tour)]  # (n, 2) in visiting order
    return float(np.linalg.norm(pts - np.roll(pts, -1, axis=0), axis=1).sum())


def two_opt_proposal(tour, rng):
    """A random 2-opt move: reverse the segment ``tour[i:j]`` (returns a new array)."""
    tour = np.asarray(tour)
    n = len(tour)
    i, j = np.sort(rng.choice(n + 1, size=2, replace=False))
    new = tour.copy()
    new[i:j] = tour[i:j][::-1]
    return new


# --------------------------------------------------------------------------------------
# Discrete choice: the Gumbel-max trick
# --------------------------------------------------------------------------------------


def gumbel_max_sample(logits, rng=None, size=None, *, axis=-1):
    r"""Sample indices from ``softmax(logits)`` as ``argmax(logits + G)``, ``G`` i.i.d. Gumbel.

    With :math:`G_i = -\log(-\log U_i)`, :math:`U_i \sim \mathcal U(0, 1)`,

    .. math:: P\big(\argmax_i (z_i + G_i) = k\big) = \operatorname{softmax}(z)_k,

    the random-utility model of discrete choice (McFadden, 1974; Gumbel, 1954).
    ``-inf`` logits are never chosen.  Chapter 7 relaxes the argmax into a softmax
    (Gumbel-softmax).

    Parameters
    ----------
    logits : array_like or torch.Tensor, shape ``(..., K)`` (``K`` along ``axis``)
    rng : None, int, numpy.random.Generator, or torch.Generator (torch input)
    size : int or tuple, optional
        Number (shape) of independent samples, prepended to the batch shape.
    axis : int

    Returns
    -------
    Integer indices of shape ``size + batch shape`` (``logits.shape`` without ``axis``).
    """
    work, _ = as_float_array(logits, "logits")
    size = () if size is None else ((size,) if isinstance(size, (int, np.integer)) else tuple(size))
    if is_torch(work):
        import torch

        axis = check_torch_dim(axis, work.ndim)
        gen = rng if isinstance(rng, torch.Generator) else None
        if rng is not None and gen is None:
            gen = torch.Generator(device=work.device).manual_seed(int(rng))
        shape = size + tuple(work.shape)
        u = torch.rand(shape, generator=gen, dtype=work.dtype, device=work.device)
        tiny = torch.finfo(work.dtype).tiny
        g = -torch.log(-torch.log(u.clamp_min(tiny)))
        return torch.argmax(work.detach() + g, dim=axis + len(size))
    (axis,) = normalize_numpy_axis(axis, work.ndim)
    rng = np.random.default_rng(rng)
    g = rng.gumbel(size=size + work.shape)
    return np.argmax(work + g, axis=axis + len(size))
