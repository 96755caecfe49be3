"""Open every page of the built book in headless Chromium and check what a reader would see.

Run by ``make browser-test`` (part of ``make test``) right after the strict fast-mode build, on
the HTML that build wrote to ``_build/html``; it does not build the book itself. For every page
listed in ``_toc.yml`` (not genindex/search) it checks:

* images: every local ``<img>`` loaded (``naturalWidth > 0``);
* math: MathJax ran, every ``.math`` element holds an ``mjx-container``, no formula has a TeX
  error or an undefined macro, and no raw ``$$``, ``$x$``, ``\\(``, ``\\[`` or ``\\begin{`` is
  left in the prose (code and text outputs excluded);
* links: every ``<a href>`` into the site names an existing file, and its ``#anchor`` (if any)
  is an ``id`` on the target page;
* console: no SEVERE browser-log entry, except failed loads of the external URLs listed in
  ``ALLOWED_EXTERNAL`` (the machines that run ``make test`` have no internet) and the known
  errors listed in ``ALLOWED_CONSOLE``, each with its reason;

and saves a full-page screenshot (1280 px wide) to ``_build/screenshots/<page>.png``, e.g.
``_build/screenshots/book/intro.png``. It also checks that ``index.html`` leads to the first page.

Then, at a laptop width (1280 px) and a phone width (390 px), the presentation checks of
``presentation.py`` (equations wider than the column, figures without number or caption,
images shrunk more than 2.5×, visible code cells over 15 lines, object reprs and internal
strings), with a screenshot per width in ``_build/screenshots/<width>/<page>.png`` and every
finding in ``_build/screenshots/presentation.txt``. Every check fails the test on every page
except those ``PENDING`` lists for a page (``QNNLIB_PRESENTATION_STRICT=1``: no exceptions);
``test_presentation_checks.py`` shows each check failing on a page made to violate it.

The pages are served by a local ``http.server`` on a free port (not ``file://``). Chromium gets
``--host-resolver-rules`` that make every host except the local server unresolvable, so external
loads fail the same way with or without internet. MathJax is served from the book: ``make
strict-book`` builds with ``tools/offline_config.py``, which copies the npm ``mathjax`` package
into ``mathjax/`` at the root of the HTML (the published ``make book`` keeps the CDN).

Needs ``/usr/bin/chromium`` and ``/usr/bin/chromedriver`` (Debian packages ``chromium``,
``chromium-driver``; ``.ci/run`` installs them). Without them the tests skip, unless
``QNNLIB_BROWSER_REQUIRED=1`` (set by ``.ci/run``), which turns the skip into a failure.
Environment overrides: ``BROWSER_TEST_HTML`` (default ``_build/html``), ``BROWSER_TEST_TOC``
(default ``_toc.yml``), ``BROWSER_TEST_SCREENSHOTS`` (default ``_build/screenshots``).
"""

from __future__ import annotations

import base64
import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml
from bs4 import BeautifulSoup
from selenium.webdriver.support.ui import WebDriverWait

from chrome import CHROMEDRIVER, CHROMIUM, PAGE_TIMEOUT_S, WIDTH, missing_chromium, new_chrome, set_viewport
from presentation import CHECKS, PRESENTATION_JS, WIDTHS, run_checks

ROOT = Path(__file__).resolve().parents[2]
HTML = Path(os.environ.get("BROWSER_TEST_HTML", ROOT / "_build" / "html")).resolve()
TOC = Path(os.environ.get("BROWSER_TEST_TOC", ROOT / "_toc.yml")).resolve()
SCREENSHOTS = Path(os.environ.get("BROWSER_TEST_SCREENSHOTS", ROOT / "_build" / "screenshots"))
REQUIRED = os.environ.get("QNNLIB_BROWSER_REQUIRED") == "1"
STRICT = os.environ.get("QNNLIB_PRESENTATION_STRICT") == "1"

# External URLs the book loads by design. Offline (and always, under the resolver rules of the
# driver fixture) they fail with net::ERR_NAME_NOT_RESOLVED; those failures, and only those, are allowed in the
# console, and an <img> from one of them may stay empty. Any other external load fails the test.
ALLOWED_EXTERNAL = {
    # The "Open in Colab" badge at the top of every chapter notebook (tools/sync_notebooks.py);
    # it is a link to Colab with Colab's own badge image, the same on GitHub and in Colab.
    "https://colab.research.google.com/assets/colab-badge.svg": "Colab badge image",
    # myst-nb adds these two scripts to pages whose notebook saved ipywidgets state (the
    # interactive widgets); each widget has a static figure beside it for HTML readers.
    "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js": "ipywidgets loader",
    "https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/embed-amd.js": (
        "ipywidgets HTML manager"
    ),
}

