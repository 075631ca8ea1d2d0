"""The book agrees with itself: one repository URL, one notebook shape, one table of
contents, one bibliography.

- every notebook's first code cell is the Colab setup cell, with exactly the URL of
  ``softmax_lib._meta.REPOSITORY_URL``; ``_config.yml`` and ``pyproject.toml`` name
  the same repository, on branch ``main``;
- every notebook has the template's sections, a hidden solution cell with an
  ``assert`` for each exercise, no stored errors or stderr, execution counts
  1, 2, ..., n (a clean top-to-bottom run), and code lines of at most 79 characters;
- every ``{cite}`` key exists in references.bib (and no key is defined twice);
- the notebooks in chapters/ and the files in _toc.yml are the same set.
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import struct
import tomllib

import pytest
import yaml

from softmax_lib._meta import REPOSITORY_URL

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(
    p.relative_to(ROOT).as_posix()
    for p in (ROOT / "chapters").rglob("*.ipynb")
    if ".ipynb_checkpoints" not in p.parts
)
MARKDOWN_PAGES = sorted(
    [p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").rglob("*.md")] + ["intro.md"]
)

SETUP_CELL = f"""\
# Colab: install softmax_lib from the book's repository (no-op elsewhere).
import sys

if "google.colab" in sys.modules:
    import subprocess

    repository = "{REPOSITORY_URL}"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"softmax_lib[colab] @ git+{{repository}}"],
        check=True,
    )"""

REQUIRED_SECTIONS = ("Learning objectives", "Exercises", "Summary", "References")


def _load(path: str) -> dict:
    return json.loads((ROOT / path).read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _headings(cell: dict, level: int) -> list[str]:
    if cell["cell_type"] != "markdown":
        return []
    prefix = "#" * level + " "
    return [line[len(prefix):].strip() for line in _source(cell).splitlines() if line.startswith(prefix)]


notebook = pytest.mark.parametrize("path", NOTEBOOKS or [pytest.param(None, marks=pytest.mark.skip("no notebooks yet"))])


# ---------------------------------------------------------------------------------------
# One repository URL
# ---------------------------------------------------------------------------------------


def test_repository_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY_URL), REPOSITORY_URL


def test_config_names_the_same_repository_on_branch_main():
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    assert config["repository"]["url"] == REPOSITORY_URL
    assert config["repository"]["branch"] == "main"
    assert config["launch_buttons"]["colab_url"] == "https://colab.research.google.com"


def test_pyproject_homepage_is_the_repository():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["urls"]["Homepage"] == REPOSITORY_URL
    assert "colab" in project["optional-dependencies"]


@notebook
def test_first_code_cell_is_the_colab_setup_cell_with_the_repository_url(path):
    cells = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert cells, f"{path} has no code cell"
    first = cells[0]
    assert _source(first).strip() == SETUP_CELL, (
        f"{path}: the first code cell must be exactly the Colab setup cell:\n{SETUP_CELL}\n"
        f"found:\n{_source(first)}"
    )
    assert "remove-cell" in _tags(first), f"{path}: the setup cell must be tagged remove-cell"


# ---------------------------------------------------------------------------------------
# The template
# ---------------------------------------------------------------------------------------


@notebook
def test_notebook_starts_with_a_title_and_has_the_template_sections_in_order(path):
    cells = _load(path)["cells"]
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith("# "), (
        f"{path}: the first cell must be the '# Title' markdown cell"
    )
    titles = [h for c in cells for h in _headings(c, 1)]
    assert len(titles) == 1, f"{path}: exactly one '# ' title expected, found {titles}"
    sections = [h for c in cells for h in _headings(c, 2)]
    positions = []
    for name in REQUIRED_SECTIONS:
        assert name in sections, f"{path}: no '## {name}' section (sections: {sections})"
        positions.append(sections.index(name))
    assert positions == sorted(positions), f"{path}: sections out of order: {sections}"
    assert sections[0] == "Learning objectives", f"{path}: '## Learning objectives' must come first"
    assert sections[-2:] == ["Summary", "References"], f"{path}: must end with Summary, References"


def _exercise_cells(cells: list[dict]) -> list[dict]:
    """The cells from the one holding '## Exercises' to the one before '## Summary'."""
    start = next(i for i, c in enumerate(cells) if "Exercises" in _headings(c, 2))
    end = next(i for i, c in enumerate(cells) if "Summary" in _headings(c, 2))
    return cells[start:end]


@notebook
def test_each_exercise_has_a_hidden_solution_cell_with_an_assert(path):
    cells = _exercise_cells(_load(path)["cells"])
    solutions = 0
    for previous, cell in zip(cells, cells[1:]):
        if cell["cell_type"] != "code":
            continue
        solutions += 1
        head = _source(cell).strip().splitlines()[0] if _source(cell).strip() else ""
        assert previous["cell_type"] == "markdown", f"{path}: solution cell {head!r} does not follow its exercise"
        assert "hide-cell" in _tags(cell), f"{path}: solution cell {head!r} must be tagged hide-cell"
        # an assert statement, or a testing assertion (np.testing.assert_allclose, torch.testing.assert_close)
        checks = re.search(r"^\s*assert\b|\bassert_\w*\(", _source(cell), re.M)
        assert checks, f"{path}: solution cell {head!r} has no assert"
    assert 3 <= solutions <= 5, f"{path}: {solutions} exercises with solutions (the template asks for 3 to 5)"
    statements = [c for c, nxt in zip(cells, cells[1:]) if c["cell_type"] == "markdown" and nxt["cell_type"] == "code"]
    assert len(statements) == solutions
    # every statement opens the same way: **Exercise 3.** or **Exercise 3 (a title).**
    for number, statement in enumerate(statements, start=1):
        heading = re.search(r"^\*\*Exercise (\d+)(?: \([^\n]+?\))?\.\*\* ", _source(statement), re.M)
        assert heading, f"{path}: exercise {number} has no heading '**Exercise {number}.** ' or '**Exercise {number} (title).** '"
        assert int(heading.group(1)) == number, f"{path}: exercise {heading.group(1)} where {number} was expected"
    # the website labels a hidden cell's toggle "Show solution" (_config.yml): only
    # solutions may be hidden
    hidden = [c for c in _load(path)["cells"] if any(t.startswith("hide-") for t in _tags(c))]
    assert len(hidden) == solutions, f"{path}: {len(hidden)} hidden cells, {solutions} of them solutions"


@notebook
def test_notebook_has_no_stored_errors_or_stderr(path):
    for i, cell in enumerate(_load(path)["cells"]):
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error", f"{path}: cell {i} stores an error: {output.get('ename')}"
            assert not (output["output_type"] == "stream" and output.get("name") == "stderr"), (
                f"{path}: cell {i} stores stderr output: {''.join(output.get('text', ''))[:300]}"
            )


@notebook
def test_execution_counts_are_one_to_n_in_order(path):
    counts = [c.get("execution_count") for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), (
        f"{path}: execution counts {counts}; run `make execute` (a clean top-to-bottom run)"
    )


# PEP 8's limit: with _css/book.css a 79-character line fits the website's code column
# from 1280 px wide (tests/test_site_browser.py checks the rendered pages) and Colab's.
# It holds for what a cell prints too (stream text and plain-text results; an 80th
# character scrolled sideways in the browser test), tabs counted as the spaces they show.
LINE_LIMIT = 79


def _printed_text(output: dict) -> str:
    if output.get("output_type") == "stream":
        text = output.get("text", "")
    else:
        text = output.get("data", {}).get("text/plain", "")
    return (text if isinstance(text, str) else "".join(text)).expandtabs()


@notebook
def test_code_and_printed_lines_fit_the_column(path):
    texts = []  # (where, text): each code cell's source, then what it printed
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] == "code":
            texts.append((f"cell {i} code", _source(cell)))
            texts += [(f"cell {i} output", _printed_text(o)) for o in cell.get("outputs", [])]
    long = [
        f"{where}, line {j + 1} ({len(line)} characters): {line.strip()[:60]}"
        for where, text in texts
        for j, line in enumerate(text.splitlines())
        if len(line) > LINE_LIMIT
    ]
    assert not long, f"{path}: lines over {LINE_LIMIT} characters:\n" + "\n".join(long)


#: Widest stored figure, in pixels.  The website's text column is 688 px wide and
#: figures are drawn at 100 dpi, so a figure wider than 7.6 in is shown below 90 % of
#: its size; at 10 in its 10 pt labels came out 6 to 8 px tall.
FIGURE_WIDTH_LIMIT = 760


@notebook
def test_every_figure_fits_the_text_column(path):
    wide = []
    for i, cell in enumerate(_load(path)["cells"]):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                header = base64.b64decode(png[:44])  # the IHDR chunk: width, height
                assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path}: cell {i} image/png is not a PNG"
                width, height = struct.unpack(">II", header[16:24])
                if width > FIGURE_WIDTH_LIMIT:
                    wide.append(f"cell {i}: {width} x {height} px")
    assert not wide, f"{path}: figures wider than {FIGURE_WIDTH_LIMIT} px (make them at most 7.6 in wide):\n" + "\n".join(wide)


@notebook
def test_every_figure_has_alt_text(path):
    """Screen readers read a figure's alt text.  MyST-NB takes it from the cell's
    metadata (mystnb.image.alt), applied to every image of the cell, so a cell draws
    one figure; an animation player gets its text from plotting.animation_html(alt=...).
    """
    problems = []
    for i, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        outputs = cell.get("outputs", [])
        images = sum("image/png" in o.get("data", {}) for o in outputs)
        if images:
            alt = cell["metadata"].get("mystnb", {}).get("image", {}).get("alt")
            if not isinstance(alt, str) or len(alt.strip()) < 40:
                problems.append(f"cell {i}: {images} figure(s), alt text {alt!r}")
            elif "$" in alt or "\\" in alt:
                problems.append(f"cell {i}: alt text is read aloud, write it without TeX: {alt[:60]!r}")
            if images > 1:
                problems.append(f"cell {i}: {images} figures share one alt text; split the cell")
        for o in outputs:
            html = o.get("data", {}).get("text/html", "")
            html = html if isinstance(html, str) else "".join(html)
            player = re.search(r'<img id="_anim_img[0-9a-f]*"([^>]*)>', html)
            if player and "alt=" not in player.group(1):
                problems.append(f"cell {i}: animation without alt text (animation_html(alt=...))")
    assert not problems, f"{path}:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------
# Citations
# ---------------------------------------------------------------------------------------


def _bib_keys() -> list[str]:
    text = (ROOT / "references.bib").read_text(encoding="utf-8")
    return re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", text, re.M)


def _cited_keys() -> dict[str, set[str]]:
    """Citation key -> pages citing it, over every notebook and markdown page."""
    texts = {}
    for path in NOTEBOOKS:
        texts[path] = "\n".join(_source(c) for c in _load(path)["cells"] if c["cell_type"] == "markdown")
    for path in MARKDOWN_PAGES:
        texts[path] = (ROOT / path).read_text(encoding="utf-8")
    cited: dict[str, set[str]] = {}
    for path, text in texts.items():
        for group in re.findall(r"\{cite(?::[a-z]+)?\}`([^`]+)`", text):
            for key in group.split(","):
                cited.setdefault(key.strip(), set()).add(path)
    return cited


def test_references_bib_defines_each_key_once():
    keys = _bib_keys()
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    assert not duplicates, f"references.bib defines these keys more than once: {duplicates}"


def test_every_cited_key_is_in_references_bib():
    known = set(_bib_keys())
    missing = {key: sorted(pages) for key, pages in _cited_keys().items() if key not in known}
    assert not missing, f"cited but not in references.bib: {missing}"


# ---------------------------------------------------------------------------------------
# Table of contents
# ---------------------------------------------------------------------------------------


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return files


def test_toc_lists_every_notebook_and_every_back_page():
    listed = {f.removesuffix(".ipynb").removesuffix(".md") for f in _toc_files()}
    pages = {p.removesuffix(".ipynb") for p in NOTEBOOKS} | {p.removesuffix(".md") for p in MARKDOWN_PAGES}
    missing = sorted(pages - listed)
    assert not missing, f"in chapters/ but not in _toc.yml: {missing}"


def test_every_toc_entry_exists():
    files = _toc_files()
    assert len(files) == len(set(files)), "a file is listed twice in _toc.yml"
    absent = [f for f in files if not any((ROOT / f"{f.removesuffix('.ipynb').removesuffix('.md')}{ext}").is_file()
                                          for ext in (".ipynb", ".md"))]
    assert not absent, f"listed in _toc.yml but missing: {absent}"


def _table_cells(line: str) -> int:
    """Cells of one Markdown table row: the pipes that are not escaped, less one."""
    return len(re.findall(r"(?<!\\)\|", line.strip())) - 1


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_every_printed_table_has_as_many_cells_in_each_row_as_columns(path):
    # a '|' inside a cell that is not escaped splits it, and the website shows the
    # table as a paragraph of pipes (softmax_lib.notebook.markdown_table escapes them)
    for index, cell in enumerate(_load(path)["cells"]):
        for output in cell.get("outputs", []):
            text = output.get("data", {}).get("text/markdown")
            lines = [line for line in _source({"source": text or ""}).splitlines()
                     if line.startswith("|")]
            if len(lines) < 2 or not re.fullmatch(r"\|(-+\|)+", lines[1].strip()):
                continue
            width = _table_cells(lines[0])
            assert [_table_cells(line) for line in lines] == [width] * len(lines), \
                f"{path}, cell {index}: a table row with the wrong number of cells"
