"""The Colab path: what a reader gets after one click on a chapter's Colab button.

A clean virtual environment (in a temporary folder) gets only what a Colab runtime
provides (Python, NumPy, SciPy, matplotlib, PyTorch, Triton, ipykernel, nbclient).
Then the notebooks' own setup cell runs in it, as it does in Colab: the test makes
``"google.colab" in sys.modules`` true and points git at this repository instead of
GitHub (``url.<repo>.insteadOf``), so the cell's exact command,
``pip install "softmax_lib[colab] @ git+<REPOSITORY_URL>"``, installs the library
from the committed HEAD of this checkout, through git, not from the working tree.
Finally every chapter notebook is executed, two at a time, by that environment's
kernel, in a folder outside the repository (so nothing can be imported from the
checkout), and must finish without errors and without anything on stderr.

Takes a few minutes (building the environment is most of it); it is part of
``make test`` (``make test-colab``).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from softmax_lib._meta import REPOSITORY_URL

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "chapters").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
# What a Colab runtime already has (pinned as the book's requirements.txt pins them,
# so pip reuses its cache and torch comes from the local CPU wheel).
COLAB_PROVIDES = ("numpy", "scipy", "matplotlib", "torch", "triton", "ipykernel", "nbclient", "nbformat")
JOBS = 2
CELL_TIMEOUT = 300

pytestmark = pytest.mark.slow


def _pins() -> list[str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return [f"{name}=={pins[name]}" if name in pins else name for name in COLAB_PROVIDES]


def _setup_cell_source() -> str:
    """The Colab setup cell, taken from the first chapter notebook (all are equal:
    tests/test_book_consistency.py checks that)."""
    nb = json.loads((ROOT / NOTEBOOKS[0]).read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    source = "".join(code[0]["source"])
    assert "google.colab" in source and REPOSITORY_URL in source, "the first code cell is not the Colab setup cell"
    return source


def _clean_env(tmp: pathlib.Path) -> dict[str, str]:
    """An environment like Colab's: nothing from this repository or its .venv."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TERM", "PIP_FIND_LINKS", "PIP_CERT", "PIP_DEFAULT_TIMEOUT",
            "PIP_DISABLE_PIP_VERSION_CHECK", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin)
    env["TMPDIR"] = str(tmp)
    env["JUPYTER_DATA_DIR"] = str(tmp / "jupyter-data")  # no user-level kernelspecs
    env["JUPYTER_CONFIG_DIR"] = str(tmp / "jupyter-config")
    env["IPYTHONDIR"] = str(tmp / "ipython")
    env["MPLCONFIGDIR"] = str(tmp / "mpl")
    # git sees this repository where the setup cell says GitHub
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text(f'[url "file://{ROOT}"]\n\tinsteadOf = {REPOSITORY_URL}\n')
    env["GIT_CONFIG_GLOBAL"] = str(gitconfig)
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


