"""Tests for tools/assignments.py and tools/assignment_questions.py: the teacher's loop.

First the questions themselves, in process and for every chapter (fast): the reference solution
passes every test case, a stub fails every one, the plausible wrong answer fails with the check's
message. Then the loop end to end with otter: generate every chapter's assignment, and grade with
``otter run`` the solution, the untouched student notebook and one wrong answer of Chapters 1 and 4
(grading costs about 7 CPU-seconds a notebook, 35 s of wall time on a loaded 2-core machine; every
chapter's four kinds were graded the same way by hand when this test was written), a corrupt notebook
and a text file, all in one folder (time limit 90 s, above a loaded machine's grading time); and an
infinite loop on its own, with a limit of 15 s.
"""

import ast
import csv
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
_spec = importlib.util.spec_from_file_location("assignments", ROOT / "tools" / "assignments.py")
assignments = sys.modules["assignments"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(assignments)
from assignment_questions import QUESTIONS, SETUP  # noqa: E402

ALL = [q for questions in QUESTIONS.values() for q in questions]
GRADED = ["01_heisenberg", "04_derivation"]   # the chapters graded with otter in this test
# The wrong answer graded per chapter, and a phrase of the check's message it must produce.
WRONG = {"01_heisenberg": ("ex-01-tent", "is the variance Δx² of the closed form"),
         "04_derivation": ("ex-04-linear", "you summed ψ² on the two faces")}


def run_cases(question, body):
    """Run every test case of ``question`` against the function ``body``: a list of errors (None = pass)."""
    namespace = {}
    exec(SETUP, namespace)
    exec(question.setup, namespace)
    exec(question.function(body), namespace)
    results = []
    for case in [question.public, *question.hidden]:
        try:
            for statement in case:
                exec(statement, namespace)
            results.append(None)
        except Exception as error:  # noqa: BLE001
            results.append(error)
    return results


@pytest.mark.parametrize("question", ALL, ids=[q.label for q in ALL])
def test_reference_solution_passes_every_case(question):
    assert run_cases(question, question.solution) == [None] * question.points


@pytest.mark.parametrize("question", ALL, ids=[q.label for q in ALL])
def test_stub_fails_every_case_saying_not_done(question):
    errors = run_cases(question, assignments.stub_line(question) + "\n")
    # Either the stub's own error, or a check's "not done yet" naming the exercise.
    assert all(f"Exercise {question.label}" in str(e) and (isinstance(e, NotImplementedError) or
                                                           str(e).startswith("not done yet")) for e in errors)


@pytest.mark.parametrize("question", ALL, ids=[q.label for q in ALL])
def test_wrong_answer_fails_a_hidden_case_with_a_message(question):
    errors = run_cases(question, question.wrong)
    assert any(isinstance(e, AssertionError) and str(e) for e in errors[1:])   # ExerciseError is one


def test_every_question_is_an_exercise_of_its_chapter():
    for stem, questions in QUESTIONS.items():
        found = assignments.chapter_exercises(ROOT / "book" / f"{stem}.ipynb")
        for question in questions:
            assert question.label in found and found[question.label][1]


def test_plain_markdown_turns_roles_into_markdown():
    text = "See {prf:ref}`thm-x`, {math}`a^2`, {ref}`the box <sec-box>` and {code}`f(x)`."
    assert assignments.plain_markdown(text) == "See thm-x, $a^2$, the box and `f(x)`."


def test_a_submission_that_lost_its_metadata_is_recognised_by_its_checks(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('grader.check("ex_04_linear")')])
    nbformat.write(nb, tmp_path / "lost.ipynb")
    assert assignments.assignment_of(tmp_path / "lost.ipynb") == ("04_derivation", "graded")
    nb.metadata["otter"] = {"assignment_name": "99_unknown"}
    nbformat.write(nb, tmp_path / "other.ipynb")
    assert assignments.assignment_of(tmp_path / "other.ipynb")[0] is None


def test_grade_refuses_a_missing_folder_with_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "assignments.py"), "grade",
                             str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------
# The loop, end to end
# ---------------------------------------------------------------------------------------------


def student_text(out: Path) -> str:
    """Everything a student receives, as text: the notebooks' files and their sources."""
    parts = []
    for path in sorted((out / "student").rglob("*")):
        if path.is_file():
            parts.append(path.read_text())
            if path.suffix == ".ipynb":
                parts += [cell.source for cell in nbformat.read(path, as_version=4).cells]
    return "\n".join(parts)


def forms(statement: str) -> set[str]:
    """A statement as written and as otter writes it into test files (ast.unparse: quotes change)."""
    return {statement, ast.unparse(ast.parse(statement))}


def secrets(question, solution: bool = True) -> list[str]:
    """The hidden test statements and the solution lines, in every form they could leak in.

    Statements that the public test shares (``m = linear_moments()``) are not secret.
    """
    public = {f for s in question.public for f in forms(s)}
    lines = [f for case in question.hidden for s in case for f in forms(s) if f not in public]
    if solution:
        lines += [line.split("#")[0].strip() for line in question.solution.splitlines()]
    return [line for line in lines if len(line) > 12]


