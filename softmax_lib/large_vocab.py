r"""Softmax over very many classes: hierarchical and sampled softmax (Chapter 7).

A full softmax over :math:`K` classes costs :math:`O(K d)` per example (one dot
product of a :math:`d`-dimensional hidden state per class).  For a language model
with :math:`K = 50{,}000` words that is most of the work.  Two classic ways out:

* :class:`HierarchicalSoftmax` (Morin and Bengio, 2005; Mikolov et al., 2013):
  classes are the leaves of a binary tree, and a class's probability is the product
  of binary (sigmoid) decisions along its path.  With a Huffman tree built from
  class frequencies the expected path length is within one bit of the entropy of
  the class distribution: :math:`O(\log K)` per example, and a properly normalised
  distribution over all classes.
* :func:`sampled_softmax_loss` (Bengio and Senecal, 2008; Jean et al., 2015): the
  normaliser is estimated from :math:`m` classes drawn from a proposal :math:`Q`,
  with the log-Q correction.  Cheap, but the loss is biased (see its docstring).

This module needs torch (these are training-time tools); :mod:`softmax_lib.alternatives`
re-exports its names and imports it only on first use.
"""

from __future__ import annotations

import heapq
import math
import numbers

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ._array import check_positive_int

__all__ = ["zipf_probabilities", "huffman_code", "HierarchicalSoftmax", "sampled_softmax_loss"]


def zipf_probabilities(num_classes: int, exponent: float = 1.0) -> np.ndarray:
    r"""Zipf's law over ``num_classes`` ranks: :math:`p_k \propto k^{-s}`, :math:`k = 1..K`.

    Word frequencies in natural language roughly follow it with :math:`s \approx 1`;
    the book uses it as a stand-in for a vocabulary's unigram distribution.
    """
    num_classes = check_positive_int(num_classes, "num_classes")
    if not math.isfinite(exponent) or exponent < 0:
        raise ValueError(f"exponent must be finite and >= 0, got {exponent!r}")
    weights = np.arange(1, num_classes + 1, dtype=np.float64) ** -float(exponent)
    return weights / weights.sum()


