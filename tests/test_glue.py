"""qnnlib.glue: myst-nb's glue in the book build, the values shown under the cell without it (Colab)."""

import pytest
from IPython.display import Markdown

from qnnlib import glue as gluing


@pytest.fixture
def no_myst(monkeypatch):
    """qnnlib.glue as in Colab: myst-nb not importable."""
    monkeypatch.setattr(gluing, "_myst_glue", None)
    monkeypatch.setattr(gluing, "values", {})
    monkeypatch.setattr(gluing, "_pending", {})


def test_glue_calls_myst_nb_when_it_is_installed(monkeypatch):
    calls = []
    monkeypatch.setattr(gluing, "_myst_glue", lambda name, value, display: calls.append((name, value, display)))
    gluing.glue("ch0_x", 1.5)
    gluing.glue("ch0_y", "text", display=True)
    assert calls == [("ch0_x", 1.5, False), ("ch0_y", "text", True)]


def test_glue_without_myst_nb_keeps_every_value(no_myst):
    gluing.glue("ch0_x", 1.5)
    gluing.glue("ch0_note", Markdown("a *note*"))
    assert gluing.values["ch0_x"] == 1.5 and gluing.values["ch0_note"].data == "a *note*"


def test_glue_rejects_a_name_that_is_not_a_string(no_myst):
    with pytest.raises(TypeError, match="name"):
        gluing.glue(3, 1.0)


def test_format_value_gives_four_significant_digits_and_thousands():
    assert gluing.format_value(0.123456) == "0.1235"
    assert gluing.format_value(12345) == "12,345"
    assert gluing.format_value(True) == "True"
    assert gluing.format_value(Markdown("**x**")) == "**x**"


def test_summary_is_one_table_of_short_values_then_the_long_ones():
    text = gluing.summary({"a": 2.0, "b": "x|y", "note": Markdown("line one\nline two")})
    table, note = text.split("\n\n", 1)
    assert table.splitlines() == ["| value | this run |", "|---|---|", "| `a` | 2 |", "| `b` | x\\|y |"]
    assert note == "**note**:\n\nline one\nline two"


def test_values_glued_in_a_cell_are_shown_once_under_it(no_myst, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    monkeypatch.setattr(gluing, "_hooked", False)
    try:
        shell.run_cell("from qnnlib.glue import glue\nglue('ch0_a', 0.5)\nglue('ch0_b', 7)")
        assert len(shown) == 1 and "| `ch0_a` | 0.5 |" in shown[0].data and "| `ch0_b` | 7 |" in shown[0].data
        shell.run_cell("x = 1")  # a cell that glues nothing shows nothing
        assert len(shown) == 1
    finally:
        shell.events.unregister("post_run_cell", gluing._show_pending)
        InteractiveShell.clear_instance()


def test_a_glued_figure_is_shown_once_under_its_cell_not_as_text(no_myst, monkeypatch):
    # {glue:figure} in Colab: the figure glued with display=False must still appear, as an image,
    # exactly once (the inline backend would draw an open pyplot figure again at the cell's end).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    monkeypatch.setattr(gluing, "_hooked", False)
    try:
        shell.run_cell("import matplotlib.pyplot as plt\nfrom qnnlib.glue import glue\n"
                       "fig, ax = plt.subplots()\nax.plot([0, 1])\nglue('fig-06-x', fig, display=False)\n"
                       "glue('ch6_n', 3)")
        figures = [obj for obj in shown if gluing.is_figure(obj)]
        assert len(figures) == 1 and figures[0] is shell.user_ns["fig"]
        assert not plt.fignum_exists(shell.user_ns["fig"].number)   # closed: not drawn a second time
        tables = [obj for obj in shown if not gluing.is_figure(obj)]
        assert len(tables) == 1 and "ch6_n" in tables[0].data and "fig-06-x" not in tables[0].data
    finally:
        shell.events.unregister("post_run_cell", gluing._show_pending)
        InteractiveShell.clear_instance()
        plt.close("all")


def test_is_figure_tells_figures_from_values():
    from matplotlib.figure import Figure

    assert gluing.is_figure(Figure()) and not gluing.is_figure(Markdown("x")) and not gluing.is_figure(0.5)
