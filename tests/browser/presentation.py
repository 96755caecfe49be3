"""What a reader sees, page by page: the checks of the book's presentation (issue 19, STYLE.md).

``PRESENTATION_JS`` runs in a loaded page (after MathJax) and measures what the checks need;
each ``*_problems`` function turns that measurement into one line per problem. The browser test
(``test_browser.py``) runs them on every page of the strict build at a laptop width (1280 px)
and a phone width (390 px); ``test_presentation_checks.py`` shows each of them failing on a small
page made to violate it.

The checks:

* equations: a display equation wider than its column at the laptop width, or (phone width)
  wider and cut off instead of scrolling sideways;
* figures: an image of the text that is not in a numbered figure with a caption;
* downscaling: an image whose intrinsic width exceeds ``MAX_DOWNSCALE`` × its displayed width
  (laptop width only; a phone shows every figure smaller);
* code: a visible (not folded) code cell longer than ``MAX_CODE_LINES`` non-blank lines;
* leftovers: printed object reprs (``<… object at 0x…>``), the strings of ``LEFTOVER_STRINGS``,
  and a table column "status" that says "ready" in every row.
"""

from __future__ import annotations

import re

DESKTOP, PHONE = 1280, 390
WIDTHS = (DESKTOP, PHONE)
MAX_DOWNSCALE = 2.5
MAX_CODE_LINES = 15
# Sub-pixel rounding of MathJax's boxes: an equation this much wider still fits.
TOLERANCE_PX = 1.0
LEFTOVER_STRINGS = ("SPEC §", "epoch(s)", "status: ready")
OBJECT_REPR = re.compile(r"<[^<>\n]{0,200}? at 0x[0-9a-fA-F]+>")
# External images that are not figures of the text (and cannot load offline anyway).
NOT_FIGURES = ("https://colab.research.google.com/",)

# Runs in a page after it has loaded; measures equations, images, code cells and the text.
PRESENTATION_JS = r"""
const done = arguments[arguments.length - 1];
(async () => {
  await Promise.all(Array.from(document.images).map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener('load', resolve);
                             img.addEventListener('error', resolve); })));
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    try { await MathJax.startup.promise; } catch (e) {}
  }
  const content = document.querySelector('article') || document.querySelector('main') || document.body;
  // Shown to the reader now: laid out, not in a closed <details> (myst-nb's hide-input), not hidden.
  const visible = el => !el.closest('details:not([open])') && el.getClientRects().length > 0
    && (!el.checkVisibility || el.checkVisibility());
  const texOf = new Map();
  if (window.MathJax && MathJax.startup && MathJax.startup.document && MathJax.startup.document.math) {
    for (const item of MathJax.startup.document.math) {
      if (item.typesetRoot) texOf.set(item.typesetRoot, item.math);
    }
  }
  const equations = Array.from(content.querySelectorAll('mjx-container[display="true"]')).map(c => {
    const math = c.querySelector('mjx-math') || c;
    // The column the equation has: its block (MyST's div.math), else the container itself.
    const block = c.closest('div.math') || c.parentElement;
    let scrolls = false;
    for (let el = c; el && el !== content.parentElement; el = el.parentElement) {
      const overflow = getComputedStyle(el).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { scrolls = true; break; }
    }
    return {tex: (texOf.get(c) || c.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 100),
            width: math.getBoundingClientRect().width, available: block.clientWidth,
            scrolls: scrolls, visible: visible(c)};
  });
  const images = Array.from(content.querySelectorAll('img')).map(img => {
    const figure = img.closest('figure');
    const caption = figure ? figure.querySelector('figcaption') : null;
    const number = caption ? caption.querySelector('.caption-number') : null;
    const captionText = caption ? caption.textContent.replace(/\s+/g, ' ').trim() : '';
    const numberText = number ? number.textContent.replace(/\s+/g, ' ').trim() : '';
    return {src: img.currentSrc || img.src, natural: img.naturalWidth,
            displayed: img.getBoundingClientRect().width, visible: visible(img),
            inFigure: !!figure, number: numberText,
            caption: captionText.slice(numberText.length).trim().slice(0, 100)};
  });
  const cells = Array.from(content.querySelectorAll('div.cell div.cell_input')).map(input => {
    const pre = input.querySelector('pre');
    const lines = (pre ? pre.textContent : '').split('\n').filter(line => line.trim());
    return {lines: lines.length, first: (lines[0] || '').trim().slice(0, 80), visible: visible(input)};
  });
  const statusColumns = [];
  for (const table of content.querySelectorAll('table')) {
    const heads = Array.from(table.querySelectorAll('thead th')).map(th => th.textContent.trim().toLowerCase());
    const at = heads.indexOf('status');
    if (at < 0) continue;
    const values = Array.from(table.querySelectorAll('tbody tr'))
      .map(tr => (tr.children[at] ? tr.children[at].textContent.trim().toLowerCase() : ''));
    statusColumns.push(values);
  }
  const text = content.cloneNode(true);
  text.querySelectorAll('script, style').forEach(el => el.remove());
  return {equations: equations, displayMath: content.querySelectorAll('div.math').length,
          images: images, cells: cells, statusColumns: statusColumns, text: text.textContent,
          height: Math.ceil(Math.max(document.documentElement.scrollHeight, document.body.scrollHeight))};
})().then(done, e => done({error: String(e)}));
"""


