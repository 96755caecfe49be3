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


def test_plan_runs_chapter_8_restart_on_other_data_and_students_once_longest_first(tmp_path):
    chapters = [tmp_path / f"{n}.ipynb" for n in ("01_a", "06_mnist", "08_pixels")]
    students = [tmp_path / "student" / "01_a.ipynb"]
    runs = colab_check.plan(chapters, students, restart=True, other_data=True)
    assert list(runs) == [chapters[2], chapters[1], chapters[0], students[0]]
    kernels = {path.name: [(phase, kernel) for _, phase, kernel, _ in todo] for path, todo in runs.items() if path in chapters}
    assert kernels["08_pixels.ipynb"] == [("first run", "colab-fast"), ("restart", "colab-fast-official")]
    assert kernels["06_mnist.ipynb"] == [("first run", "colab-fast"), ("first run", "colab-full"),
                                         ("restart", "colab-fast")]
    assert kernels["01_a.ipynb"] == [("first run", "colab-fast")]  # not in RESTART_TOO
    every = colab_check.plan(chapters, [], restart=True, other_data=True, restart_all=True)
    assert [phase for _, phase, _, _ in every[chapters[0]]] == ["first run", "restart"]
    none = colab_check.plan(chapters, [], restart=False, other_data=True, restart_all=True)
    assert all(phase == "first run" for todo in none.values() for _, phase, _, _ in todo)
    assert [(phase, expect) for _, phase, _, expect in runs[students[0]]] == [("first run", colab_check.student_problems)]
    same = colab_check.plan(chapters, [], restart=True, other_data=False)
    assert [kernel for _, _, kernel, _ in same[chapters[2]]] == ["colab-fast", "colab-fast"]


def test_chapter_8_on_other_data_must_say_so():
    expect = colab_check._says(colab_check.OTHER_DATA["08_"])
    silent = _executed(("code", "x", ["done\n"]))
    assert "does not say which data" in expect(silent)[0]
    from qnnlib import experiments

    run = type("Run", (), {"record": {"provenance": {"dataset": {"identity": "CIFAR-10 (JPEG copy)"}},
                                      "experiment": "cifar-cnn4"}})()
    _, sentence = experiments.data_check(run, type("D", (), {"identity": "CIFAR-10 (official)"})())
    assert expect(_executed(("code", "x", [sentence]))) == []


CHECK_OUT = "ex_01_tent results:\n    ex_01_tent - 1 result:\n        ❌ Test case failed\n{}\n"


def test_student_checks_must_report_the_stub_as_not_done():
    stub = CHECK_OUT.format("NotImplementedError: Exercise ex-01-tent: write tent_spreads(a)")
    assert colab_check.student_problems(_executed(("code", 'grader.check("ex_01_tent")', [stub]))) == []
    passed = "ex_01_tent results: All test cases passed!\n"
    assert "not done" in colab_check.student_problems(_executed(("code", 'grader.check("ex_01_tent")', [passed])))[0]
    other = CHECK_OUT.format("NameError: name 'np' is not defined")   # failed, but not because of the stub
    assert "not done" in colab_check.student_problems(_executed(("code", 'grader.check("ex_01_tent")', [other])))[0]
    assert colab_check.student_problems(_executed(("code", "x = 1", []))) == ["no grader.check(...) cell"]
