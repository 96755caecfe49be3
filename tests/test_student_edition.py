"""Tests for tools/student_edition.py: solutions become stubs, exercises stay, notebooks stay valid.

First small synthetic notebooks (one feature each), then every real chapter of book/.
"""

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("student_edition", ROOT / "tools" / "student_edition.py")
se = sys.modules["student_edition"] = importlib.util.module_from_spec(_spec)   # dataclasses look it up
_spec.loader.exec_module(se)

CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))

EXERCISE = """````{exercise} Write a function
:label: ex-t-code

Write `f` so that `f(a, b)` returns their sum.
````"""
CODE_SOLUTION = """````{solution} ex-t-code
:class: dropdown

The sum, of course:

```python
def f(a, b, *, scale=1):
    return scale * (a + b)   # SECRET-LINE

print(f(1, 2))
```
````"""
PAPER_EXERCISE = """````{exercise} Prove it
:label: ex-t-paper

Show that $1 + 1 = 2$.
````"""
PAPER_SOLUTION = """````{solution} ex-t-paper
:class: dropdown

By definition of 2. SECRET-PROOF
````"""


def notebook(*cells):
    nb = nbformat.v4.new_notebook()
    for k, cell in enumerate(cells):
        if isinstance(cell, str):
            cell = nbformat.v4.new_markdown_cell(cell)
        cell.id = f"cell-{k}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def code_cell(source, tags=()):
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = list(tags)
    return cell


def text(nb):
    return "\n".join(cell.source for cell in nb.cells)


def stubs(nb):
    return [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("raise NotImplementedError(")]


def raised_by(source):
    with pytest.raises(NotImplementedError) as error:
        exec(compile(source, "<stub>", "exec"), {})
    return str(error.value)


# --- synthetic notebooks ----------------------------------------------------------------------


def test_code_solution_becomes_a_stub_cell_after_its_exercise():
    nb = notebook("# Title\n\nIntro.", f"## Exercises\n\n{EXERCISE}\n\n{CODE_SOLUTION}\n\n## Summary\n\nDone.")
    student, report = se.student_notebook(nb)
    kinds = [(c.cell_type, c.source.split("\n")[0]) for c in student.cells]
    assert kinds == [("markdown", "# Title"), ("markdown", "## Exercises"),
                     ("code", kinds[2][1]), ("markdown", "## Summary")]
    (stub,) = stubs(student)
    assert stub.source == 'raise NotImplementedError("Exercise ex-t-code: Write a function (define f(a, b, *, scale=1))")'
    assert raised_by(stub.source).startswith("Exercise ex-t-code: ")
    assert stub.metadata["exercise"] == "ex-t-code" and "raises-exception" in stub.metadata["tags"]
    assert report.stubs == ["ex-t-code"] and report.pen_and_paper == []
    nbformat.validate(student)


def test_exercise_text_is_kept_verbatim_and_solution_text_is_gone():
    nb = notebook(f"{EXERCISE}\n\n{CODE_SOLUTION}\n\n{PAPER_EXERCISE}\n\n{PAPER_SOLUTION}")
    student, _ = se.student_notebook(nb)
    assert EXERCISE in text(student) and PAPER_EXERCISE in text(student)
    for secret in ("{solution}", "SECRET-LINE", "SECRET-PROOF", "The sum, of course", "print(f(1, 2))"):
        assert secret not in text(student)


def test_pen_and_paper_solution_leaves_no_stub_and_keeps_one_cell():
    nb = notebook(f"{PAPER_EXERCISE}\n\n{PAPER_SOLUTION}\n\nAfter the exercise.")
    student, report = se.student_notebook(nb)
    assert stubs(student) == []
    assert [c.source for c in student.cells] == [f"{PAPER_EXERCISE}\n\nAfter the exercise."]
    assert student.cells[0].id == "cell-0"
    assert report.pen_and_paper == ["ex-t-paper"] and report.stubs == []


def test_solution_only_cell_disappears():
    nb = notebook(EXERCISE, CODE_SOLUTION, PAPER_EXERCISE, PAPER_SOLUTION)
    student, _ = se.student_notebook(nb)
    assert [c.cell_type for c in student.cells] == ["markdown", "code", "markdown"]
    assert len({c.id for c in student.cells}) == 3
    nbformat.validate(student)