# Errors logged by the book's own pages (the local server) that are known and harmless, as
# regular expressions searched in the log message, each with the reason it is allowed.
ALLOWED_CONSOLE = {
    # The book sets no favicon (html_favicon), so Chromium's automatic request for /favicon.ico
    # gets a 404 from the test server on the first page it opens.
    r"^\S+/favicon\.ico - Failed to load resource: the server responded with a status of 404": (
        "no favicon"
    ),
    # First page opened in a fresh browser profile: sphinx-book-theme leaves pydata-sphinx-theme's
    # default_mode empty, so its script logs this, picks "auto" and stores it; later pages are
    # quiet. (The theme option default_mode: auto would silence it.)
    r"Got invalid theme mode: \. Resetting to auto\.": "theme mode on a first visit",
}


def toc_pages(toc_path: Path = TOC) -> list[str]:
    """Return the document names listed in the table of contents, in reading order."""
    toc = yaml.safe_load(toc_path.read_text())

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                yield entry["file"]
            yield from walk(entry.get("sections", []))

    pages = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        pages += list(walk(part.get("chapters", [])))
    return [re.sub(r"\.(md|ipynb)$", "", page) for page in pages]


PAGES = toc_pages()


def _missing_requirement() -> str | None:
    missing = missing_chromium()
    if missing:
        return missing
    if not (HTML / "index.html").is_file():
        return f"no built book at {HTML}: run `make strict-book` first (or `make browser-test`)"
    return None


# --------------------------------------------------------------------------------------------
# Fixtures: a local web server for the HTML and one Chromium for all pages.


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature of the base class
        pass


@pytest.fixture(scope="module")
def server():
    reason = _missing_requirement()
    if reason:
        if REQUIRED:
            pytest.fail(reason + " (QNNLIB_BROWSER_REQUIRED=1)")
        pytest.skip(reason)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def driver(server):
    chrome = new_chrome()
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def screenshots():
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


# --------------------------------------------------------------------------------------------
# Helpers: link targets on disk, the page's state after loading, the screenshot.


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset[str]:
    """Return every ``id`` (and old-style ``<a name>``) in a built HTML file."""
    soup = BeautifulSoup(path.read_text(encoding="utf8"), "html.parser")
    ids = {tag["id"] for tag in soup.find_all(id=True)}
    ids |= {tag["name"] for tag in soup.find_all("a", attrs={"name": True})}
    return frozenset(ids)


def _local_file(url: str, base: str) -> Path | None:
    """Map a URL on the local server to the file it serves (``None`` when outside the site)."""
    if not url.startswith(base):
        return None
    path = unquote(urlsplit(url).path)
    target = HTML / path.lstrip("/")
    if path.endswith("/"):
        target = target / "index.html"
    return target


def broken_links(links: list[str], page_url: str, base: str) -> list[str]:
    """Return a description of each internal link whose file or ``#anchor`` does not exist."""
    problems = []
    for href in sorted(set(links)):
        url = urljoin(page_url, href)
        if urlsplit(url).scheme not in ("http", "https"):
            continue  # mailto:, javascript:, data:
        target = _local_file(url, base)
        if target is None:
            continue  # external: not checked (no internet in CI)
        if not target.is_file():
            problems.append(f"link {href!r}: {target.relative_to(HTML)} does not exist")
            continue
        fragment = unquote(urlsplit(url).fragment)
        if fragment and target.suffix == ".html" and fragment not in _ids(target):
            problems.append(f"link {href!r}: no id {fragment!r} in {target.relative_to(HTML)}")
    return problems


