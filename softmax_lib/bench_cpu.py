"""CPU benchmark: ``softmax_lib`` against ``scipy.special`` (speed and accuracy, one run).

    python -m softmax_lib.bench_cpu            # or: make bench-cpu

For each shape it times ``softmax``, ``log_softmax`` and ``logsumexp`` from both
libraries, interleaving the two so that a busy machine slows both alike, and
reports the best of several repeats and the ratio (SciPy time / ours: above 1
means we are faster).  Accuracy is the largest error in float64 ulp against a
60-digit mpmath reference, over rows drawn at several logit scales.  Timings
belong in this script, never in tests: machines are noisy.
"""

from __future__ import annotations

import argparse
import timeit

import numpy as np

from . import core

SHAPES = [(1000, 1000), (100_000, 10), (10, 100_000), (64, 16)]
#: Logit scales for the accuracy check: well-conditioned rows, where an error in ulp
#: measures the algorithm rather than the conditioning of exp (which grows with
#: |x_i - max|, the same for every method; see tests/test_core.py for large scales).
SCALES = [1e-2, 0.3, 1.0]


def _functions():
    import scipy.special as ss

    return {
        "softmax": (lambda x: core.softmax(x), lambda x: ss.softmax(x, axis=-1)),
        "log_softmax": (lambda x: core.log_softmax(x), lambda x: ss.log_softmax(x, axis=-1)),
        "logsumexp": (lambda x: core.logsumexp(x), lambda x: ss.logsumexp(x, axis=-1)),
    }


def time_pair(ours, theirs, x, *, repeat: int = 9, budget_s: float = 0.05) -> tuple[float, float]:
    """Best-of-``repeat`` seconds per call for both functions, measured interleaved."""
    number = max(1, int(budget_s / max(_once(ours, x), 1e-7)))
    best_ours, best_theirs = np.inf, np.inf
    for _ in range(repeat):
        best_ours = min(best_ours, timeit.timeit(lambda: ours(x), number=number) / number)
        best_theirs = min(best_theirs, timeit.timeit(lambda: theirs(x), number=number) / number)
    return best_ours, best_theirs


def _once(fn, x) -> float:
    return timeit.timeit(lambda: fn(x), number=1)


def _exact(name: str, row: np.ndarray) -> np.ndarray:
    import mpmath

    with mpmath.workdps(60):
        exps = [mpmath.exp(mpmath.mpf(float(v))) for v in row]
        total = mpmath.fsum(exps)
        if name == "softmax":
            return np.array([float(e / total) for e in exps])
        if name == "log_softmax":  # -log sum_j exp(x_j - x_i): no cancellation near 0
            xs = [mpmath.mpf(float(v)) for v in row]
            return np.array([float(-mpmath.log(mpmath.fsum(mpmath.exp(xj - xi) for xj in xs))) for xi in xs])
        return np.array([float(mpmath.log(total))])


def max_ulp_error(fn, name: str, *, rows: int = 60, width: int = 24, seed: int = 0) -> float:
    """Largest |computed - exact| / ulp(exact) over random rows at several scales."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for scale in SCALES:
        x = rng.standard_normal((rows, width)) * scale
        got = np.asarray(fn(x)).reshape(rows, -1)
        for r in range(rows):
            exact = _exact(name, x[r])
            ulp = np.spacing(np.abs(exact))
            err = np.abs(got[r] - exact) / ulp
            worst = max(worst, float(err.max()))
    return worst


def run(shapes=SHAPES, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    results = []
    functions = _functions()
    for name, (ours, theirs) in functions.items():
        ulp_ours = max_ulp_error(ours, name)
        ulp_theirs = max_ulp_error(theirs, name)
        for shape in shapes:
            x = rng.standard_normal(shape) * 5
            t_ours, t_theirs = time_pair(ours, theirs, x)
            results.append(
                {
                    "function": name,
                    "shape": shape,
                    "ours_ms": t_ours * 1e3,
                    "scipy_ms": t_theirs * 1e3,
                    "speedup": t_theirs / t_ours,
                    "ours_max_ulp": ulp_ours,
                    "scipy_max_ulp": ulp_theirs,
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import scipy

    print(f"numpy {np.__version__}, scipy {scipy.__version__}; float64; best of 9, interleaved")
    header = f"{'function':<12} {'shape':>14} {'ours ms':>9} {'scipy ms':>9} {'scipy/ours':>10} {'ulp ours':>9} {'ulp scipy':>9}"
    print(header)
    print("-" * len(header))
    for r in run(seed=args.seed):
        print(
            f"{r['function']:<12} {str(r['shape']):>14} {r['ours_ms']:9.3f} {r['scipy_ms']:9.3f} "
            f"{r['speedup']:10.2f} {r['ours_max_ulp']:9.2f} {r['scipy_max_ulp']:9.2f}"
        )


if __name__ == "__main__":
    main()