def autograder_codes(path: Path) -> str:
    """The code of every test case in an autograder zip (hidden ones included)."""
    codes = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.startswith("tests/") and name.endswith(".py"):
                namespace = {}
                exec(archive.read(name).decode(), namespace)
                codes += [case["code"] for suite in namespace["test"]["suites"] for case in suite["cases"]]
    return "\n".join(codes)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("assignments")
    assignments.build(out)
    return out


@pytest.fixture(scope="module")
def graded(built, tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    for stem in GRADED:
        short = stem[:2]
        student = nbformat.read(built / "student" / f"{stem}.ipynb", as_version=4)
        nbformat.write(nbformat.read(built / "solutions" / f"{stem}.ipynb", as_version=4),
                       folder / f"solution{short}.ipynb")
        nbformat.write(student, folder / f"untouched{short}.ipynb")
        label, _ = WRONG[stem]
        answers = {q.label: (q.wrong if q.label == label else q.solution) for q in QUESTIONS[stem]}
        nbformat.write(assignments.filled_in(student, answers), folder / f"wrong{short}.ipynb")
    (folder / "corrupt.ipynb").write_text('{"cells": [{"cell_type": "code", ')
    (folder / "notes.txt").write_text("my answers are in the PDF")
    return grade(folder, built, tmp_path_factory.mktemp("graded"), timeout=90)


def grade(folder: Path, built: Path, out: Path, timeout: int) -> tuple[Path, dict]:
    """``tools/assignments.py grade`` on a folder, as a teacher runs it: the output folder and the CSV's rows."""
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "assignments.py"), "grade", str(folder),
                             "--out", str(out), "--assignments", str(built), "--timeout", str(timeout), "--jobs", "2"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out / "grades.csv") as handle:
        rows = {row["student"]: row for row in csv.DictReader(handle)}
    return out, rows


def test_build_writes_a_student_notebook_autograder_and_solution_per_chapter(built):
    for stem in QUESTIONS:
        for sub, suffix in (("student", ".ipynb"), ("autograder", ".zip"), ("solutions", ".ipynb")):
            assert (built / sub / f"{stem}{suffix}").is_file()
    assert sorted(p.name for p in (built / "student").iterdir()) == sorted(f"{s}.ipynb" for s in QUESTIONS)


def test_student_notebooks_are_colab_notebooks_with_a_check_per_question(built):
    url, branch = assignments.repository()
    for stem, questions in QUESTIONS.items():
        nb = nbformat.read(built / "student" / f"{stem}.ipynb", as_version=4)
        sources = [cell.source for cell in nb.cells]
        assert f"blob/{assignments.ASSIGNMENTS_BRANCH}/{stem}.ipynb" in sources[1]
        assert f"git+{url}@{branch}" in sources[2] and f"otter-grader=={assignments.OTTER_VERSION}" in sources[2]
        assert nb.metadata["otter"]["assignment_name"] == stem
        for question in questions:
            assert sum(assignments.stub_line(question) in s for s in sources) == 1
            assert f'grader.check("{assignments.qname(question.label)}")' in sources


def test_no_hidden_test_or_solution_reaches_the_student_material(built):
    text = student_text(built)
    assert "hidden': True" not in text and "BEGIN SOLUTION" not in text
    for question in ALL:
        for secret in secrets(question):
            assert secret not in text, f"{question.label}: {secret!r} is in the student material"
    # The test of the test: the same search finds them in what the teacher keeps.
    solutions = "\n".join(p.read_text() for p in (built / "solutions").glob("*.ipynb"))
    assert all(json.dumps(question.solution.splitlines()[0].strip())[1:-1] in solutions for question in ALL)
    for stem, questions in QUESTIONS.items():
        hidden = autograder_codes(built / "autograder" / f"{stem}.zip")
        assert all(any(f in hidden for f in forms(q.hidden[0][0])) for q in questions)


@pytest.mark.slow
def test_solutions_get_full_marks(graded):
    _, rows = graded
    for stem in GRADED:
        row = rows[f"solution{stem[:2]}"]
        assert row["status"] == "graded" and float(row["total"]) == float(row["possible"]) > 0
        for question in QUESTIONS[stem]:
            assert float(row[assignments.qname(question.label)]) == question.points


@pytest.mark.slow
def test_untouched_student_notebooks_get_zero_and_are_told_not_done(graded):
    out, rows = graded
    for stem in GRADED:
        row = rows[f"untouched{stem[:2]}"]
        assert row["status"] == "graded" and float(row["total"]) == 0
        assert all(float(row[assignments.qname(q.label)]) == 0 for q in QUESTIONS[stem])
        feedback = (out / "feedback" / f"untouched{stem[:2]}.txt").read_text()
        assert all(f"NotImplementedError: Exercise {q.label}" in feedback for q in QUESTIONS[stem])


