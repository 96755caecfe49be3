"""``glue``: hand a value computed in a chapter to its prose, with or without myst-nb.

The book is built by Jupyter Book, whose myst-nb ``glue`` stores a value for the page's Markdown
(``{glue:text}`name```). A reader running a chapter in Colab has no myst-nb (and should not
install Sphinx for it); there :func:`glue` shows the values a cell computed under that cell, in
one small table, so the reader sees what their own run found. Every chapter calls it for every
number of its prose (``from qnnlib.glue import glue``).
"""

from __future__ import annotations

import numbers

try:  # the book build (Jupyter Book): myst-nb stores the value for the page
    from myst_nb import glue as _myst_glue
except ImportError:  # Colab, a plain Jupyter: no myst-nb
    _myst_glue = None

# Values glued since the last cell finished (name → value), shown by _show_pending.
_pending: dict[str, object] = {}
# Every value glued in this session without myst-nb (for tests and for the curious reader).
values: dict[str, object] = {}
_hooked = False


def glue(name: str, value, display: bool = False) -> None:
    """Make ``value`` available to the chapter's prose under ``name``.

    With myst-nb importable (the book build) this is ``myst_nb.glue(name, value, display)``.
    Without it, the value is recorded in :data:`values` and, inside IPython, shown under the cell
    once the cell has run: numbers and short strings in one table per cell, Markdown values
    (notes, sentences) as Markdown. A figure (a matplotlib ``Figure``, or any value with an image
    or HTML representation) is shown at once, whatever ``display`` says: the book places it with
    ``{glue:figure}``, and Colab has only this cell to show it in (a matplotlib figure is then
    closed, so that the inline backend does not draw it a second time at the end of the cell).
    ``display=True`` shows any value at once, as myst-nb would.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str, got {name!r}")
    if _myst_glue is not None:
        _myst_glue(name, value, display=display)
        return
    values[name] = value
    shell = _shell()
    if shell is None:
        return
    if display or is_figure(value):
        from IPython.display import display as show

        show(value)
        if not display and _is_matplotlib_figure(value):
            import matplotlib.pyplot as plt

            plt.close(value)
        return
    global _hooked
    if not _hooked:
        # After the cell (like matplotlib's inline figures): its output area is still current.
        shell.events.register("post_run_cell", _show_pending)
        _hooked = True
    _pending[name] = value


def _is_matplotlib_figure(value) -> bool:
    return type(value).__module__.startswith("matplotlib") and hasattr(value, "savefig")


def is_figure(value) -> bool:
    """Whether ``value`` is shown as itself (a figure, an image, an HTML table), not as text."""
    if _is_matplotlib_figure(value):
        return True
    return any(hasattr(value, method) for method in ("_repr_png_", "_repr_jpeg_", "_repr_svg_", "_repr_html_"))


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def format_value(value) -> str:
    """A short text for a glued value: 4 significant digits for floats, text as it is."""
    if hasattr(value, "data") and type(value).__name__ == "Markdown":
        return str(value.data)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):.4g}"
    return str(value)


def summary(pending: dict) -> str:
    """The Markdown shown under a cell: a table of the one-line values, then longer ones."""
    rows, blocks = [], []
    for name, value in pending.items():
        text = format_value(value).strip()
        if "\n" in text or len(text) > 80:
            blocks.append(f"**{name}**:\n\n{text}")
        else:
            cell = text.replace("|", "\\|")
            rows.append(f"| `{name}` | {cell} |")
    parts = []
    if rows:
        parts.append("| value | this run |\n|---|---|\n" + "\n".join(rows))
    return "\n\n".join(parts + blocks)


def _show_pending(*_):
    if not _pending:
        return
    from IPython.display import Markdown, display

    text = summary(_pending)
    _pending.clear()
    display(Markdown(text))
