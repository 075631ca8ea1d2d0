"""The built website, opened in a real browser (headless Chromium through Playwright).

Every HTML page of the built book is served from localhost and loaded with all
other network access blocked (the site must work offline: no CDN). On every page:
the math is typeset by the self-hosted MathJax (no raw TeX left, no TeX errors),
every image has loaded and has alt text (words, not a file name), the console shows
no error, no request to the site fails, every internal link (and its #anchor)
resolves, no code-cell input or output and no table needs a sideways scrollbar at
1280 px, no glued number is left in Python's e-notation,
nothing widens the page on a 390 px phone and no inline formula is cut off there,
and each notebook page's Colab button opens that notebook from the repository in
``softmax_lib._meta``. The search page finds "logsumexp", the theme switch turns
dark mode on and off, and the page's Contents marks the section being read. A screenshot of each page is saved under
``_build/screenshots/``.

    make test-browser                                    # after make test-book
    SOFTMAX_BOOK_SITE=/path/to/_build/html pytest -m browser tests/test_site_browser.py

The pages are discovered from the built site, so whatever chapters exist are
covered. Needs Debian's Chromium at /usr/bin/chromium (never downloads a browser).
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import re
import shutil
import threading
import urllib.parse

import pytest

from softmax_lib._meta import REPOSITORY_URL

pytestmark = pytest.mark.browser

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = pathlib.Path(os.environ.get("SOFTMAX_BOOK_SITE", ROOT / "_build" / "html")).resolve()
SCREENSHOTS = SITE.parent / "screenshots"
CHROMIUM = os.environ.get("SOFTMAX_BOOK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLAB = "https://colab.research.google.com/github/"
MATHJAX = "_static/mathjax/tex-chtml.js"
# Folders of the built site that hold assets and sources, not pages.
NOT_PAGES = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static", "_panels_static"}

if not (SITE / "index.html").is_file():
    pytest.skip(
        f"no built site at {SITE}: run `make test-book` (or `make book`) first, "
        "or point SOFTMAX_BOOK_SITE at a _build/html folder",
        allow_module_level=True,
    )
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"Chromium not found at {CHROMIUM}: install Debian's package (apt-get install -y chromium); "
        "these tests never download a browser",
        allow_module_level=True,
    )

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in requirements.txt")


def _discover_pages() -> list[str]:
    """Every HTML page of the site, as a path relative to the site root."""
    pages = []
    for path in sorted(SITE.rglob("*.html")):
        rel = path.relative_to(SITE)
        if rel.parts[0] in NOT_PAGES or rel.name == "index.html":
            continue  # index.html is only a redirect to the root page (tested below)
        pages.append(rel.as_posix())
    return pages


PAGES = _discover_pages()


def _notebook_source(page: str) -> str | None:
    """The repository path of the notebook a page was built from, or None."""
    stem = page.removesuffix(".html")
    if (SITE / "_sources" / f"{stem}.ipynb").is_file() or (ROOT / f"{stem}.ipynb").is_file():
        return f"{stem}.ipynb"
    return None


# ---------------------------------------------------------------------------------------
# Fixtures: a local web server and one browser for the module
# ---------------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def base_url():
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module", autouse=True)
def _screenshot_folder():
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)


class _Recorder:
    """Console errors, page errors, failed or refused requests seen by one page."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        self.external: list[str] = []

    def attach(self, page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda err: self.console_errors.append(f"uncaught: {err}"))
        page.on("requestfailed", self._request_failed)
        page.on("response", self._response)

    def _console(self, msg) -> None:
        if msg.type == "error":
            self.console_errors.append(f"{msg.text} ({msg.location.get('url', '')})")

    def _request_failed(self, request) -> None:
        if request.url.startswith(self.base_url):
            self.failed.append(f"{request.url}: {request.failure}")

    def _response(self, response) -> None:
        if response.url.startswith(self.base_url) and response.status >= 400:
            self.failed.append(f"{response.url}: HTTP {response.status}")

    def route(self, route) -> None:
        """Serve only the local site; record (and refuse) everything else."""
        url = route.request.url
        if url.startswith(self.base_url) or url.startswith("data:") or url.startswith("blob:"):
            route.continue_()
        else:
            self.external.append(url)
            route.abort()


