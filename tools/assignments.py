"""Auto-graded assignments from the chapters (otter-grader), and grading a folder of submissions.

``python tools/assignments.py build [OUT]`` (``make assignments``; OUT defaults to
``_build/assignments``) writes, for each chapter with auto-graded questions
(``tools/assignment_questions.py``):

* ``OUT/student/NN_name.ipynb`` — what students get: Colab badge and install cell, the exercise
  statements of the chapter (MyST turned into plain Markdown), a stub per question
  (``raise NotImplementedError("Exercise ex-..")``) and a ``grader.check("ex_..")`` cell after it.
  The public tests are inside the notebook (the code cell after the install cell writes them to
  ``public_tests/``), because otter's checks read test files and Colab opens a notebook alone. The
  chapter's other exercises follow as written work, graded by hand.
* ``OUT/autograder/NN_name.zip`` — otter's autograder configuration, with the hidden tests;
  ``OUT/solutions/NN_name.ipynb`` — the student notebook with the reference solutions filled in.
* ``OUT/master/NN_name.ipynb`` and ``OUT/otter/NN_name/`` — the intermediate otter-assign master
  and otter's own output.

``python tools/assignments.py grade DIR [--out OUT] [--timeout S]`` (``make grade SUBMISSIONS=DIR``)
grades every file in DIR with ``otter run`` (no Docker), one subprocess per submission with a
time limit (student code runs unsandboxed: grade in a throw-away account or container if you do not
trust it), ``QNNLIB_FAST=1``, no network. It writes ``OUT/grades.csv`` (one row per submission:
student, assignment, status, one column per question, total, possible) and
``OUT/feedback/STUDENT.txt``. A file that is not a notebook, does not parse, names no known
assignment, fails to grade or runs past the time limit gets a row saying so; the others go on.

The chapter notebooks (book/*.ipynb) stay the single source of the exercise statements; the student
edition of the whole book (``tools/student_edition.py``) supplies the parsing of MyST blocks.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from assignment_questions import QUESTIONS, SETUP, Question  # noqa: E402
from student_edition import fenced_blocks  # noqa: E402
from sync_notebooks import badge_source, install_source, repository  # noqa: E402

OTTER_VERSION = "7.0.0"
# The branch that the book workflow (.github/workflows/book.yml) publishes the student notebooks to.
ASSIGNMENTS_BRANCH = "assignments"
PUBLIC_DIR = "public_tests"
STUB = 'raise NotImplementedError("Exercise {label}: write {signature}")'
_CHECK = re.compile(r"""grader\.check\(\s*["'](\w+)["']""")
_ROLE = re.compile(r"\{(?P<role>[\w:-]+)\}`(?P<text>[^`]*)`")


def qname(label: str) -> str:
    """The otter question name of an exercise label: ``ex-01-tent`` -> ``ex_01_tent``."""
    return label.replace("-", "_")


def plain_markdown(text: str) -> str:
    """MyST inline roles as plain Markdown: ``{math}`a``` -> ``$a$``, ``{prf:ref}`x``` -> ``x``."""
    def role(match):
        name, body = match["role"], match["text"]
        if name == "math":
            return f"${body}$"
        body = re.sub(r"\s*<[^>]*>$", "", body)   # {ref}`text <target>` keeps its text
        return f"`{body}`" if name in ("code", "samp") else body
    return _ROLE.sub(role, text)


def chapter_exercises(path: Path) -> dict[str, tuple[str, str]]:
    """Label -> (title, statement) of every ``exercise`` directive of a chapter notebook."""
    found = {}
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        for block in fenced_blocks(cell.source):
            if block.directive == "exercise" and (label := block.options().get("label")):
                body = [line for line in block.body if not re.match(r"^:[\w-]+:", line.strip())]
                found[label] = (block.argument, plain_markdown("\n".join(body).strip()))
    return found


def chapter_title(path: Path) -> str:
    first = nbformat.read(path, as_version=4).cells[0].source.splitlines()[0]
    return plain_markdown(first.lstrip("# ").strip())


# ---------------------------------------------------------------------------------------------
# The otter-assign master notebook
# ---------------------------------------------------------------------------------------------


def stub_line(q: Question) -> str:
    return "    " + STUB.format(label=q.label, signature=q.signature)


def answer_cell_source(q: Question) -> str:
    """The reference solution, fenced so that otter shows the stub to students instead."""
    return q.function("    # BEGIN SOLUTION NO PROMPT\n" + q.solution + "    # END SOLUTION\n"
                      f'    """ # BEGIN PROMPT\n{stub_line(q)}\n    """ # END PROMPT')


def test_source(statements: list[str], hidden: bool, points: int = 1) -> str:
    config = f'""" # BEGIN TEST CONFIG\npoints: {points}\nhidden: {str(hidden).lower()}\n""" # END TEST CONFIG\n'
    return config + "\n".join(statements)


def master_notebook(stem: str, questions: list[Question]) -> nbformat.NotebookNode:
    """The otter-assign master of one chapter: config, statements, fenced solutions, tests."""
    v4 = nbformat.v4
    chapter = ROOT / "book" / f"{stem}.ipynb"
    exercises = chapter_exercises(chapter)
    total = sum(q.points for q in questions)
    config = {"name": stem, "init_cell": False, "check_all_cell": False, "export_cell": False,
              "requirements": None, "tests": {"files": True, "ok_format": True},
              "generate": {"pdf": False, "filtering": False, "show_stdout": False}}
    cells = [
        v4.new_raw_cell("# ASSIGNMENT CONFIG\n" + json.dumps(config, indent=2)),
        v4.new_markdown_cell(f"# Assignment: {chapter_title(chapter)}\n\n"
                             f"The exercises of the chapter `{stem}` that are graded automatically "
                             f"({total} points), then the others as written work. Replace each "
                             "`raise NotImplementedError(...)` line by your code and run the "
                             "`grader.check(...)` cell below it: it says what is wrong, not only "
                             "that something is. The teacher grades with more (hidden) tests "
                             "at other arguments, so make your function general."),
        v4.new_code_cell("\n\n".join([SETUP, *[q.setup for q in questions if q.setup]])),
    ]
    for q in questions:
        title, statement = exercises.get(q.label, ("", ""))
        if not statement:
            raise ValueError(f"{stem}: no exercise {q.label!r} in {chapter.name}")
        cells += [
            v4.new_raw_cell(f"# BEGIN QUESTION\nname: {qname(q.label)}\npoints: {q.points}"),
            v4.new_markdown_cell(f"## {title} ({q.points} points)\n\n{statement}\n\n"
                                 f"**To do:** {q.task}\n\n`{q.signature}`: {q.doc}"),
            v4.new_raw_cell("# BEGIN SOLUTION"),
            v4.new_code_cell(answer_cell_source(q)),
            v4.new_raw_cell("# END SOLUTION"),
            v4.new_raw_cell("# BEGIN TESTS"),
            v4.new_code_cell(test_source(q.public, hidden=False)),
            *[v4.new_code_cell(test_source(case, hidden=True)) for case in q.hidden],
            v4.new_raw_cell("# END TESTS"),
            v4.new_raw_cell("# END QUESTION"),
        ]
    graded = {q.label for q in questions}
    written = [(label, t, s) for label, (t, s) in exercises.items() if label not in graded]
    if written:
        cells.append(v4.new_markdown_cell("## Written exercises (graded by hand)\n\n" + "\n\n".join(
            f"### {title}\n\n{statement}" for _, title, statement in written)))
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# ---------------------------------------------------------------------------------------------
# The student notebook
# ---------------------------------------------------------------------------------------------


def read_public_tests(tests_dir: Path) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted(tests_dir.glob("*.py"))}


def init_source(public: dict[str, str]) -> str:
    """Write the public tests beside the notebook (Colab opens the notebook alone), start otter."""
    # Not ./tests: when grading, otter puts the full tests there, and this cell must not replace them.
    return (f"# The public checks of this assignment: written to {PUBLIC_DIR}/ for grader.check(...).\n"
            "import os\n\n"
            f"PUBLIC_TESTS = {json.dumps(public, indent=1, ensure_ascii=False)}\n"
            f'os.makedirs("{PUBLIC_DIR}", exist_ok=True)\n'
            "for _name, _text in PUBLIC_TESTS.items():\n"
            f'    with open(os.path.join("{PUBLIC_DIR}", _name + ".py"), "w", encoding="utf-8") as _file:\n'
            "        _file.write(_text)\n\n"
            "import otter\n"
            f'grader = otter.Notebook(tests_dir="{PUBLIC_DIR}")')


def colab_cells(stem: str, public: dict[str, str]) -> list[nbformat.NotebookNode]:
    url, _ = repository()
    _, branch = repository()
    badge = nbformat.v4.new_markdown_cell(badge_source(url, ASSIGNMENTS_BRANCH, f"{stem}.ipynb"), id="colab-badge")
    install = nbformat.v4.new_code_cell(
        install_source(url, branch) + "\ntry:\n    import otter\nexcept ImportError:\n"
        f'    %pip install --quiet "otter-grader=={OTTER_VERSION}"', id="colab-install")
    install.metadata["tags"] = ["hide-output"]
    init = nbformat.v4.new_code_cell(init_source(public), id="otter-init")
    init.metadata["tags"] = ["hide-input"]
    return [badge, install, init]


def student_notebook(otter_student: Path, stem: str, public: dict[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.read(otter_student, as_version=4)
    nb.cells = [nb.cells[0], *colab_cells(stem, public), *nb.cells[1:]]
    for k, cell in enumerate(nb.cells):
        cell.setdefault("id", f"cell-{k}")
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata["colab"] = {"provenance": [], "toc_visible": True}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["otter"] = {"assignment_name": stem}   # what `grade` reads to pick the autograder
    nbformat.validate(nb)
    return nb


def filled_in(student: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The student notebook with the stubs of ``answers`` (label -> function body) replaced."""
    nb = copy.deepcopy(student)
    questions = {q.label: q for qs in QUESTIONS.values() for q in qs}
    for label, body in answers.items():
        line = stub_line(questions[label]) + "\n"
        cells = [c for c in nb.cells if c.cell_type == "code" and line.rstrip("\n") in c.source]
        if len(cells) != 1:
            raise ValueError(f"the stub of {label} is in {len(cells)} cells, expected 1")
        cells[0].source = (cells[0].source + "\n").replace(line, body).rstrip("\n")
    return nb


def build(out: Path, stems: list[str] | None = None) -> dict[str, Path]:
    """Write the assignments of ``stems`` (default: all) into ``out``; return stem -> student notebook."""
    from otter.assign import main as otter_assign

    written = {}
    for stem in stems or list(QUESTIONS):
        questions = QUESTIONS[stem]
        master = out / "master" / f"{stem}.ipynb"
        master.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(master_notebook(stem, questions), master)
        dist = out / "otter" / stem
        shutil.rmtree(dist, ignore_errors=True)
        # Tests are not run here: tests/test_assignments.py grades the solution notebooks instead.
        otter_assign(str(master), str(dist), no_pdfs=True, no_run_tests=True)
        public = read_public_tests(dist / "student" / "tests")
        student = student_notebook(dist / "student" / f"{stem}.ipynb", stem, public)
        for sub in ("student", "solutions", "autograder"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        nbformat.write(student, out / "student" / f"{stem}.ipynb")
        nbformat.write(filled_in(student, {q.label: q.solution for q in questions}),
                       out / "solutions" / f"{stem}.ipynb")
        (zip_path,) = (dist / "autograder").glob("*.zip")
        shutil.copyfile(zip_path, out / "autograder" / f"{stem}.zip")
        written[stem] = out / "student" / f"{stem}.ipynb"
    return written


# ---------------------------------------------------------------------------------------------
# Grading a folder
# ---------------------------------------------------------------------------------------------


def assignment_of(path: Path) -> tuple[str | None, str]:
    """The assignment a submission names in its metadata, or (None, why it cannot be graded)."""
    if path.suffix != ".ipynb":
        return None, f"not a notebook ({path.suffix or 'no extension'})"
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as error:  # noqa: BLE001 - any parse failure is reported in the CSV
        return None, f"not a valid notebook: {type(error).__name__}: {str(error).splitlines()[0][:120]}"
    name = nb.metadata.get("otter", {}).get("assignment_name")
    if name is None:   # metadata lost on the way (an editor that drops unknown keys): the checks
        checked = {m for c in nb.cells if c.cell_type == "code" for m in _CHECK.findall(c.source)}
        names = [stem for stem, qs in QUESTIONS.items() if checked & {qname(q.label) for q in qs}]
        name = names[0] if len(names) == 1 else None
    if name not in QUESTIONS:
        return None, f"names no known assignment ({name!r})"
    return name, "graded"


# What otter reports when the notebook's kernel did not start within its 60 s (on a loaded
# machine): the submission is graded once more before that counts as its result.
KERNEL_DID_NOT_START = "Kernel didn't respond"


def run_otter(submission: Path, autograder: Path, timeout: float) -> tuple[dict | None, str]:
    """Grade one notebook with ``otter run`` in its own process group; (results, status)."""
    with tempfile.TemporaryDirectory() as work:
        env = {**os.environ, "QNNLIB_FAST": "1", "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "otter", "run", "-a", str(autograder.resolve()), "-o", work,
                   "--no-logo", str(submission.resolve())]
        process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)   # the kernel too, not only otter
            process.communicate()
            return None, f"timed out after {timeout:g} s"
        results = Path(work) / "results.json"
        if process.returncode != 0 or not results.exists():
            last = (output.strip().splitlines() or ["no output"])[-1][:200]
            return None, f"grading failed (exit {process.returncode}): {last}"
        return json.loads(results.read_text()), "graded"


def feedback_text(student: str, stem: str | None, status: str, results: dict | None) -> str:
    """What the student gets back: status, points per question, the public checks' messages.

    Hidden test cases are counted, never shown (otter's per-question output quotes their code).
    """
    lines = [f"Feedback for {student}" + (f", assignment {stem}" if stem else ""), f"status: {status}"]
    if results is None:
        return "\n".join(lines) + "\n"
    scores = {t["name"]: t for t in results.get("tests", []) if "score" in t}
    for question in QUESTIONS[stem]:
        test = scores.get(qname(question.label), {"score": 0, "max_score": question.points})
        lines.append(f"{question.label}: {test['score']:g} / {question.points} points")
    public = next((t for t in results.get("tests", []) if t["name"] == "Public Tests"), None)
    if public:
        lines += ["", "Public checks (the ones you can run with grader.check):", public.get("output", "").strip()]
    return "\n".join(lines) + "\n"


def grade_one(path: Path, autograders: Path, timeout: float) -> tuple[dict, dict | None]:
    stem, status = assignment_of(path)
    results = None
    if stem is not None:
        results, status = run_otter(path, autograders / f"{stem}.zip", timeout)
        if results is None and KERNEL_DID_NOT_START in status:  # a busy machine, not the submission: once more
            results, status = run_otter(path, autograders / f"{stem}.zip", timeout)
    row = {"student": path.stem, "assignment": stem or "", "status": status}
    if results is not None:
        scores = {t["name"]: t["score"] for t in results.get("tests", []) if "score" in t}
        for question in QUESTIONS[stem]:
            row[qname(question.label)] = float(scores.get(qname(question.label), 0.0))
        row["total"] = sum(row[qname(q.label)] for q in QUESTIONS[stem])
    if stem is not None:
        row["possible"] = sum(q.points for q in QUESTIONS[stem])
    return row, results


def grade_folder(folder: Path, out: Path, autograders: Path, timeout: float = 600, jobs: int = 1) -> list[dict]:
    """Grade every file of ``folder``; write ``out/grades.csv``, ``out/feedback/`` and ``out/results/``.

    Returns the CSV rows. One submission's failure or time-out only fills its own row.
    """
    from concurrent.futures import ThreadPoolExecutor

    for sub in ("feedback", "results"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    with ThreadPoolExecutor(max_workers=jobs) as pool:   # each submission is its own process
        graded = list(pool.map(lambda p: grade_one(p, autograders, timeout), paths))
    rows, columns = [], []
    for path, (row, results) in zip(paths, graded):
        stem = row["assignment"] or None
        if stem:
            columns += [qname(q.label) for q in QUESTIONS[stem] if qname(q.label) not in columns]
        (out / "feedback" / f"{path.stem}.txt").write_text(feedback_text(path.stem, stem, row["status"], results))
        if results is not None:   # for the teacher: otter's full output, hidden tests included
            (out / "results" / f"{path.stem}.json").write_text(json.dumps(results, indent=1))
        rows.append(row)
        print(f"{path.name}: {row['status']}" + (f", {row['total']:g} / {row['possible']}" if "total" in row else ""))
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["student", "assignment", "status", *columns, "total", "possible"])
        writer.writeheader()
        writer.writerows({k: f"{v:g}" if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python tools/assignments.py", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write the assignments")
    make.add_argument("out", nargs="?", type=Path, default=ROOT / "_build" / "assignments")
    make.add_argument("--chapter", action="append", choices=list(QUESTIONS), help="only these chapters")
    grade = commands.add_parser("grade", help="grade a folder of submissions to a CSV")
    grade.add_argument("submissions", type=Path)
    grade.add_argument("--out", type=Path, help="where grades.csv and feedback/ go (default: SUBMISSIONS-graded)")
    grade.add_argument("--assignments", type=Path, default=ROOT / "_build" / "assignments",
                       help="the output of build (its autograder/ folder is used)")
    grade.add_argument("--timeout", type=float, default=600, help="seconds per submission (default 600)")
    grade.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    args = parser.parse_args(argv)
    if args.command == "build":
        for stem, path in build(args.out, args.chapter).items():
            print(f"{stem}: {sum(q.points for q in QUESTIONS[stem])} points -> {path}")
        print(f"autograders in {args.out / 'autograder'}, solutions in {args.out / 'solutions'}")
        return 0
    if not args.submissions.is_dir():
        print(f"assignments: SUBMISSIONS must be a folder, got {args.submissions}", file=sys.stderr)
        return 2
    if not (args.assignments / "autograder").is_dir():
        print(f"assignments: no autograders in {args.assignments}; run `make assignments` first", file=sys.stderr)
        return 2
    if not args.timeout > 0:
        print(f"assignments: --timeout must be > 0 seconds, got {args.timeout}", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"assignments: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    out = args.out or args.submissions.with_name(args.submissions.name + "-graded")
    grade_folder(args.submissions, out, args.assignments / "autograder", args.timeout, args.jobs)
    print(f"grades: {out / 'grades.csv'}, feedback: {out / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
