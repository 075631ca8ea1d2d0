"""Hierarchical and sampled softmax (softmax_lib.large_vocab), checked against the full
softmax of torch, information-theory bounds and Monte Carlo averages."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from softmax_lib.alternatives import HierarchicalSoftmax, huffman_code, sampled_softmax_loss, zipf_probabilities


def _random_head(k, d, seed=0):
    torch.manual_seed(seed)
    head = HierarchicalSoftmax(d, zipf_probabilities(k)).double()
    torch.nn.init.normal_(head.weight, std=1.0)
    torch.nn.init.normal_(head.bias, std=1.0)
    return head


def test_huffman_codes_are_prefix_free_and_within_one_bit_of_the_entropy():
    for k in (2, 3, 7, 50, 513):
        p = zipf_probabilities(k, 1.1)
        paths, codes = huffman_code(p)
        words = ["".join(map(str, c)) for c in codes]
        assert len(set(words)) == k
        assert not any(a != b and b.startswith(a) for a, b in itertools.permutations(words, 2)) if k < 60 else True
        mean_length = sum(pi * len(c) for pi, c in zip(p, codes))
        entropy_bits = scipy.stats.entropy(p, base=2)
        assert entropy_bits - 1e-12 <= mean_length < entropy_bits + 1
        assert all(len(path) == len(code) and path[0] == 0 for path, code in zip(paths, codes))
        assert sorted({n for path in paths for n in path}) == list(range(k - 1))


def test_huffman_code_is_optimal_on_a_dyadic_distribution():
    # For p = (1/2, 1/4, 1/8, 1/8) the optimal lengths are -log2 p: 1, 2, 3, 3.
    _, codes = huffman_code([0.5, 0.25, 0.125, 0.125])
    assert [len(c) for c in codes] == [1, 2, 3, 3]
    assert huffman_code([3.0]) == ([[]], [[]])


def test_huffman_code_rejects_bad_counts():
    with pytest.raises(ValueError, match="counts"):
        huffman_code([])
    with pytest.raises(ValueError, match="counts"):
        huffman_code([1.0, -1.0])


@pytest.mark.parametrize("k", [1, 2, 5, 37, 1000])
def test_hierarchical_probabilities_over_all_classes_sum_to_one(k):
    head = _random_head(k, 6)
    hidden = torch.randn(9, 6, dtype=torch.float64)
    probs = head.predict_proba(hidden)
    assert probs.shape == (9, k)
    torch.testing.assert_close(probs.sum(-1), torch.ones(9, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.all(probs > 0)


def test_hierarchical_log_prob_of_the_target_equals_the_full_table_entry():
    head = _random_head(37, 6)
    hidden = torch.randn(20, 6, dtype=torch.float64)
    target = torch.randint(0, 37, (20,))
    table = head.log_probs(hidden)
    torch.testing.assert_close(head.log_prob(hidden, target), table[torch.arange(20), target], atol=1e-12, rtol=0)
    torch.testing.assert_close(head(hidden, target), F.nll_loss(table, target), atol=1e-12, rtol=0)


def test_hierarchical_initial_probabilities_are_powers_of_one_half_of_the_depth():
    counts = zipf_probabilities(20)
    head = HierarchicalSoftmax(3, counts)
    _, codes = huffman_code(counts)
    probs = head.predict_proba(torch.randn(2, 3))[0]
    expected = torch.tensor([0.5 ** len(c) for c in codes])
    torch.testing.assert_close(probs, expected)
    lengths = np.array([len(c) for c in codes])
    assert head.mean_path_length == pytest.approx(float(lengths @ counts))
    assert head.mean_path_length < math.log2(20) + 1


def test_hierarchical_training_reaches_the_full_softmax_loss_on_a_small_problem():
    # Data from a known softmax model (its loss is the Bayes optimum); the same small
    # network body with either head, trained alike, reaches the same loss.
    gen = torch.Generator().manual_seed(0)
    k, d, n = 6, 4, 1000
    teacher = torch.randn(k, d, generator=gen) * 1.5
    x = torch.randn(n, d, generator=gen)
    y = torch.multinomial(torch.softmax(x @ teacher.T, -1), 1, generator=gen)[:, 0]
    bayes = F.cross_entropy(x @ teacher.T, y).item()

    def train(kind):
        torch.manual_seed(0)
        body = torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.Tanh())
        if kind == "full":
            head = torch.nn.Linear(32, k)
            loss_fn = lambda h: F.cross_entropy(head(h), y)  # noqa: E731
        else:
            head = HierarchicalSoftmax(32, np.bincount(y.numpy(), minlength=k))
            loss_fn = lambda h: head(h, y)  # noqa: E731
        opt = torch.optim.Adam([*body.parameters(), *head.parameters()], lr=3e-2)
        for _ in range(150):
            opt.zero_grad()
            loss_fn(body(x)).backward()
            opt.step()
        with torch.no_grad():
            return loss_fn(body(x)).item()

    full, hierarchical = train("full"), train("hierarchical")
    assert abs(hierarchical - full) < 0.03
    assert hierarchical < bayes + 0.03


# ---------------------------------------------------------------------------- sampled


def _problem(k=50, d=8, b=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(k, d, generator=gen, dtype=torch.float64)
    bias = torch.randn(k, generator=gen, dtype=torch.float64)
    hidden = torch.randn(b, d, generator=gen, dtype=torch.float64)
    target = torch.randint(0, k, (b,), generator=gen)
    return weight, bias, hidden, target


def test_sampled_normaliser_is_unbiased_for_the_full_partition_function():
    weight, bias, hidden, target = _problem(b=8)
    q = zipf_probabilities(50, 0.7)
    logits = hidden @ weight.T + bias
    z = torch.logsumexp(logits, -1).exp()
    gen = torch.Generator().manual_seed(1)
    draws = torch.stack(
        [
            (sampled_softmax_loss(hidden, weight, bias, target, q, 10, rng=gen, reduction="none")
             + logits[torch.arange(8), target]).exp()
            for _ in range(4000)
        ]
    )  # (R, B): estimates of Z
    stderr = draws.std(0) / math.sqrt(draws.shape[0])
    assert torch.all((draws.mean(0) - z).abs() < 4 * stderr)


def test_sampled_loss_bias_is_negative_and_shrinks_with_the_number_of_samples():
    weight, bias, hidden, target = _problem()
    q = zipf_probabilities(50, 0.7)
    full = F.cross_entropy(hidden @ weight.T + bias, target).item()
    gen = torch.Generator().manual_seed(2)
    biases = []
    for m in (4, 32, 256):  # 150 draws each
        losses = [sampled_softmax_loss(hidden, weight, bias, target, q, m, rng=gen).item() for _ in range(150)]
        biases.append(np.mean(losses) - full)
    assert biases[0] < biases[1] < biases[2] < 0  # Jensen: the sampled loss underestimates
    assert abs(biases[2]) < 0.05 * abs(biases[0])


def test_sampled_loss_with_every_class_sampled_many_times_approaches_the_full_loss():
    weight, bias, hidden, target = _problem()
    full = F.cross_entropy(hidden @ weight.T + bias, target)
    sampled = sampled_softmax_loss(hidden, weight, bias, target, np.ones(50), 200000, rng=0)
    torch.testing.assert_close(sampled, full, atol=0.01, rtol=0)


def test_sampled_loss_same_seed_same_value_and_gradients_flow():
    weight, bias, hidden, target = _problem()
    weight.requires_grad_(True)
    a = sampled_softmax_loss(hidden, weight, bias, target, zipf_probabilities(50), 16, rng=3)
    b = sampled_softmax_loss(hidden, weight, bias, target, zipf_probabilities(50), 16, rng=3)
    assert torch.equal(a, b)
    a.backward()
    assert torch.isfinite(weight.grad).all() and weight.grad.abs().sum() > 0


def test_sampled_loss_rejects_bad_arguments():
    weight, bias, hidden, target = _problem()
    with pytest.raises(ValueError, match="proposal"):
        sampled_softmax_loss(hidden, weight, bias, target, np.ones(49), 5)
    with pytest.raises(ValueError, match="num_samples"):
        sampled_softmax_loss(hidden, weight, bias, target, np.ones(50), 0)
    with pytest.raises(TypeError, match="num_samples"):
        sampled_softmax_loss(hidden, weight, bias, target, np.ones(50), 5.0)
    with pytest.raises(ValueError, match="reduction"):
        sampled_softmax_loss(hidden, weight, bias, target, np.ones(50), 5, reduction="avg")
    with pytest.raises(TypeError, match="rng"):
        sampled_softmax_loss(hidden, weight, bias, target, np.ones(50), 5, rng="x")


@pytest.mark.parametrize("num_classes, error", [(0, ValueError), (-2, ValueError), (5.0, TypeError),
                                                (True, TypeError), ("5", TypeError)])
def test_zipf_refuses_a_bad_number_of_classes_by_name(num_classes, error):
    with pytest.raises(error, match="num_classes"):
        zipf_probabilities(num_classes)
