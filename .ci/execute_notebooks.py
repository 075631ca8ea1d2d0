"""Execute chapter notebooks in place, top to bottom, in a fresh kernel each
(what `make execute` runs before committing outputs).

    python .ci/execute_notebooks.py                 # every notebook under chapters/
    python .ci/execute_notebooks.py chapters/02_stability/stability.ipynb
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time
from concurrent.futures import ProcessPoolExecutor

ROOT = pathlib.Path(__file__).resolve().parents[1]


def execute(path: str) -> tuple[str, float]:
    import nbformat
    from nbclient import NotebookClient

    nb_path = pathlib.Path(path)
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(nb_path.parent)}},
    )
    client.execute()
    elapsed = time.perf_counter() - start
    nbformat.write(nb, nb_path)
    return str(nb_path), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    paths = args.notebooks or sorted(
        str(p) for p in (ROOT / "chapters").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts
    )
    os.environ.setdefault("PYTHONHASHSEED", "0")
    failed = False
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for path, future in [(p, pool.submit(execute, p)) for p in paths]:
            try:
                _, elapsed = future.result()
                print(f"{elapsed:6.1f} s  {path}")
            except Exception as err:  # report every failure, then exit non-zero
                failed = True
                print(f"FAILED  {path}: {type(err).__name__}: {str(err)[-2000:]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