def huffman_code(counts) -> tuple[list[list[int]], list[list[int]]]:
    r"""Huffman tree over classes with the given frequencies.

    Repeatedly merges the two least frequent subtrees (ties broken by creation
    order, so the tree is deterministic).  Internal nodes are numbered
    ``0 .. K-2`` with the root as ``0``.

    Returns
    -------
    paths : list of lists of int
        For each class, the internal nodes from the root down to its leaf.
    codes : list of lists of int
        The matching branch taken at each node (0 = first child, 1 = second).

    Notes
    -----
    The expected code length :math:`L = \sum_k p_k |\text{code}_k|` is optimal among
    prefix codes and satisfies :math:`H_2(p) \le L < H_2(p) + 1` (entropy in bits).
    One class gives one empty path.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a non-empty 1-d sequence, got shape {counts.shape}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("counts must be finite and >= 0")
    k = counts.size
    heap = [(float(c), i, i) for i, c in enumerate(counts)]  # (weight, order, node id)
    heapq.heapify(heap)
    children: dict[int, tuple[int, int]] = {}
    next_id = k
    while len(heap) > 1:
        w0, _, a = heapq.heappop(heap)
        w1, _, b = heapq.heappop(heap)
        children[next_id] = (a, b)
        heapq.heappush(heap, (w0 + w1, next_id, next_id))
        next_id += 1
    paths: list[list[int]] = [[] for _ in range(k)]
    codes: list[list[int]] = [[] for _ in range(k)]
    if k == 1:
        return paths, codes
    root = next_id - 1
    # Number internal nodes by a walk from the root (root = 0), iteratively.
    number = {root: 0}
    stack = [(root, [], [])]
    while stack:
        node, path, code = stack.pop()
        if node < k:
            paths[node], codes[node] = path, code
            continue
        here = number.setdefault(node, len(number))
        for bit, child in enumerate(children[node]):
            if child >= k:
                number.setdefault(child, len(number))
            stack.append((child, path + [here], code + [bit]))
    return paths, codes


class HierarchicalSoftmax(nn.Module):
    r"""Hierarchical softmax over a Huffman tree built from class frequencies.

    Each internal node :math:`n` has a vector :math:`w_n` and bias :math:`b_n`; at
    node :math:`n` a hidden state :math:`h` goes to the first child with
    probability :math:`\sigma(w_n^\top h + b_n)`.  A class's probability is the
    product along its path,

    .. math::

        p(y \mid h) = \prod_{(n, c) \in \text{path}(y)} \sigma\big(\pm (w_n^\top h + b_n)\big),

    with sign :math:`+` for branch ``c = 0`` and :math:`-` for ``c = 1``.  Since
    :math:`\sigma(t) + \sigma(-t) = 1` at every node, the probabilities of all
    leaves sum to 1.  The loss of one example touches only its path: on average
    :math:`L \le H_2 + 1` nodes for a Huffman tree, so :math:`O(L d)` instead of
    :math:`O(K d)`.

    Parameters
    ----------
    in_features : int
        Size ``d`` of the hidden state.
    class_counts : array_like
        Frequencies (or counts) of the ``K`` classes; they shape the tree only.

    Notes
    -----
    Parameters start at zero, so the initial model gives class :math:`k`
    probability :math:`2^{-|\text{path}_k|}`, already close to its frequency.
    Chapter 7.  References: Morin and Bengio (2005); Mikolov et al. (2013).
    """

    def __init__(self, in_features: int, class_counts):
        super().__init__()
        paths, codes = huffman_code(class_counts)
        k = len(paths)
        depth = max((len(p) for p in paths), default=0)
        nodes = torch.zeros(k, depth, dtype=torch.long)
        signs = torch.zeros(k, depth)
        mask = torch.zeros(k, depth, dtype=torch.bool)
        for c, (path, code) in enumerate(zip(paths, codes)):
            nodes[c, : len(path)] = torch.tensor(path, dtype=torch.long)
            signs[c, : len(code)] = 1.0 - 2.0 * torch.tensor(code, dtype=torch.get_default_dtype())
            mask[c, : len(path)] = True
        self.num_classes = k
        self.in_features = in_features
        self.weight = nn.Parameter(torch.zeros(max(k - 1, 0), in_features))  # (K-1, d)
        self.bias = nn.Parameter(torch.zeros(max(k - 1, 0)))  # (K-1,)
        self.register_buffer("path_nodes", nodes)  # (K, D)
        self.register_buffer("path_signs", signs)  # (K, D)
        self.register_buffer("path_mask", mask)  # (K, D)
        counts = np.asarray(class_counts, dtype=np.float64)
        lengths = np.array([len(p) for p in paths], dtype=np.float64)
        #: Mean path length weighted by the class frequencies (nodes per example).
        self.mean_path_length = float(lengths @ counts / counts.sum()) if counts.sum() > 0 else 0.0

    def log_prob(self, hidden, target):
        """``log p(target | hidden)``, shape ``(B,)``; touches only the target's path."""
        nodes = self.path_nodes[target]  # (B, D)
        w = functional.embedding(nodes, self.weight)  # (B, D, d): only the path's rows
        b = functional.embedding(nodes, self.bias[:, None])[..., 0]  # (B, D)
        logits = (w @ hidden[:, :, None])[..., 0] + b  # (B, D)
        terms = functional.logsigmoid(self.path_signs[target].to(logits.dtype) * logits)
        return torch.where(self.path_mask[target], terms, torch.zeros_like(terms)).sum(-1)

    def forward(self, hidden, target):
        """Mean negative log-likelihood of ``target`` (the training loss)."""
        return -self.log_prob(hidden, target).mean()

    def log_probs(self, hidden):
        """Log-probabilities of all ``K`` classes, shape ``(B, K)``: O(K d) work."""
        node_logits = hidden @ self.weight.T + self.bias  # (B, K-1)
        if self.num_classes == 1:
            return torch.zeros(hidden.shape[0], 1, dtype=hidden.dtype, device=hidden.device)
        logits = node_logits[:, self.path_nodes]  # (B, K, D)
        terms = functional.logsigmoid(self.path_signs.to(logits.dtype) * logits)
        return torch.where(self.path_mask, terms, torch.zeros_like(terms)).sum(-1)

    def predict_proba(self, hidden):
        """Probabilities of all classes, shape ``(B, K)``; each row sums to 1."""
        return self.log_probs(hidden).exp()