def _run(cmd, env, cwd, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


_EXECUTE = textwrap.dedent(
    """
    import json, sys, time
    import nbformat
    from nbclient import NotebookClient

    path, kernel, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3])
    nb = nbformat.read(path, as_version=4)
    # a last cell that tells which Python and which softmax_lib the kernel used
    nb.cells.append(nbformat.v4.new_code_cell(
        "import sys, json, softmax_lib\\n"
        "print(json.dumps({'python': sys.executable, 'softmax_lib': softmax_lib.__file__}))"))
    start = time.perf_counter()
    report = {"error": None}
    try:
        NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=False,
                       resources={"metadata": {"path": "."}}).execute()
    except Exception as err:
        report["error"] = f"{type(err).__name__}: {str(err)[-3000:]}"
    report["seconds"] = round(time.perf_counter() - start, 1)
    report["stderr"] = [
        "".join(o.get("text", "")) for c in nb.cells if c.cell_type == "code"
        for o in c.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr"
    ]
    last = nb.cells[-1].get("outputs", [])
    report["where"] = json.loads(last[0]["text"]) if last and "text" in last[0] else None
    print(json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def colab_env():
    """(python, env, workdir) of a Colab-like environment with softmax_lib installed
    by the notebooks' setup cell."""
    if not NOTEBOOKS:
        pytest.skip("no chapter notebooks yet")
    if shutil.which("git") is None:
        pytest.skip("git is needed to install the library the way Colab does")
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout with a commit; the Colab path installs the committed HEAD")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="softmax-colab-"))
    try:
        env = _clean_env(tmp)
        venv = tmp / "venv"
        base_python = getattr(sys, "_base_executable", sys.executable)
        _run([base_python, "-m", "venv", str(venv)], env, tmp)
        python = str(venv / "bin" / "python")
        env["PATH"] = str(venv / "bin") + os.pathsep + env["PATH"]
        env["VIRTUAL_ENV"] = str(venv)
        _run([python, "-m", "pip", "install", "-q", *_pins()], env, tmp, timeout=900)
        # The notebooks' setup cell, run as in Colab.
        cell = tmp / "setup_cell.py"
        cell.write_text(
            "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
            + _setup_cell_source()
        )
        _run([python, str(cell)], env, tmp, timeout=900)
        _run([python, "-m", "ipykernel", "install", "--sys-prefix", "--name", "colab-test"], env, tmp)
        (tmp / "execute.py").write_text(_EXECUTE)
        yield python, env, tmp, head.stdout.strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def executed(colab_env):
    """Run every notebook (JOBS at a time) from a folder outside the repository."""
    python, env, tmp, _ = colab_env

    def run(notebook: str) -> dict:
        workdir = tmp / "run" / pathlib.Path(notebook).stem
        workdir.mkdir(parents=True)
        shutil.copy(ROOT / notebook, workdir / "notebook.ipynb")
        result = subprocess.run(
            [python, str(tmp / "execute.py"), "notebook.ipynb", "colab-test", str(CELL_TIMEOUT)],
            env=env, cwd=workdir, capture_output=True, text=True, timeout=1200,
        )
        if result.returncode != 0 or not result.stdout.strip():
            return {"error": f"driver failed: {result.stderr[-3000:]}", "stderr": [], "where": None}
        return json.loads(result.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(max_workers=JOBS) as pool:
        return dict(zip(NOTEBOOKS, pool.map(run, NOTEBOOKS)))


def test_setup_cell_installs_the_committed_head_from_git(colab_env):
    python, env, tmp, head = colab_env
    out = _run(
        [python, "-c", "import importlib.metadata as m; print(m.distribution('softmax_lib').read_text('direct_url.json'))"],
        env, tmp,
    ).stdout
    direct = json.loads(out)
    assert direct["url"] == REPOSITORY_URL, direct
    vcs = direct["vcs_info"]
    assert (vcs["vcs"], vcs["commit_id"]) == ("git", head), f"installed {vcs}, HEAD is {head}"
    # the colab extra brought what Colab lacks
    _run([python, "-c", "import entmax, softmax_lib"], env, tmp)


@pytest.mark.parametrize("notebook", NOTEBOOKS or ["(none)"])
def test_notebook_runs_in_the_colab_environment(executed, colab_env, notebook):
    python, _, tmp, _ = colab_env
    report = executed[notebook]
    assert report["error"] is None, f"{notebook} failed in the Colab environment:\n{report['error']}"
    assert not report["stderr"], f"{notebook} wrote to stderr in the Colab environment:\n{report['stderr']}"
    where = report["where"]
    assert where is not None
    assert pathlib.Path(where["python"]).parent == pathlib.Path(python).parent, where
    # the library came from the installed package, not from the checkout
    assert str(tmp / "venv") in where["softmax_lib"] and str(ROOT) not in where["softmax_lib"], where
    print(f"{notebook}: {report['seconds']} s")