@pytest.fixture()
def page_and_recorder(browser, base_url):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, color_scheme="light")
    recorder = _Recorder(base_url)
    context.route("**/*", recorder.route)
    page = context.new_page()
    recorder.attach(page)
    try:
        yield page, recorder
    finally:
        context.close()


def _wait_for_mathjax(page) -> None:
    page.wait_for_function(
        "() => !window.MathJax || (window.MathJax.startup && window.MathJax.startup.promise"
        " && (window.__mjxDone || (window.MathJax.startup.promise.then(() => { window.__mjxDone = true; }), false)))",
        timeout=30_000,
    )


def _screenshot_name(page_path: str, suffix: str = "") -> pathlib.Path:
    return SCREENSHOTS / (page_path.removesuffix(".html").replace("/", "__") + suffix + ".png")


# JavaScript run in each page after it has loaded.
_VISIBLE_TEXT_JS = """() => {
    const clone = document.querySelector('main') ? document.querySelector('main').cloneNode(true)
                                                  : document.body.cloneNode(true);
    clone.querySelectorAll('pre, code, script, style, mjx-container, .highlight, textarea')
         .forEach(e => e.remove());
    return clone.textContent;
}"""
_IMAGES_JS = """async () => {
    const imgs = Array.from(document.images);
    await Promise.all(imgs.map(img => img.complete ? null : img.decode().catch(() => null)));
    return imgs.map(img => ({src: img.currentSrc || img.src, ok: img.complete && img.naturalWidth > 0,
                             alt: (img.getAttribute('alt') || '').trim(),
                             // alt="" marks a decorative image, right when its link has words
                             decorative: img.getAttribute('alt') === '' &&
                                         !!(img.closest('a') && img.closest('a').textContent.trim())}));
}"""
_WIDE_CODE_JS = """() => [...document.querySelectorAll('div.cell_input pre, div.cell_output pre')]
  .filter(pre => pre.offsetParent !== null && pre.scrollWidth > pre.clientWidth + 1)
  .map(pre => [pre.scrollWidth, pre.innerText.split('\\n')
    .reduce((a, b) => (b.length > a.length ? b : a), '')])"""
# A table wider than its column scrolls inside its box, hiding its last columns.
_WIDE_TABLE_JS = """() => [...document.querySelectorAll('article table')]
  .filter(t => t.offsetParent !== null && t.scrollWidth > t.parentElement.clientWidth + 1)
  .map(t => [t.scrollWidth, t.parentElement.clientWidth,
             [...t.querySelectorAll('th')].map(th => th.textContent.trim()).join(' | ').slice(0, 80)])"""
# A number glued into the prose is typeset by _ext/typeset_numbers.py: no 1.9e-07 left.
_RAW_GLUED_JS = r"""() => [...document.querySelectorAll('span.pasted-text')]
  .map(s => s.textContent).filter(t => /\d[eE][+-]?\d|^-\d/.test(t.trim()))"""
_MATH_JS = """() => ({
    containers: document.querySelectorAll('mjx-container').length,
    errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                 .map(e => e.getAttribute('data-mjx-error') || e.textContent),
    undefinedMacros: Array.from(document.querySelectorAll('mjx-container [style*="color: red"]'))
                          .map(e => e.textContent),
    pending: Array.from(document.querySelectorAll('.math')).filter(e => !e.querySelector('mjx-container'))
                  .map(e => e.textContent.slice(0, 80)),
    scripts: Array.from(document.scripts).map(s => s.src).filter(s => s.includes('mathjax') || s.includes('MathJax')),
})"""
# Inline math is never broken across lines by MathJax 3: a formula wider than its
# paragraph is cut off at the right edge (it does not widen the page).
_CLIPPED_MATH_JS = """() => [...document.querySelectorAll('mjx-container:not([display="true"])')]
  .map(m => {
    let block = m.parentElement;
    while (block && getComputedStyle(block).display.startsWith('inline')) block = block.parentElement;
    const r = m.getBoundingClientRect(), b = block.getBoundingClientRect();
    return [Math.round(r.width), Math.round(b.width), r.right > b.right + 1,
            (m.querySelector('mjx-assistive-mml') || m).textContent.slice(0, 60)];
  })
  .filter(x => x[0] > 0 && x[2])"""
