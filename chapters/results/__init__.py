"""Measured GPU benchmark results (JSON) written by ``make bench-gpu``.

This folder sits beside the chapters that plot it and is installed inside the
library as ``softmax_lib.results`` (see pyproject.toml), so a notebook opened in
Colab, with no clone of the repository, reads the same files.  Load them with
``softmax_lib.bench.load_results(name)``.
"""
