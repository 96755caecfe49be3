"""tools/colab_check.py: what it rewrites in a chapter and what it counts as a failure."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_check  # noqa: E402
import sync_notebooks  # noqa: E402


def _executed(*cells):
    nb = nbformat.v4.new_notebook()
    for kind, source, outputs in cells:
        if kind == "markdown":
            nb.cells.append(nbformat.v4.new_markdown_cell(source))
        else:
            cell = nbformat.v4.new_code_cell(source, execution_count=1 if outputs is not None else None)
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=t) for t in outputs or []]
            nb.cells.append(cell)
    return nb


def test_a_clean_run_has_no_problems():
    nb = _executed(("markdown", "Plain text with $x$ and **bold**.", None), ("code", "print(1)", ["1\n"]))
    assert colab_check.problems(nb) == []


@pytest.mark.parametrize("markdown", ["{glue:text}`x`", "see {cite}`paper`", "{numref}`fig`", ":::{note}\nhi\n:::"])
def test_raw_myst_in_markdown_is_a_problem(markdown):
    assert "raw MyST" in colab_check.problems(_executed(("markdown", markdown, None)))[0]


def test_source_notebooks_may_skip_the_markdown_check():
    assert colab_check.problems(_executed(("markdown", "{glue:text}`x`", None)), markdown=False) == []


@pytest.mark.parametrize("text, problem", [
    ("<torch._C.Generator at 0x7f3a2c>\n", "address"),
    ("qnnlib: training mnist-cnn3\n", "training started unasked"),
])
def test_outputs_a_reader_must_not_see(text, problem):
    assert problem in colab_check.problems(_executed(("code", "x", [text])))[0]


def test_a_cell_that_did_not_run_is_a_problem():
    assert "did not run" in colab_check.problems(_executed(("code", "x = 1", None)))[0]


def test_localise_points_the_install_cell_at_the_clone_and_the_server():
    url, _ = sync_notebooks.repository()
    nb = _executed(("code", sync_notebooks.install_source(url, "0123abcd"), []))
    colab_check.localise(nb, "file:///tmp/clone", "feedbeef", "http://127.0.0.1:9")
    source = nb.cells[0].source
    assert '"qnnlib @ git+file:///tmp/clone@feedbeef"' in source
    assert 'os.environ.setdefault("QNNLIB_RESULTS_URL", "http://127.0.0.1:9")' in source
    assert "github" not in source


def test_localise_refuses_an_install_cell_it_does_not_recognise():
    nb = _executed(("code", 'os.environ["QNNLIB_RESULTS_URL"] = "x"\n%pip install qnnlib', []))
    with pytest.raises(ValueError, match="install cell"):
        colab_check.localise(nb, "file:///tmp/clone", "feedbeef", "http://127.0.0.1:9")


def test_constraints_drop_the_packages_colab_has_in_other_versions(tmp_path):
    text = colab_check._constraints(tmp_path).read_text()
    assert "ipywidgets==" not in text and "widgetsnbextension==" not in text and "pandas==" not in text
    assert "torch==" in text and "numpy==" in text


def test_the_training_marker_is_the_line_qnnlib_prints_when_it_trains():
    from qnnlib import experiments

    assert colab_check.TRAINING_MARKER == experiments.TRAINING_MARKER