# Display math scrolls inside its own box when it is wider than the column; book's
# _css/fit_math.js shrinks one that is at most a quarter too wide (to 80 % at least).
_WIDE_DISPLAY_MATH_JS = """() => [...document.querySelectorAll('mjx-container[display="true"]')]
  .filter(m => m.clientWidth > 0)
  .map(m => [m.scrollWidth, m.clientWidth, m.dataset.fitScale || null,
             (m.querySelector('mjx-assistive-mml') || m).textContent.slice(0, 60)])"""
_LINKS_JS = "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"


def _ids_of(path: pathlib.Path) -> set[str]:
    return set(re.findall(r"""\bid=["']([^"']+)["']""", path.read_text(encoding="utf-8", errors="replace")))


def _check_links(page_path: str, hrefs: list[str], base_url: str) -> list[str]:
    """Local links must name a file of the site, and an #anchor must exist in it."""
    problems = []
    for href in sorted(set(hrefs)):
        if not href.startswith(base_url):
            continue  # external (repository, Colab, DOIs): not reachable offline
        parsed = urllib.parse.urlsplit(href)
        rel = urllib.parse.unquote(parsed.path)[1:]
        target = SITE / rel
        if rel == "" or rel.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"{href}: no such file {target.relative_to(SITE)}")
            continue
        fragment = urllib.parse.unquote(parsed.fragment)
        if fragment and target.suffix == ".html" and fragment not in _ids_of(target):
            problems.append(f"{href}: no element with id {fragment!r} in {target.relative_to(SITE)}")
    return problems


# ---------------------------------------------------------------------------------------
# Every page
# ---------------------------------------------------------------------------------------


def test_the_site_has_pages():
    assert PAGES, f"no HTML pages found in {SITE}"
    assert "search.html" in PAGES


@pytest.mark.parametrize("page_path", PAGES)
def test_page_renders_offline_with_math_images_links_and_no_errors(page_and_recorder, base_url, page_path):
    page, recorder = page_and_recorder
    page.goto(base_url + page_path, wait_until="load")
    _wait_for_mathjax(page)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(_screenshot_name(page_path)))

    problems: list[str] = []
    html = (SITE / page_path).read_text(encoding="utf-8")
    math = page.evaluate(_MATH_JS)
    has_math = 'class="math' in html
    if has_math:
        if not any(src.split("?")[0].endswith(MATHJAX) for src in math["scripts"]):
            problems.append(f"MathJax is not the self-hosted {MATHJAX}: {math['scripts']}")
        if math["containers"] == 0:
            problems.append("the page has math but MathJax typeset nothing (no mjx-container)")
        if math["pending"]:
            problems.append(f"math left untypeset: {math['pending'][:3]}")
    if math["errors"]:
        problems.append(f"TeX errors: {math['errors'][:5]}")
    if math["undefinedMacros"]:
        problems.append(f"undefined TeX macros (shown in red): {math['undefinedMacros'][:5]}")
    text = page.evaluate(_VISIBLE_TEXT_JS)
    for raw in ("$$", "\\(", "\\)", "\\[", "\\begin{"):
        if raw in text:
            where = text.index(raw)
            problems.append(f"raw TeX {raw!r} in the visible text: ...{text[max(0, where - 60):where + 60]!r}...")
    # a Markdown table (sl.notebook.table) shown as text: its rule row, "---" or Sphinx's em dash
    rule = re.search(r"\|(?:-{3,}|\u2014|\u2013)\|", text)
    if rule:
        where = rule.start()
        problems.append(f"unrendered Markdown table: ...{text[max(0, where - 60):where + 60]!r}...")

    for image in page.evaluate(_IMAGES_JS):
        if not image["ok"]:
            problems.append(f"image not loaded: {image['src']}")
        # a screen reader reads the alt text: a figure needs words, not its file name
        # (notebook figures take theirs from the cell metadata mystnb.image.alt)
        if image["decorative"]:
            continue
        if not image["alt"] or re.search(r"\.(png|jpe?g|svg|gif)$|_images/", image["alt"]):
            problems.append(f"image without alt text: {image['src'][-60:]} (alt={image['alt']!r})")

    problems += _check_links(page_path, page.evaluate(_LINKS_JS), base_url)
    # Layout: at 1280 px no code-cell input or printed output needs a sideways scrollbar
    # (the notebooks keep code within 79 characters and print within 80, and book.css
    # sizes code to fit) ...
    for width, line in page.evaluate(_WIDE_CODE_JS):
        problems.append(f"code cell scrolls sideways at 1280 px ({width} px): {line!r}")
    for need, room, headings in page.evaluate(_WIDE_TABLE_JS):
        problems.append(f"table scrolls sideways at 1280 px ({need} px in {room}): {headings!r}")
    for glued in page.evaluate(_RAW_GLUED_JS):
        problems.append(f"glued number not typeset (e-notation or a hyphen for minus): {glued!r}")
    for need, room, scale, formula in page.evaluate(_WIDE_DISPLAY_MATH_JS):
        if need > room + 1 or scale != "1":  # fits at full size (and fit_math.js ran)
            problems.append(f"at 1280 px display math needs {need} px of {room} (scale {scale}): {formula!r}")
    # ... and on a phone nothing pushes the whole page sideways, and no inline formula
    # is wider than its paragraph (wide formulas belong in display math).
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    if overflow > 1:
        problems.append(f"at 390 px the page is {overflow} px wider than the screen")
    for width, room, _, formula in page.evaluate(_CLIPPED_MATH_JS):
        problems.append(f"at 390 px inline math {width} px wide is cut off ({room} px of room): {formula!r}")
    page.wait_for_timeout(200)  # fit_math.js refits on the next frame after a resize
    for need, room, scale, formula in page.evaluate(_WIDE_DISPLAY_MATH_JS):
        if need > room + 1:  # more than a quarter too wide: split it (aligned, gathered)
            problems.append(f"at 390 px display math scrolls: {need} px in {room} (scale {scale}): {formula!r}")
    page.set_viewport_size({"width": 1280, "height": 900})
    problems += [f"console error: {e}" for e in recorder.console_errors]
    problems += [f"failed request: {e}" for e in recorder.failed]
    problems += [f"request to the network (the site must be self-contained): {e}" for e in recorder.external]
    assert not problems, f"{page_path}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page_path", [p for p in PAGES if _notebook_source(p)] or [None])