def test_colon_fences_and_longer_inner_fences_are_understood():
    solution = ":::::{solution} ex-t-code\n:class: dropdown\n\n````python\nx = 1  # SECRET-LINE\n````\n:::::"
    nb = notebook(f"{EXERCISE}\n\n{solution}")
    student, report = se.student_notebook(nb)
    assert report.stubs == ["ex-t-code"] and "SECRET-LINE" not in text(student)
    # A fence of three backticks inside a four-backtick directive does not end the directive.
    blocks = se.fenced_blocks(CODE_SOLUTION)
    assert len(blocks) == 1 and blocks[0].directive == "solution" and blocks[0].argument == "ex-t-code"


def test_code_cell_tagged_solution_becomes_a_stub_in_place():
    nb = notebook(EXERCISE, code_cell("def f(a, b):\n    return a + b  # SECRET-LINE", tags=["solution"]),
                  code_cell("print('unrelated')"))
    student, report = se.student_notebook(nb)
    assert [c.cell_type for c in student.cells] == ["markdown", "code", "code"]
    stub = student.cells[1]
    assert stub.id == "cell-1"
    assert raised_by(stub.source) == "Exercise ex-t-code: Write a function (define f(a, b))"
    assert student.cells[2].source == "print('unrelated')"
    assert report.stubs == ["ex-t-code"]


def test_tagged_solution_takes_its_label_from_an_ex_tag():
    nb = notebook(EXERCISE, PAPER_EXERCISE, code_cell("y = 2", tags=["solution", "ex-t-code"]))
    _, report = se.student_notebook(nb)
    assert report.stubs == ["ex-t-code"]


def test_tagged_solution_without_an_exercise_is_an_error():
    with pytest.raises(ValueError, match="no exercise precedes it"):
        se.student_notebook(notebook(code_cell("y = 2", tags=["solution"])))


def test_gated_solution_cells_become_one_stub():
    start = "Text before.\n\n```{solution-start} ex-t-code\n:class: dropdown\n```\nSECRET-INTRO"
    end = "```{solution-end}\n```\nText after."
    nb = notebook(EXERCISE, start, code_cell("a = 1  # SECRET-LINE"), "SECRET-MIDDLE",
                  code_cell("b = 2  # SECRET-LINE"), end)
    student, report = se.student_notebook(nb)
    assert [c.source.split("\n")[0] for c in student.cells if c.cell_type == "markdown"] == [
        EXERCISE.split("\n")[0], "Text before.", "Text after."]
    assert len(stubs(student)) == 1 and report.stubs == ["ex-t-code"]
    assert "SECRET" not in text(student)
    nbformat.validate(student)


def test_unclosed_gated_solution_is_an_error():
    with pytest.raises(ValueError, match="has no solution-end"):
        se.student_notebook(notebook(EXERCISE, "```{solution-start} ex-t-code\n```", code_cell("a = 1")))


def test_outputs_are_stripped_and_the_original_is_untouched():
    cell = code_cell("1 + 1")
    cell.outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    cell.execution_count = 1
    nb = notebook(cell, f"{EXERCISE}\n\n{CODE_SOLUTION}")
    before = nbformat.writes(nb)
    student, _ = se.student_notebook(nb)
    assert student.cells[0].outputs == [] and student.cells[0].execution_count is None
    assert nbformat.writes(nb) == before


def test_stub_message_is_one_line_and_quotes_safely():
    source = se.stub_source("ex-9", 'say "hi"\nand more')
    assert "\n" not in source
    assert raised_by(source) == 'Exercise ex-9: say "hi"\nand more'
    assert se.hint("  A   title\n", ["def g(x,\n      y=2): pass"]) == "A title (define g(x, y=2))"
    assert se.hint("T", ["this is not python("]) == "T"


def test_stub_names_the_check_of_its_exercise():
    nb = notebook(f"{EXERCISE}\n\n{CODE_SOLUTION}")
    student, _ = se.student_notebook(nb, checks={"ex-t-code": "check_sum"})
    assert raised_by(stubs(student)[0].source) == (
        "Exercise ex-t-code: Write a function (define f(a, b, *, scale=1); check with qnnlib.exercises.check_sum)")


def test_check_table_is_read_from_the_source_without_importing_qnnlib():
    from qnnlib.exercises import CHECKS

    assert se.exercise_checks() == CHECKS
    assert se.exercise_checks(ROOT / "no-such-file.py") == {}


def test_markdown_page_loses_its_solutions():
    page = f"# Page\n\n{EXERCISE}\n\n{CODE_SOLUTION}\n\n{PAPER_EXERCISE}\n\n{PAPER_SOLUTION}\n"
    report = se.Report()
    out = se.strip_markdown(page, report=report)
    assert "```python\nraise NotImplementedError(\"Exercise ex-t-code:" in out
    assert "SECRET" not in out and "{solution}" not in out and EXERCISE in out
    assert report.stubs == ["ex-t-code"] and report.pen_and_paper == ["ex-t-paper"]