@pytest.mark.slow
def test_a_wrong_answer_loses_exactly_its_points_with_the_check_message(graded):
    out, rows = graded
    for stem in GRADED:
        label, message = WRONG[stem]
        row = rows[f"wrong{stem[:2]}"]
        for question in QUESTIONS[stem]:
            expected = 0 if question.label == label else question.points
            assert float(row[assignments.qname(question.label)]) == expected
        lost = next(q.points for q in QUESTIONS[stem] if q.label == label)
        assert float(row["total"]) == float(row["possible"]) - lost
        feedback = (out / "feedback" / f"wrong{stem[:2]}.txt").read_text()
        assert message in feedback
        assert not any(s in feedback for q in QUESTIONS[stem] for s in secrets(q, solution=False))


@pytest.mark.slow
def test_bad_submissions_get_a_row_saying_so_and_the_others_are_graded(graded):
    out, rows = graded
    assert rows["corrupt"]["status"].startswith("not a valid notebook")
    assert rows["notes"]["status"].startswith("not a notebook")
    assert all(rows[name]["total"] == "" for name in ("corrupt", "notes"))
    assert len(rows) == 3 * len(GRADED) + 2
    assert all((out / "feedback" / f"{name}.txt").is_file() for name in rows)


@pytest.mark.slow
def test_a_submission_that_never_ends_is_stopped_at_the_time_limit(built, tmp_path):
    # Graded on its own, with a short limit: in the folder above it would hold a worker for the
    # 90 s that the real submissions are allowed on a loaded machine.
    folder = tmp_path / "submissions"
    folder.mkdir()
    looping = nbformat.read(built / "solutions" / "01_heisenberg.ipynb", as_version=4)
    looping.cells.insert(5, nbformat.v4.new_code_cell("while True:\n    pass"))
    nbformat.write(looping, folder / "loop.ipynb")
    out, rows = grade(folder, built, tmp_path / "graded", timeout=15)
    assert rows["loop"]["status"] == "timed out after 15 s" and rows["loop"]["total"] == ""
    assert (out / "feedback" / "loop.txt").is_file()


def execute_outside_the_repository(path: Path, tmp_path: Path) -> list[str]:
    """Run a notebook in an empty folder with PYTHONPATH unset, as a student would; its outputs."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.pop("PYTHONPATH", None)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        if env_before is not None:
            os.environ["PYTHONPATH"] = env_before
    return ["".join(o.get("text", "") or json.dumps(o.get("data", {}), ensure_ascii=False) for o in cell.get("outputs", []))
            for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.slow
def test_public_checks_in_the_student_notebook_report_stubs_mistakes_and_passes(built, tmp_path):
    # One run of Chapter 1's notebook: ex-01-gaussian left as the stub, ex-01-tent wrong, ex-01-moving right.
    student = nbformat.read(built / "student" / "01_heisenberg.ipynb", as_version=4)
    questions = {q.label: q for q in QUESTIONS["01_heisenberg"]}
    answers = {"ex-01-tent": questions["ex-01-tent"].wrong, "ex-01-moving": questions["ex-01-moving"].solution}
    nbformat.write(assignments.filled_in(student, answers), tmp_path / "mine.ipynb")
    outputs = execute_outside_the_repository(tmp_path / "mine.ipynb", tmp_path)
    checks = [o for o in outputs if "results:" in o]
    assert len(checks) == 3
    assert "NotImplementedError: Exercise ex-01-gaussian" in checks[0] and "All test cases passed" not in checks[0]
    assert "is the variance Δx² of the closed form" in checks[1]
    assert "All test cases passed" in checks[2]
    assert (tmp_path / assignments.PUBLIC_DIR / "ex_01_tent.py").is_file()


def test_student_notebooks_hold_no_myst_that_colab_would_show_raw(built):
    from colab_markdown import leftover_syntax   # myst-parser's own tokenizer (tools/colab_markdown.py)

    for stem in QUESTIONS:
        nb = nbformat.read(built / "student" / f"{stem}.ipynb", as_version=4)
        assert [leftover_syntax(c.source) for c in nb.cells if c.cell_type == "markdown"] == \
            [[] for c in nb.cells if c.cell_type == "markdown"], stem


def test_a_kernel_that_did_not_start_is_graded_once_more_and_nothing_else_is(monkeypatch, tmp_path):
    calls = []

    def otter(submission, autograder, timeout):
        calls.append(submission)
        if len(calls) == 1:
            return None, "grading failed (exit 1): RuntimeError: Kernel didn't respond in 60 seconds"
        return {"tests": []}, "graded"

    monkeypatch.setattr(assignments, "run_otter", otter)
    monkeypatch.setattr(assignments, "assignment_of", lambda path: ("01_heisenberg", "graded"))
    row, _ = assignments.grade_one(tmp_path / "a.ipynb", tmp_path, 10)
    assert row["status"] == "graded" and len(calls) == 2
    calls.clear()
    monkeypatch.setattr(assignments, "run_otter", lambda *a: (calls.append(a), (None, "timed out after 10 s"))[1])
    row, _ = assignments.grade_one(tmp_path / "a.ipynb", tmp_path, 10)
    assert row["status"] == "timed out after 10 s" and len(calls) == 1