def test_notebook_page_colab_button_opens_this_notebook_from_the_repository(
    page_and_recorder, base_url, page_path
):
    if page_path is None:
        pytest.skip("the built site has no notebook pages yet")
    page, _ = page_and_recorder
    page.goto(base_url + page_path, wait_until="load")
    owner_repo = urllib.parse.urlsplit(REPOSITORY_URL).path.strip("/").removesuffix(".git")
    expected = f"{COLAB}{owner_repo}/blob/main/{_notebook_source(page_path)}"
    colab_links = page.eval_on_selector_all(
        f'a[href^="{COLAB}"]', "els => els.map(a => a.href)"
    )
    assert colab_links == [expected], f"{page_path}: Colab links {colab_links}, expected [{expected}]"
    # one click on the launch (rocket) button shows the Colab entry
    launch = page.locator(".dropdown-launch-buttons > button").first
    launch.click()
    colab = page.locator(f'a[href="{expected}"]')
    colab.wait_for(state="visible", timeout=5_000)
    page.screenshot(path=str(_screenshot_name(page_path, "--launch-menu")))


def test_index_redirects_to_the_root_page(page_and_recorder, base_url):
    page, recorder = page_and_recorder
    page.goto(base_url + "index.html", wait_until="load")
    page.wait_for_url(re.compile(r".*/intro\.html$"), timeout=10_000)
    assert not recorder.failed and not recorder.external


def test_search_finds_logsumexp(page_and_recorder, base_url):
    page, recorder = page_and_recorder
    page.goto(base_url + "search.html?q=logsumexp", wait_until="load")
    results = page.locator("#search-results ul.search li")
    results.first.wait_for(state="attached", timeout=20_000)
    page.wait_for_function(
        "() => { const p = document.querySelector('#search-results p.search-summary');"
        " return p && p.textContent.trim().length > 0; }",
        timeout=20_000,
    )
    assert results.count() > 0
    links = page.eval_on_selector_all("#search-results ul.search li a", "els => els.map(a => a.href)")
    assert any(link.startswith(base_url) for link in links)
    page.screenshot(path=str(_screenshot_name("search--logsumexp")))
    assert not recorder.console_errors, recorder.console_errors
    assert not recorder.failed and not recorder.external, (recorder.failed, recorder.external)


