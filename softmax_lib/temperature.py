r"""Temperature: calibration by temperature scaling, and Boltzmann exploration (Chapter 4).

Dividing logits by a temperature :math:`T > 0` keeps every prediction's ranking and
changes only how confident it is.  :func:`fit_temperature` chooses ``T`` on held-out
data by maximum likelihood (Guo et al., 2017); :func:`expected_calibration_error`
and :func:`reliability_diagram_data` measure how far confidence is from accuracy
(Naeini et al., 2015).  :func:`boltzmann_bandit` runs softmax (Boltzmann)
exploration on a Gaussian multi-armed bandit (Sutton and Barto, 2018, Sec. 2.8).

Inputs may be NumPy-like or torch tensors (detached and copied to NumPy: these are
evaluation tools, not layers); results are Python floats and NumPy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._array import as_float_array, check_positive_int, check_temperature, is_torch
from .core import log_softmax, softmax

__all__ = [
    "fit_temperature",
    "temperature_nll",
    "expected_calibration_error",
    "reliability_diagram_data",
    "ReliabilityDiagram",
    "boltzmann_bandit",
]

# fit_temperature searches beta = 1/T in [_BETA_MIN, _BETA_MAX].
_BETA_MIN, _BETA_MAX = 1e-8, 1e8


def _numpy(x, name: str) -> np.ndarray:
    if is_torch(x):
        x = x.detach().cpu().numpy()
    work, _ = as_float_array(x, name)
    return np.asarray(work, dtype=np.float64)


def _labels(labels, n: int, n_classes: int) -> np.ndarray:
    if is_torch(labels):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), one class index per row, got {labels.shape}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in [0, {n_classes - 1}], got values from {labels.min()} to {labels.max()}"
        )
    return labels.astype(np.intp, copy=False)


def _logits_and_labels(logits, labels):
    z = _numpy(logits, "logits")
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with N >= 1 and K >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    return z, _labels(labels, z.shape[0], z.shape[1])


def temperature_nll(logits, labels, temperature) -> float:
    r"""Mean negative log-likelihood of ``softmax(logits / T)`` at the true labels.

    .. math::

        \mathrm{NLL}(T) = \frac1N \sum_n \Big(\operatorname{LSE}(z_n / T) - z_{n, y_n} / T\Big)

    ``logits`` of shape ``(N, K)``, integer ``labels`` of shape ``(N,)``.
    """
    z, y = _logits_and_labels(logits, labels)
    temperature = check_temperature(temperature)
    logp = log_softmax(z, temperature=temperature)
    return float(-np.mean(logp[np.arange(len(y)), y]))


def fit_temperature(logits, labels) -> float:
    r"""The temperature :math:`T > 0` that minimises the mean NLL of ``softmax(logits / T)``.

    With :math:`\beta = 1/T`, :math:`f(\beta) = \frac1N \sum_n \operatorname{LSE}(\beta z_n) - \beta z_{n,y_n}`
    is convex, with derivative

    .. math::

        f'(\beta) = \frac1N \sum_n \big(\E_{p_n}[z_n] - z_{n, y_n}\big),
        \qquad p_n = \operatorname{softmax}(\beta z_n),

    which increases with :math:`\beta` (its derivative is a mean of variances).  The
    minimiser is the root of :math:`f'`, found by Brent's method on :math:`\log\beta`
    (bracketed, to full double precision).

    Parameters
    ----------
    logits : array_like or torch.Tensor, shape (N, K)
        Held-out logits of a trained model (never the training set's).
    labels : array_like of int, shape (N,)

    Returns
    -------
    float
        The fitted temperature; ``T > 1`` softens an overconfident model.

    Raises
    ------
    ValueError
        When no finite positive minimiser exists: if every example is classified
        correctly with a margin, the NLL keeps falling as ``T -> 0``; if the true
        class scores at most the average logit everywhere, it falls as ``T -> inf``.

    References
    ----------
    C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger, "On Calibration of Modern Neural
    Networks", ICML 2017.
    """
    from scipy.optimize import brentq

    z, y = _logits_and_labels(logits, labels)
    true_logit = z[np.arange(len(y)), y]

    def slope(log_beta: float) -> float:  # f'(beta)
        p = softmax(z, temperature=math.exp(-log_beta))  # (N, K)
        return float(np.mean(np.sum(p * z, axis=-1) - true_logit))

    spread = float(np.max(z.max(axis=-1) - z.min(axis=-1))) if z.size else 0.0
    if spread == 0.0:
        raise ValueError("logits: every row is constant, so the NLL (log K) does not depend on T "
                         "and no temperature minimises it")
    # T(c z) = c T(z): search beta = 1/T relative to the logits' own scale
    scale = math.log(min(max(spread, 1e-290), 1e290))
    lo, hi = math.log(_BETA_MIN) - scale, math.log(_BETA_MAX) - scale
    if slope(hi) <= 0:
        raise ValueError(
            "logits/labels: the NLL keeps decreasing as T -> 0 (every example is classified "
            "correctly with a margin), so no finite temperature minimises it"
        )
    if slope(lo) >= 0:
        raise ValueError(
            "logits/labels: the NLL keeps decreasing as T -> infinity (the true classes score "
            "no better than average), so no finite temperature minimises it"
        )
    log_beta = brentq(slope, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps, maxiter=500)
    return math.exp(-log_beta)


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin statistics of a classifier's confidence (see :func:`reliability_diagram_data`).

    ``confidence`` and ``accuracy`` are NaN for empty bins.
    """

    bin_edges: np.ndarray  # (n_bins + 1,)
    confidence: np.ndarray  # (n_bins,) mean top probability in each bin
    accuracy: np.ndarray  # (n_bins,) fraction of correct top predictions in each bin
    counts: np.ndarray  # (n_bins,) number of samples in each bin

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean of |accuracy - confidence|."""
        filled = self.counts > 0
        gaps = np.abs(self.accuracy[filled] - self.confidence[filled])
        return float(np.sum(self.counts[filled] * gaps) / np.sum(self.counts))


def reliability_diagram_data(probs, labels, *, n_bins=15) -> ReliabilityDiagram:
    r"""Bin predictions by confidence; return each bin's confidence, accuracy and count.

    The confidence of a prediction is its largest probability, the prediction is the
    argmax (first index on ties).  Bin ``b`` is :math:`(b/M, (b+1)/M]` for
    ``M = n_bins`` equal-width bins (a confidence of exactly 0 goes into the first).

    Parameters
    ----------
    probs : array_like or torch.Tensor, shape (N, K)
        Predicted probabilities, each in ``[0, 1]``.
    labels : array_like of int, shape (N,)
    n_bins : int, default 15
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    p = _numpy(probs, "probs")
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] < 1:
        raise ValueError(f"probs must have shape (N, K) with N >= 1, got {p.shape}")
    if not (np.isfinite(p).all() and p.min() >= 0.0 and p.max() <= 1.0):
        raise ValueError("probs must be probabilities: finite values in [0, 1]")
    y = _labels(labels, p.shape[0], p.shape[1])
    confidence = p.max(axis=-1)  # (N,)
    correct = (p.argmax(axis=-1) == y).astype(np.float64)  # (N,)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)  # (N,)
    counts = np.bincount(which, minlength=n_bins)
    filled = counts > 0
    conf = np.full(n_bins, np.nan)
    acc = np.full(n_bins, np.nan)
    conf[filled] = np.bincount(which, weights=confidence, minlength=n_bins)[filled] / counts[filled]
    acc[filled] = np.bincount(which, weights=correct, minlength=n_bins)[filled] / counts[filled]
    return ReliabilityDiagram(edges, conf, acc, counts)