def test_toc_copy_drops_missing_pages_and_empty_parts():
    toc = {"format": "jb-book", "root": "intro", "parts": [
        {"caption": "A", "chapters": [{"file": "a"}, {"file": "missing"}]},
        {"caption": "B", "chapters": [{"file": "gone"}]},
    ]}
    pruned = se.student_toc(toc, lambda f: f in ("intro", "a"))
    assert pruned["parts"] == [{"caption": "A", "chapters": [{"file": "a"}]}]
    assert len(toc["parts"]) == 2   # the input is not modified


def test_config_copy_hides_solutions_and_excludes_the_output():
    config = se.student_config({"title": "Book", "exclude_patterns": ["_build"], "sphinx": {"config": {"a": 1}}})
    assert config["title"] == "Book (student edition)"
    assert config["sphinx"]["config"] == {"a": 1, "hide_solutions": True}
    assert config["exclude_patterns"] == ["_build", "html"]


def test_config_copy_finds_the_local_extensions_from_its_new_place():
    # The copy lives in OUT/, so a folder relative to the book's root would not be found from there.
    config = se.student_config(yaml.safe_load((ROOT / "_config.yml").read_text()))
    local = config["sphinx"]["local_extensions"]
    assert local and all(Path(folder).is_absolute() and (Path(folder) / f"{name}.py").is_file()
                         for name, folder in local.items()), local


# --- the real chapters --------------------------------------------------------------------------


def _solution_codes(nb):
    codes = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for block in se.fenced_blocks(cell.source):
                if block.directive == "solution":
                    codes[block.argument] = se.python_code(block)
    return codes


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_exercise_of_a_chapter_has_a_stub_or_is_pen_and_paper(path):
    nb = nbformat.read(path, as_version=4)
    student, report = se.student_notebook(nb)
    nbformat.validate(student)
    codes = _solution_codes(nb)
    assert report.exercises, f"{path.name} has no exercises"
    assert sorted(report.removed) == sorted(codes) and len(report.removed) == len(set(report.removed))
    assert set(report.exercises) == set(report.stubs) | set(report.pen_and_paper), "an exercise without a solution"
    for label in report.pen_and_paper:
        assert codes[label] == [], f"{label} has code but no stub"
    stub_labels = [re.match(r'raise NotImplementedError\("Exercise (\S+): ', c.source)[1] for c in stubs(student)]
    assert stub_labels == report.stubs == [label for label in codes if codes[label]]
    # Nothing of a solution survives: no directive, no block of solution code.
    assert "{solution" not in text(student)
    for label, blocks in codes.items():
        for code in blocks:
            assert code not in text(student), f"the solution code of {label} is still there"
    # Everything else is unchanged: the chapter's own code cells, in order, and every exercise.
    assert [c.source for c in student.cells if c.cell_type == "code" and c not in stubs(student)] == [
        c.source for c in nb.cells if c.cell_type == "code"]
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for block in se.fenced_blocks(cell.source):
                if block.directive == "exercise":
                    exercise = "\n".join(cell.source.split("\n")[block.start:block.end + 1])
                    assert exercise in text(student)


def test_write_edition_writes_a_buildable_copy_of_the_book(tmp_path):
    reports = se.write_edition(tmp_path)
    for chapter in CHAPTERS:
        written = tmp_path / "book" / chapter.name
        assert written.exists() and chapter.name in reports
        nbformat.validate(nbformat.read(written, as_version=4))
    config = yaml.safe_load((tmp_path / "_config.yml").read_text())
    assert config["sphinx"]["config"]["hide_solutions"] is True
    toc = yaml.safe_load((tmp_path / "_toc.yml").read_text())
    for part in toc["parts"]:
        for chapter in part["chapters"]:
            assert any((tmp_path / chapter["file"]).with_suffix(s).exists() for s in (".md", ".ipynb"))
    assert (tmp_path / "book" / "references.bib").exists() and not (tmp_path / "book" / "results").exists()
    checked = [label for report in reports.values() for label in report.stubs if label in se.exercise_checks()]
    assert checked, "no stub names its check"
    for label in checked:
        chapter = next(name for name, report in reports.items() if label in report.stubs)
        text = (tmp_path / "book" / chapter).read_text()
        assert f"Exercise {label}: " in text and "check with qnnlib.exercises.check_" in text