def test_one_search_field_on_a_wide_screen_and_a_search_button_on_a_phone(page_and_recorder, base_url):
    # The theme's top bar used to add a second search field above the sidebar's on
    # wide screens; on a phone the sidebar is hidden and the header's magnifier opens
    # the search dialog.
    page, _ = page_and_recorder
    page.goto(base_url + "intro.html", wait_until="load")
    visible_fields = """() => [...document.querySelectorAll('.search-button-field')]
        .filter(e => e.offsetParent !== null).length"""
    assert page.evaluate(visible_fields) == 1
    page.set_viewport_size({"width": 390, "height": 844})
    try:
        button = page.locator("button.search-button__button:visible").first
        button.click()
        page.locator("#pst-search-dialog input[type=search], .search-button__search-container input").first.wait_for(
            state="visible", timeout=5_000)
    finally:
        page.set_viewport_size({"width": 1280, "height": 900})


def test_theme_switch_toggles_dark_mode(page_and_recorder, base_url):
    page, recorder = page_and_recorder
    page.goto(base_url + "intro.html", wait_until="load")
    _wait_for_mathjax(page)
    button = page.locator("button.theme-switch-button").first
    themes = [page.evaluate("() => document.documentElement.dataset.theme")]
    for _ in range(3):  # the switch cycles through light, dark and auto
        button.click()
        themes.append(page.evaluate("() => document.documentElement.dataset.theme"))
        if themes[-1] == "dark":
            page.screenshot(path=str(_screenshot_name("intro", "--dark")))
    assert "dark" in themes and "light" in themes, f"html[data-theme] went through {themes}"
    # the choice is remembered on the next page
    page.goto(base_url + "search.html", wait_until="load")
    assert page.evaluate("() => document.documentElement.dataset.theme") == themes[-1]
    assert not recorder.console_errors, recorder.console_errors


def test_contents_marks_the_section_being_read_after_scrolling_up_into_a_long_one(page_and_recorder, base_url):
    """_css/toc_spy.js: the theme only moves the mark when a heading enters the top of
    the window, so scrolling up into the middle of a long section left it on the next."""
    page, recorder = page_and_recorder
    chapter = "chapters/08_fused_softmax/fused_softmax.html"
    if chapter not in PAGES:
        pytest.skip(f"no {chapter} in the built site")
    page.goto(base_url + chapter, wait_until="load")
    _wait_for_mathjax(page)
    # the tallest section listed in Contents, and the one after it
    tall, after = page.evaluate("""() => {
        const ids = [...document.querySelectorAll('#pst-page-toc-nav a.nav-link[href^="#"]')]
            .map(a => decodeURIComponent(a.hash.slice(1)));
        const height = id => document.getElementById(id).getBoundingClientRect().height;
        const toplevel = ids.filter(id => document.getElementById(id).parentElement.closest('section')
                                          === document.getElementById(ids[0]).parentElement.closest('section'));
        let best = 0;
        toplevel.forEach((id, i) => { if (i + 1 < toplevel.length && height(id) > height(toplevel[best])) best = i; });
        return [toplevel[best], toplevel[best + 1]];
    }""")
    assert page.evaluate("id => document.getElementById(id).getBoundingClientRect().height", tall) > 3 * 900
    # down to the next section's heading, then back up into the middle of the tall one
    page.evaluate("id => window.scrollTo(0, document.getElementById(id).getBoundingClientRect().top"
                  " + window.scrollY - 100)", after)
    page.wait_for_timeout(400)
    page.evaluate("id => { const r = document.getElementById(id).getBoundingClientRect();"
                  " window.scrollTo(0, r.top + window.scrollY + r.height / 2); }", tall)
    page.wait_for_timeout(400)
    active = page.eval_on_selector_all("#pst-page-toc-nav a.nav-link.active",
                                       "els => els.map(a => decodeURIComponent(a.hash.slice(1)))")
    page.screenshot(path=str(_screenshot_name(chapter, "--contents-mark")))
    assert active and active[-1] == tall, f"Contents marks {active}, the reader is in #{tall}"
    assert not recorder.console_errors, recorder.console_errors