def expected_calibration_error(probs, labels, *, n_bins=15) -> float:
    r"""Expected calibration error (ECE) with equal-width confidence bins.

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{M} \frac{|B_b|}{N}\,
            \big|\operatorname{acc}(B_b) - \operatorname{conf}(B_b)\big|

    where :math:`B_b` holds the samples whose top probability lies in
    :math:`(\frac{b-1}{M}, \frac{b}{M}]`.  0 for a perfectly calibrated model on these
    bins, at most 1.  Arguments as in :func:`reliability_diagram_data`.

    References
    ----------
    M. P. Naeini, G. F. Cooper, M. Hauskrecht, "Obtaining Well Calibrated
    Probabilities Using Bayesian Binning", AAAI 2015.
    """
    return reliability_diagram_data(probs, labels, n_bins=n_bins).ece


def boltzmann_bandit(arm_means, temperature, *, n_steps=1000, n_runs=100, noise=1.0, rng=None):
    r"""Softmax (Boltzmann) exploration on a Gaussian multi-armed bandit.

    At each step every run picks arm ``a`` with probability
    :math:`\operatorname{softmax}(Q / T)_a`, where ``Q`` holds its sample-average
    reward estimates (initially 0), receives a reward drawn from
    :math:`\mathcal N(\mu_a, \sigma^2)` and updates :math:`Q_a`.  Small ``T`` exploits
    (greedy, may lock onto a bad arm), large ``T`` explores (close to uniform).

    Parameters
    ----------
    arm_means : array_like, shape (K,)
        True mean reward of each arm.
    temperature : float
    n_steps, n_runs : int
        Steps per run; independent runs, simulated together.
    noise : float
        Standard deviation of the rewards.
    rng : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray, shape (n_steps,)
        Expected regret per step, averaged over runs:
        :math:`\max_a \mu_a - \mu_{a_t}` (so its cumulative sum is the regret).

    References
    ----------
    R. S. Sutton, A. G. Barto, *Reinforcement Learning: An Introduction*, 2nd ed.,
    MIT Press, 2018, Sec. 2.8 and Exercise 2.2.
    """
    means = _numpy(arm_means, "arm_means")
    if means.ndim != 1 or means.size < 1:
        raise ValueError(f"arm_means must be a 1-D array of at least one arm, got shape {means.shape}")
    temperature = check_temperature(temperature)
    n_steps = check_positive_int(n_steps, "n_steps")
    n_runs = check_positive_int(n_runs, "n_runs")
    noise = float(noise)
    if not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    rng = np.random.default_rng(rng)
    k = means.size
    q = np.zeros((n_runs, k))  # estimates
    pulls = np.zeros((n_runs, k))
    runs = np.arange(n_runs)
    regret = np.empty(n_steps)
    best = means.max()
    for step in range(n_steps):
        log_p = log_softmax(q, temperature=temperature)  # (R, K)
        # Gumbel-max: argmax(log p + Gumbel) is a sample from p (Chapter 6)
        arm = np.argmax(log_p + rng.gumbel(size=(n_runs, k)), axis=-1)  # (R,)
        reward = means[arm] + noise * rng.standard_normal(n_runs)
        pulls[runs, arm] += 1
        q[runs, arm] += (reward - q[runs, arm]) / pulls[runs, arm]
        regret[step] = np.mean(best - means[arm])
    return regret