# Runs in the page once it has loaded: waits for images and MathJax, then reports.
PAGE_STATE_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve);
                             img.addEventListener('error', resolve); })));
  let mathjax = 'absent';
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    try { await window.MathJax.startup.promise; mathjax = 'done'; }
    catch (e) { mathjax = 'failed: ' + e; }
  } else if (document.querySelector('script[src*="mathjax"]')) {
    mathjax = 'did not load';
  }
  const mathjaxScript = document.querySelector('script[src*="mathjax"]');
  const maths = Array.from(document.querySelectorAll('.math'));
  // The prose as a reader sees it, without code, outputs of code and scripts.
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);
  prose.querySelectorAll('pre, code, script, style, textarea, .cell_input, .highlight')
       .forEach(el => el.remove());
  return {
    mathjax: mathjax,
    mathjaxSrc: mathjaxScript ? mathjaxScript.src : null,
    mathCount: maths.length,
    mathUnrendered: maths.filter(el => !el.querySelector('mjx-container'))
                         .map(el => el.textContent.slice(0, 80)),
    // TeX errors (merror) and undefined macros (shown in red by MathJax's noundefined).
    mathErrors: mathjax !== 'done' ? [] : Array.from(MathJax.startup.document.math)
      .map(item => [item.math, MathJax.startup.toMML(item.root)])
      .filter(([tex, mml]) => /<merror|mathcolor="red"/.test(mml))
      .map(([tex, mml]) => tex.trim().slice(0, 120)),
    proseText: prose.textContent,
    images: Array.from(document.images).map(img => ({
      src: img.currentSrc || img.src, width: img.naturalWidth, alt: img.alt})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)),
  };
})().then(done, e => done({error: String(e)}));
"""

# TeX that neither MyST nor MathJax turned into math: $$, $...$, \( \) \[ \], \begin{...}.
RAW_TEX = re.compile(r"\$\$|\$[^$\s][^$\n]*\$|\\[()\[\]]|\\(begin|end)\{")


def _allowed(url: str) -> bool:
    return url in ALLOWED_EXTERNAL


def console_problems(entries: list[dict], base: str) -> list[str]:
    """SEVERE browser-log entries, except those explained in ALLOWED_EXTERNAL/ALLOWED_CONSOLE."""
    problems = []
    for entry in entries:
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        url = message.split(" ", 1)[0]
        if _allowed(url) and "Failed to load resource: net::ERR_NAME_NOT_RESOLVED" in message:
            continue
        if url.startswith(base) and any(re.search(p, message) for p in ALLOWED_CONSOLE):
            continue
        problems.append(f"console: {message}")
    return problems


def _listed(what: str, items: list[str], show: int = 5) -> list[str]:
    """One problem line per item, at most ``show`` of them, after a count."""
    if not items:
        return []
    more = f" (first {show} shown)" if len(items) > show else ""
    return [f"{len(items)} {what}{more}:"] + [f"    {item!r}" for item in items[:show]]


def save_screenshot(chrome, path: Path, height: int, width: int = WIDTH) -> None:
    """Save the whole page, ``width`` pixels wide, as a PNG.

    The window becomes as tall as the page first, so that the theme's sticky sidebars and
    header are laid out as on screen rather than cut off at the first screenful.
    """
    set_viewport(chrome, width, max(1, height))
    try:
        shot = chrome.execute_cdp_cmd(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "fromSurface": True},
        )
    finally:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path.write_bytes(base64.b64decode(shot["data"]))


# --------------------------------------------------------------------------------------------
# The tests.


def test_toc_lists_pages():
    assert PAGES, f"{TOC} lists no pages"
    assert len(PAGES) == len(set(PAGES)), f"{TOC} lists a page twice: {PAGES}"


def test_every_toc_page_was_built(server):
    missing = [page for page in PAGES if not (HTML / f"{page}.html").is_file()]
    assert not missing, f"pages in {TOC.name} with no HTML in {HTML}: {missing}"


def test_index_redirects_to_first_page(server, driver):
    driver.get(server)
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: d.current_url != server
        and d.execute_script("return document.readyState") == "complete"
    )
    assert driver.current_url == urljoin(server, f"{PAGES[0]}.html"), driver.current_url
    problems = console_problems(driver.get_log("browser"), server)
    assert not problems, "index.html:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_page(page, server, driver, screenshots):
    if not (HTML / f"{page}.html").is_file():
        pytest.fail(f"{page}.html was not built")
    url = urljoin(server, f"{page}.html")
    driver.get_log("browser")  # drop what earlier pages left
    driver.get(url)
    # driver.get may return while the document is still parsing: wait for the load event.
    WebDriverWait(driver, PAGE_TIMEOUT_S).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )
    assert driver.current_url == url, f"{page}: the browser went to {driver.current_url}"
    state = driver.execute_async_script(PAGE_STATE_JS)
    assert "error" not in state, f"{page}: the page script failed: {state['error']}"
    problems = []

    # Screenshot first, so that a failing page can still be looked at.
    shot = screenshots / f"{page}.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    save_screenshot(driver, shot, state["height"])

    # Images: local ones must load; external ones must be known (they cannot load offline).
    for image in state["images"]:
        if image["src"].startswith(server):
            if image["width"] == 0:
                problems.append(f"image did not load: {image['src']} (alt {image['alt']!r})")
        elif not _allowed(image["src"]):
            problems.append(f"image from an unexpected external URL: {image['src']}")

    # Math.
    if state["mathCount"]:
        if state["mathjax"] != "done":
            where = state["mathjaxSrc"] or "nowhere"
            hint = (
                " (MathJax comes from a CDN: build with tools/offline_config.py, as make "
                "strict-book does when npm is available)"
                if where.startswith("http") and not where.startswith(server)
                else ""
            )
            problems.append(f"MathJax {state['mathjax']}, loaded from {where}{hint}")
        problems += _listed(
            f"of {state['mathCount']} math elements not rendered", state["mathUnrendered"]
        )
    problems += _listed("TeX errors or undefined macros", state["mathErrors"])
    raw = [
        " ".join(state["proseText"][max(0, m.start() - 40) : m.end() + 40].split())
        for m in RAW_TEX.finditer(state["proseText"])
    ]
    problems += _listed("raw TeX left in the text", raw)

    # Internal links and anchors.
    problems += broken_links(state["links"], url, server)

    # Console.
    problems += console_problems(driver.get_log("browser"), server)

    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


# --------------------------------------------------------------------------------------------
# Presentation (issue 19): what a reader sees, at a laptop and a phone width.

# Every check of presentation.py fails the test on every page, except the checks listed here for
# a page: what that page does not meet yet (issue 19), reported in
# _build/screenshots/presentation.txt without failing. Remove an entry once the page meets the
# check (the report says "now met: remove from PENDING"); QNNLIB_PRESENTATION_STRICT=1 ignores
# this list.
# Every page meets every check (the last exceptions, Chapter 8's 17-line code cell and "SPEC §"
# in two docstrings of the API page, were fixed on 7 December); keep the mechanism for new pages.
PENDING: dict[str, set[str]] = {}

_findings: dict[tuple[str, int], dict[str, list[str]]] = {}


def enforced(check: str, page: str) -> bool:
    return STRICT or check not in PENDING.get(page, set())


@pytest.fixture(scope="module")
def presentation_report(screenshots):
    yield _findings
    lines = []
    for (page, width), found in sorted(_findings.items()):
        for check, problems in found.items():
            state = "ENFORCED" if enforced(check, page) else "pending"
            lines.append(f"{page} @ {width}px  {check} ({state}): {len(problems)}")
            lines += [f"    {problem}" for problem in problems]
    for page, checks in sorted(PENDING.items()):
        widths = [found for (name, _), found in _findings.items() if name == page]
        for check in sorted(checks):
            if widths and not any(check in found for found in widths):
                lines.append(f"{page}  {check}: now met: remove from PENDING")
    (screenshots / "presentation.txt").write_text("\n".join(lines) + "\n" if lines else "no findings\n")


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("page", PAGES)
def test_presentation(page, width, server, driver, screenshots, presentation_report):
    if not (HTML / f"{page}.html").is_file():
        pytest.fail(f"{page}.html was not built")
    url = urljoin(server, f"{page}.html")
    set_viewport(driver, width)
    try:
        driver.get(url)
        WebDriverWait(driver, PAGE_TIMEOUT_S).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        state = driver.execute_async_script(PRESENTATION_JS)
        assert "error" not in state, f"{page}: the presentation script failed: {state['error']}"
        shot = screenshots / str(width) / f"{page}.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        save_screenshot(driver, shot, state["height"], width)
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    found = run_checks(state, width)
    presentation_report[(page, width)] = found
    failing = {check: problems for check, problems in found.items() if enforced(check, page)}
    assert not failing, f"{page} at {width} px:\n  " + "\n  ".join(
        f"{check}: {problem}" for check, problems in failing.items() for problem in problems
    )