def sampled_softmax_loss(
    hidden, weight, bias, target, proposal, num_samples, *, rng=None, reduction="mean"
):
    r"""Cross-entropy with the normaliser estimated from sampled classes (log-Q correction).

    Draws :math:`m` = ``num_samples`` classes :math:`c_1..c_m` i.i.d. from the
    proposal :math:`Q` (shared by the batch), scores only those and the target
    :math:`y`, and returns

    .. math::

        \ell = \log \hat Z - s_y, \qquad
        \hat Z = e^{s_y} + \sum_{j=1}^{m} \frac{e^{s_{c_j}}}{m\,Q_{c_j}} [c_j \ne y],

    i.e. cross-entropy over the logits :math:`(s_y, s_{c_j} - \log(m Q_{c_j}))` with
    accidental hits of the target removed.  Cost :math:`O((m + 1) d)` per example
    instead of :math:`O(K d)`.

    Bias: :math:`\hat Z` is an unbiased importance-sampling estimate of the
    normaliser :math:`Z = \sum_k e^{s_k}`, but the loss takes its logarithm, so by
    Jensen's inequality :math:`\mathbb E[\ell] \le \log Z - s_y`: the sampled loss
    *underestimates* the full cross-entropy, by about
    :math:`\operatorname{Var}[\hat Z] / (2 Z^2) = O(1/m)`, and its gradient is biased
    by :math:`O(1/m)` too.  The bias vanishes when :math:`Q_k \propto e^{s_k}` on the
    non-target classes and shrinks as :math:`m` grows (Chapter 7).

    Parameters
    ----------
    hidden : torch.Tensor, shape (B, d)
    weight : torch.Tensor, shape (K, d)
    bias : torch.Tensor of shape (K,), or None
    target : torch.Tensor of int, shape (B,)
    proposal : array_like or torch.Tensor, shape (K,)
        Sampling probabilities (normalised here); classes with :math:`Q_k = 0` are never
        drawn, which biases the estimate of :math:`Z` unless their scores are negligible.
    num_samples : int
    rng : None, int or torch.Generator
    reduction : "mean", "sum" or "none"

    References
    ----------
    Y. Bengio and J.-S. Senecal, "Adaptive importance sampling to accelerate training
    of a neural probabilistic language model", IEEE Trans. Neural Networks 19 (2008).
    S. Jean, K. Cho, R. Memisevic and Y. Bengio, "On using very large target
    vocabulary for neural machine translation", ACL 2015.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    num_samples = check_positive_int(num_samples, "num_samples")
    q = torch.as_tensor(proposal, dtype=torch.float64).to(hidden.device)
    if q.ndim != 1 or q.shape[0] != weight.shape[0]:
        raise ValueError(f"proposal must have shape ({weight.shape[0]},), got {tuple(q.shape)}")
    if not bool(torch.isfinite(q).all()) or bool((q < 0).any()) or not float(q.sum()) > 0:
        raise ValueError("proposal must be finite, >= 0 and not all zero")
    q = q / q.sum()
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        rng = torch.Generator(device=q.device).manual_seed(int(rng))
    elif rng is not None and not isinstance(rng, torch.Generator):
        raise TypeError(f"rng must be None, an int seed or a torch.Generator, got {type(rng).__name__}")
    samples = torch.multinomial(q, int(num_samples), replacement=True, generator=rng)  # (m,)
    true_logit = (hidden * weight[target]).sum(-1)  # (B,)
    sampled_logits = hidden @ weight[samples].T  # (B, m)
    if bias is not None:
        true_logit = true_logit + bias[target]
        sampled_logits = sampled_logits + bias[samples]
    correction = torch.log(num_samples * q[samples]).to(sampled_logits.dtype)  # (m,)
    sampled_logits = sampled_logits - correction
    hits = samples[None, :] == target[:, None]  # (B, m) accidental hits
    sampled_logits = sampled_logits.masked_fill(hits, -math.inf)
    logits = torch.cat([true_logit[:, None], sampled_logits], dim=1)  # (B, 1 + m)
    loss = torch.logsumexp(logits, dim=1) - true_logit  # (B,)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss

