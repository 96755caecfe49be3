"""Tests of the presentation checks (presentation.py): each fails on a page made to violate it.

Small HTML pages, written here, are served over loopback and measured in headless Chromium by
the same script and check functions the browser test runs on the book. A page that does
everything right passes every check; each other page breaks one rule and must be caught by
that check, and only that one. Equations are stand-ins with MathJax's element names
(``mjx-container`` / ``mjx-math``) and a fixed width; on the real book, ``equation_problems``
also fails when display math is present but no rendered equation was measured.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from chrome import missing_chromium, new_chrome, set_viewport
from presentation import (DESKTOP, MAX_CODE_LINES, PHONE, PRESENTATION_JS, code_problems, equation_problems,
                          figure_problems, leftover_problems, run_checks)

CODE_OK = "\n".join(f"x{i} = {i}" for i in range(MAX_CODE_LINES))
CODE_LONG = "\n".join(f"x{i} = {i}" for i in range(MAX_CODE_LINES + 3))


def figure(src="fig.png", width=300, number="Figure 1.1 ", caption="What is plotted, in which units."):
    number_html = f'<span class="caption-number">{number}</span>' if number else ""
    return (f'<figure><img src="{src}" width="{width}"><figcaption><p>{number_html}'
            f'<span class="caption-text">{caption}</span></p></figcaption></figure>')


def equation(width_px, overflow="auto"):
    return (f'<div class="math" style="overflow-x: {overflow}"><mjx-container display="true" '
            f'style="display: block"><mjx-math style="display: inline-block; width: {width_px}px">'
            f'x</mjx-math></mjx-container></div>')


def cell(code, hidden=False):
    body = f'<div class="cell"><div class="cell_input"><pre>{code}</pre></div></div>'
    return f"<details><summary>Show code</summary>{body}</details>" if hidden else body


GOOD = [figure(), equation(200), cell(CODE_OK), cell(CODE_LONG, hidden=True),
        "<p>Trained for 3 epochs; the settings are those of Chapter 6.</p>",
        "<table><thead><tr><th>chapter</th><th>fast</th></tr></thead><tbody><tr><td>1</td><td>5 s</td></tr>"
        "</tbody></table>"]

# page name → (body, the one check that must catch it, at which widths)
BAD = {
    "wide-equation": ([equation(2000)], "equations", (DESKTOP,)),
    "clipped-equation": ([equation(2000, overflow="hidden")], "equations", (DESKTOP, PHONE)),
    "bare-image": (['<p><img src="fig.png" width="300"></p>'], "figures", (DESKTOP, PHONE)),
    "unnumbered-figure": ([figure(number="")], "figures", (DESKTOP, PHONE)),
    "uncaptioned-figure": ([figure(caption="")], "figures", (DESKTOP, PHONE)),
    "downscaled-image": ([figure(src="big.png", width=300)], "downscaling", (DESKTOP,)),
    "long-code-cell": ([cell(CODE_LONG)], "code", (DESKTOP, PHONE)),
    "object-repr": (["<pre>&lt;torch._C.Generator object at 0x7f3a2c1d90b0&gt;</pre>"], "leftovers", (DESKTOP, PHONE)),
    "epochs": (["<p>after 3 epoch(s)</p>"], "leftovers", (DESKTOP, PHONE)),
    "spec-reference": (["<p>as in SPEC §4</p>"], "leftovers", (DESKTOP, PHONE)),
    "status-column": (["<table><thead><tr><th>chapter</th><th>status</th></tr></thead><tbody>"
                       "<tr><td>1</td><td>ready</td></tr><tr><td>2</td><td>ready</td></tr></tbody></table>"],
                      "leftovers", (DESKTOP, PHONE)),
}


def page(parts):
    return ('<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
            '<style>body { margin: 0 } article { max-width: 700px; margin: 0 auto; padding: 0 8px }'
            ' img { max-width: 100%; height: auto }</style></head>'
            f'<body><main><article>{"".join(parts)}</article></main></body></html>')


def png(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def chrome():
    reason = missing_chromium()
    if reason:
        pytest.skip(reason)
    driver = new_chrome()
    yield driver
    driver.quit()


@pytest.fixture
def site(served):
    folder, base = served
    (folder / "fig.png").write_bytes(png(600, 400))  # 2× the 300 px it is shown at: fine
    (folder / "big.png").write_bytes(png(1500, 1000))  # 5× the 300 px it is shown at
    (folder / "good.html").write_text(page(GOOD))
    for name, (parts, _, _) in BAD.items():
        (folder / f"{name}.html").write_text(page(GOOD[1:3] + parts))  # no figure unless the page is about one
    return base


def measure(chrome, url, width):
    set_viewport(chrome, width)
    try:
        chrome.get(url)
        state = chrome.execute_async_script(PRESENTATION_JS)
    finally:
        chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert "error" not in state, state
    return state


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
def test_a_page_that_follows_every_rule_passes_every_check(chrome, site, width):
    state = measure(chrome, f"{site}/good.html", width)
    assert len(state["equations"]) == 1 and len(state["cells"]) == 2 and len(state["images"]) == 1
    assert run_checks(state, width) == {}


@pytest.mark.parametrize("width", [DESKTOP, PHONE])
@pytest.mark.parametrize("name", sorted(BAD))
def test_each_check_catches_the_page_made_to_break_it(chrome, site, name, width):
    _, check, widths = BAD[name]
    found = run_checks(measure(chrome, f"{site}/{name}.html", width), width)
    expected = {check} if width in widths else set()
    assert set(found) == expected, found


# The check functions alone, on measurements written by hand (no browser).

def test_an_equation_that_scrolls_is_accepted_on_a_phone_only():
    wide = {"tex": "a+b", "width": 900.0, "available": 350.0, "scrolls": True, "visible": True}
    state = {"equations": [wide], "displayMath": 1}
    assert equation_problems(state, PHONE) == []
    assert "900 px wide in a 350-px column" in equation_problems(state, DESKTOP)[0]


def test_display_math_that_was_not_rendered_cannot_pass_unmeasured():
    assert equation_problems({"equations": [], "displayMath": 3}, DESKTOP)


def test_hidden_code_cells_do_not_count_and_fifteen_lines_are_allowed():
    cells = [{"lines": 40, "first": "a", "visible": False}, {"lines": MAX_CODE_LINES, "first": "b", "visible": True}]
    assert code_problems({"cells": cells}) == []
    assert code_problems({"cells": [{"lines": MAX_CODE_LINES + 1, "first": "c", "visible": True}]})


def test_the_colab_badge_is_not_a_figure():
    badge = {"src": "https://colab.research.google.com/assets/colab-badge.svg", "inFigure": False,
             "number": "", "caption": "", "natural": 0, "displayed": 117, "visible": True}
    assert figure_problems({"images": [badge]}) == []


def test_leftovers_are_found_anywhere_in_the_text():
    text = "x <qnnlib.models.MnistCNN3 object at 0xdeadbeef> y; 2 epoch(s); SPEC §7; status: ready"
    problems = leftover_problems({"text": text, "statusColumns": [["ready", "draft"]]})
    assert len(problems) == 4  # the mixed status column is a real column, not a leftover
