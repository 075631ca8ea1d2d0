"""Fixtures shared by the benchmark tests: a pretend GPU, its provenance, and a
deadline that passes after a given number of configurations."""

import pytest


@pytest.fixture
def here():
    """The provenance of one process on the H200 (the machine's, as bench.provenance gives it)."""
    return {"gpu": "NVIDIA H200", "driver": "580.159.04", "cuda": "13.0", "torch": "2.11.0", "triton": "3.6.0",
            "hostname": "vm", "date_utc": "2026-11-22T22:34:11+00:00"}


@pytest.fixture
def fake_gpu(monkeypatch):
    """``fake_gpu(provenance)``: from now on torch sees a CUDA GPU and the harness
    reports ``provenance`` (the measurements themselves are faked by each test)."""
    torch = pytest.importorskip("torch")
    from softmax_lib import bench

    def pretend(provenance):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(bench, "provenance", lambda: dict(provenance))

    return pretend


class _After:
    """A deadline that passes after ``n`` questions (one per configuration started)."""

    def __init__(self, n):
        self.left = n

    def passed(self):
        self.left -= 1
        return self.left < 0


@pytest.fixture
def deadline_after():
    """``deadline_after(n)``: a deadline that lets ``n`` configurations start, then passes."""
    return _After