def equation_problems(state: dict, width: int) -> list[str]:
    """Display equations wider than their column (at the phone width: only those cut off)."""
    problems = []
    measured = [eq for eq in state["equations"] if eq["visible"]]
    if state["displayMath"] and not state["equations"]:
        problems.append(f"{state['displayMath']} display-math blocks but no rendered equation to measure")
    for eq in measured:
        if eq["width"] <= eq["available"] + TOLERANCE_PX:
            continue
        if width < DESKTOP and eq["scrolls"]:
            continue  # a phone may scroll an equation sideways
        how = "scrolls" if eq["scrolls"] else "is cut off"
        problems.append(f"equation {eq['width']:.0f} px wide in a {eq['available']:.0f}-px column ({how}): "
                        f"{eq['tex']!r}")
    return problems


def _figure_images(state: dict) -> list[dict]:
    return [img for img in state["images"] if not img["src"].startswith(NOT_FIGURES)]


def figure_problems(state: dict) -> list[str]:
    """Images that are not in a figure with a number and a caption."""
    problems = []
    for img in _figure_images(state):
        name = img["src"].rsplit("/", 1)[-1][:24]
        if not img["inFigure"]:
            problems.append(f"image {name} is not in a figure (no number, no caption)")
        elif not img["number"]:
            problems.append(f"figure with image {name} has no number (caption {img['caption'][:40]!r})")
        elif not img["caption"]:
            problems.append(f"{img['number']} has no caption")
    return problems


def downscale_problems(state: dict, width: int) -> list[str]:
    """Images drawn much larger than shown: their text shrinks below legibility (laptop width)."""
    if width < DESKTOP:
        return []
    problems = []
    for img in _figure_images(state):
        if not img["visible"] or img["displayed"] <= 0 or img["natural"] <= 0:
            continue
        if img["natural"] > MAX_DOWNSCALE * img["displayed"]:
            name = img["src"].rsplit("/", 1)[-1][:24]
            problems.append(f"image {name} is {img['natural']} px wide, shown at {img['displayed']:.0f} px "
                            f"({img['natural'] / img['displayed']:.1f}× > {MAX_DOWNSCALE}×)")
    return problems


def code_problems(state: dict) -> list[str]:
    """Visible code cells longer than MAX_CODE_LINES non-blank lines."""
    return [f"visible code cell of {cell['lines']} lines (> {MAX_CODE_LINES}) starting {cell['first']!r}"
            for cell in state["cells"] if cell["visible"] and cell["lines"] > MAX_CODE_LINES]


def leftover_problems(state: dict) -> list[str]:
    """Object reprs, internal strings and 'status: ready' columns anywhere in the page's text."""
    text = state["text"]
    problems = [f"object repr {m.group(0)[:80]!r}" for m in OBJECT_REPR.finditer(text)]
    for needle in LEFTOVER_STRINGS:
        for m in re.finditer(re.escape(needle), text):
            context = " ".join(text[max(0, m.start() - 40): m.end() + 40].split())
            problems.append(f"{needle!r} in {context!r}")
    for values in state["statusColumns"]:
        if values and all(value == "ready" for value in values):
            problems.append(f"a table column 'status' that says 'ready' in all {len(values)} rows")
    return problems


# The checks by name, each (state, width) → problems.
CHECKS = {
    "equations": equation_problems,
    "figures": lambda state, width: figure_problems(state),
    "downscaling": downscale_problems,
    "code": lambda state, width: code_problems(state),
    "leftovers": lambda state, width: leftover_problems(state),
}


def run_checks(state: dict, width: int) -> dict[str, list[str]]:
    """Every check's problems for one page at one width (only checks that found something)."""
    found = {name: check(state, width) for name, check in CHECKS.items()}
    return {name: problems for name, problems in found.items() if problems}
