"""Write the student edition of the book: exercises kept, solutions replaced by stubs.

Each chapter's exercises (sphinx-exercise ``exercise`` directives) stay as they are. Every
solution goes:

* a ``solution`` directive in a markdown cell is cut out of the cell; if it holds code
  (```` ```python ```` blocks) a code cell with a one-line stub takes its place,
  ``raise NotImplementedError("Exercise ex-..: <hint>")``, where the student writes the answer;
  a solution without code (a pen-and-paper exercise) leaves nothing behind;
* a code cell tagged ``solution`` keeps its place and gets the stub as its source;
* a gated solution (``solution-start`` ... ``solution-end``, spanning cells) is removed with
  all its cells, and its code cells become one stub.

The hint is the exercise's title, the signatures of the functions the solution defines (so that
the student's function fits the checks), and the check of :mod:`qnnlib.exercises` for that
exercise, if there is one (its ``CHECKS`` table, read from the source without importing qnnlib).
Stub cells are tagged ``raises-exception`` (the book still builds while they are unanswered) and
``remove-output``.

Usage: ``python tools/student_edition.py [OUT]`` (default ``_build/student``). It writes a
buildable copy of the book source to OUT: ``OUT/book/NN_*.ipynb`` (the student notebooks, without
outputs), the other pages of ``book/`` with their solutions removed, and ``OUT/_config.yml`` and
``OUT/_toc.yml`` (solutions hidden, only existing pages listed). ``make student`` then builds it
with ``jupyter-book build OUT`` into ``OUT/html``.
"""

from __future__ import annotations

import ast
import copy
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOLUTION_TAG = "solution"
STUB_TAGS = ["raises-exception", "remove-output"]
PYTHON_INFOS = ("python", "python3", "py", "ipython", "ipython3")
# Folders of book/ that the build does not read (recorded runs are found through qnnlib itself).
SKIP_DIRS = {"results", "_build", ".ipynb_checkpoints"}

_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,}|:{3,})(?P<info>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.-]+)\}\s*(?P<arg>.*)$")
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")


# ---------------------------------------------------------------------------------------------
# Fenced blocks of MyST markdown
# ---------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One top-level fenced block: lines ``start`` (opening fence) to ``end`` (closing fence)."""

    start: int
    end: int
    info: str
    body: list[str]

    @property
    def directive(self) -> str | None:
        match = _DIRECTIVE.match(self.info)
        return match["name"] if match else None

    @property
    def argument(self) -> str:
        match = _DIRECTIVE.match(self.info)
        return match["arg"].strip() if match else ""

    def options(self) -> dict[str, str]:
        """The ``:key: value`` lines at the top of a directive's body."""
        options = {}
        for line in self.body:
            match = _OPTION.match(line.strip())
            if not match:
                break
            options[match["key"]] = match["value"].strip()
        return options


def fenced_blocks(text: str) -> list[Block]:
    """Top-level fenced blocks (code or directive, backticks, tildes or colons) of ``text``.

    A fence closes at a line of the same character at least as long as the opening one
    (CommonMark), so shorter fences nested inside a directive stay in its body.
    """
    lines = text.split("\n")
    blocks, k = [], 0
    while k < len(lines):
        match = _FENCE.match(lines[k])
        if not match or (match["fence"][0] == "`" and "`" in match["info"]):
            k += 1
            continue
        fence = match["fence"]
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = next((j for j in range(k + 1, len(lines)) if closing.match(lines[j])), len(lines))
        blocks.append(Block(k, end, match["info"].strip(), lines[k + 1:end]))
        k = end + 1
    return blocks


def python_code(block: Block) -> list[str]:
    """The source of every ```` ```python ```` block inside a directive's body."""
    codes = []
    for inner in fenced_blocks("\n".join(block.body)):
        words = inner.info.split()
        if words and words[0].lower() in PYTHON_INFOS:
            codes.append("\n".join(inner.body).strip("\n"))
    return codes


def exercise_titles(text: str) -> dict[str, str]:
    """Map each exercise label defined in ``text`` to its title."""
    titles = {}
    for block in fenced_blocks(text):
        if block.directive in ("exercise", "exercise-start"):
            label = block.options().get("label")
            if label:
                titles[label] = block.argument
    return titles


# ---------------------------------------------------------------------------------------------
# Stubs
# ---------------------------------------------------------------------------------------------


def defined_signatures(code: str) -> list[str]:
    """``name(args)`` of every top-level function the code defines (none if it does not parse)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []
    return [f"{node.name}({ast.unparse(node.args)})" for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def exercise_checks(module: Path = ROOT / "qnnlib" / "exercises.py") -> dict[str, str]:
    """The ``CHECKS`` table (exercise label -> check function) of ``qnnlib/exercises.py``, or {}."""
    if not module.exists():
        return {}
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CHECKS" for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def hint(title: str, codes: list[str], check: str | None = None) -> str:
    """One line: the exercise's title, which functions to define, and how to check them."""
    signatures = [s for code in codes for s in defined_signatures(code)]
    text = title or "your code here"
    extras = [f"define {', '.join(signatures)}"] if signatures else []
    if check:
        extras.append(f"check with qnnlib.exercises.{check}")
    if extras:
        text += f" ({'; '.join(extras)})"
    return " ".join(text.split())


def stub_source(label: str, hint_text: str) -> str:
    """The one line a student replaces: ``raise NotImplementedError("Exercise <label>: <hint>")``."""
    return f"raise NotImplementedError({json.dumps(f'Exercise {label}: {hint_text}', ensure_ascii=False)})"


def _cell_id(base: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]", "-", base)[:56] or "cell"
    candidate, k = base, 1
    while candidate in taken:
        candidate, k = f"{base}-{k}", k + 1
    taken.add(candidate)
    return candidate


def stub_cell(label: str, hint_text: str, cell_id: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(stub_source(label, hint_text), id=cell_id)
    cell.metadata["tags"] = list(STUB_TAGS)
    cell.metadata["exercise"] = label
    return cell


# ---------------------------------------------------------------------------------------------
# Markdown and notebooks
# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    """What the student edition did to one file."""

    stubs: list[str] = field(default_factory=list)           # exercise labels that got a stub
    removed: list[str] = field(default_factory=list)         # every solution removed, by exercise label
    exercises: dict[str, str] = field(default_factory=dict)  # label -> title

    @property
    def pen_and_paper(self) -> list[str]:
        """Exercises whose solution had no code: nothing for the student to run."""
        return [label for label in self.removed if label not in self.stubs]


def split_solutions(text: str, titles: dict[str, str], report: Report,
                    checks: dict[str, str] | None = None) -> list[tuple[str, str, str | None]]:
    """Cut every ``solution`` directive out of markdown ``text``.

    Returns the pieces in order: ``("markdown", text, None)`` for what remains between solutions
    and ``("stub", hint, label)`` where a solution with code was. Blank pieces are dropped.
    """
    lines = text.split("\n")
    pieces, cursor = [], 0
    for block in fenced_blocks(text):
        if block.directive != "solution":
            continue
        label = block.argument
        pieces.append(("markdown", "\n".join(lines[cursor:block.start]), None))
        codes = python_code(block)
        report.removed.append(label)
        if codes:
            report.stubs.append(label)
            pieces.append(("stub", hint(titles.get(label, ""), codes, (checks or {}).get(label)), label))
        cursor = block.end + 1
    pieces.append(("markdown", "\n".join(lines[cursor:]), None))
    merged = []  # text on both sides of a removed pen-and-paper solution stays in one piece
    for kind, piece, label in pieces:
        piece = piece.strip("\n")
        if not piece.strip():
            continue
        if kind == "markdown" and merged and merged[-1][0] == "markdown":
            merged[-1] = ("markdown", f"{merged[-1][1]}\n\n{piece}", None)
        else:
            merged.append((kind, piece, label))
    return merged


def strip_markdown(text: str, report: Report | None = None, checks: dict[str, str] | None = None) -> str:
    """A markdown page without its solutions; code solutions become ```` ```python ```` stubs."""
    report = report if report is not None else Report()
    titles = exercise_titles(text)
    report.exercises.update(titles)
    out = []
    for kind, piece, label in split_solutions(text, titles, report, checks):
        out.append(piece if kind == "markdown" else f"```python\n{stub_source(label, piece)}\n```")
    return "\n\n".join(out) + ("\n" if text.endswith("\n") else "")


def _gate_block(cell, name: str) -> Block | None:
    """The ``solution-start`` / ``solution-end`` directive of a markdown cell, if it has one."""
    if cell.cell_type != "markdown":
        return None
    return next((b for b in fenced_blocks(cell.source) if b.directive == name), None)


def _cell_label(cell, current: str | None) -> str:
    label = cell.metadata.get("exercise")
    label = label or next((t for t in cell.metadata.get("tags", []) if t.startswith("ex-")), None)
    label = label or current
    if not label:
        raise ValueError(f"cell {cell.get('id')!r} is tagged {SOLUTION_TAG!r} but no exercise precedes it; "
                         "give it an 'ex-...' tag")
    return label


def student_notebook(nb: nbformat.NotebookNode,
                     checks: dict[str, str] | None = None) -> tuple[nbformat.NotebookNode, Report]:
    """Return the student version of a notebook (a new object) and what was done.

    ``checks`` maps exercise labels to the names of their checks (:func:`exercise_checks`).
    """
    checks = checks or {}
    nb = copy.deepcopy(nb)
    report = Report()
    titles = {}
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            titles.update(exercise_titles(cell.source))
    report.exercises.update(titles)
    taken = {c.get("id") for c in nb.cells if c.get("id")}

    def markdown(source, like, suffix):
        new = copy.deepcopy(like)
        new.source = source
        if suffix:
            new.id = _cell_id(f"{like.get('id', 'md')}-{suffix}", taken)
        return new

    cells, current, gated, gated_codes = [], None, None, []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for block in fenced_blocks(cell.source):
                if block.directive in ("exercise", "exercise-start"):
                    current = block.options().get("label", current)
        if gated is None and (start := _gate_block(cell, "solution-start")):
            before = "\n".join(cell.source.split("\n")[:start.start]).strip("\n")
            if before.strip():
                cells.append(markdown(before, cell, None))
            gated, gated_codes = start.argument, []
            cell = markdown("\n".join(cell.source.split("\n")[start.end + 1:]), cell, None)
        if gated is not None:
            end = _gate_block(cell, "solution-end")
            if end is None:
                if cell.cell_type == "code":
                    gated_codes.append(cell.source)
                continue
            report.removed.append(gated)
            if gated_codes:
                report.stubs.append(gated)
                cells.append(stub_cell(gated, hint(titles.get(gated, ""), gated_codes, checks.get(gated)),
                                       _cell_id(f"stub-{gated}", taken)))
            gated = None
            after = "\n".join(cell.source.split("\n")[end.end + 1:]).strip("\n")
            if not after.strip():
                continue
            cell = markdown(after, cell, "after")
        if cell.cell_type == "code" and SOLUTION_TAG in cell.metadata.get("tags", []):
            label = _cell_label(cell, current)
            report.removed.append(label)
            report.stubs.append(label)
            cells.append(stub_cell(label, hint(titles.get(label, ""), [cell.source], checks.get(label)),
                                   cell.get("id") or _cell_id(f"stub-{label}", taken)))
            continue
        if cell.cell_type != "markdown" or "solution" not in cell.source:
            cells.append(cell)
            continue
        for k, (kind, piece, label) in enumerate(split_solutions(cell.source, titles, report, checks)):
            if kind == "markdown":
                cells.append(markdown(piece, cell, str(k) if k else None))
            else:
                cells.append(stub_cell(label, piece, _cell_id(f"stub-{label}", taken)))
    if gated is not None:
        raise ValueError(f"solution-start {gated!r} has no solution-end")
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells = cells
    nbformat.validate(nb)
    return nb, report


# ---------------------------------------------------------------------------------------------
# The book copy
# ---------------------------------------------------------------------------------------------


def _toc_files(entries) -> list[str]:
    files = []
    for entry in entries or []:
        if "file" in entry:
            files.append(entry["file"])
        for key in ("chapters", "sections", "parts"):
            files += _toc_files(entry.get(key))
    return files


def student_toc(toc: dict, exists) -> dict:
    """The table of contents without entries whose file does not exist (``exists(file)``)."""
    toc = copy.deepcopy(toc)

    def prune(entries):
        kept = []
        for entry in entries:
            if "file" in entry and not exists(entry["file"]):
                continue
            for key in ("chapters", "sections"):
                if key in entry:
                    entry[key] = prune(entry[key])
            kept.append(entry)
        return kept

    if "parts" in toc:
        toc["parts"] = [p for p in ({**p, "chapters": prune(p.get("chapters", []))} for p in toc["parts"])
                        if p["chapters"]]
    for key in ("chapters", "sections"):
        if key in toc:
            toc[key] = prune(toc[key])
    return toc


def student_config(config: dict, root: Path = ROOT) -> dict:
    """``_config.yml`` for the student edition: titled as such, solutions hidden, output excluded.

    Jupyter Book resolves local extension folders relative to the config file, which moves to
    OUT: they become absolute paths into the book at ``root`` (as in tools/offline_config.py).
    """
    config = copy.deepcopy(config)
    config["title"] = f"{config.get('title', 'Book')} (student edition)"
    config["exclude_patterns"] = [*config.get("exclude_patterns", []), "html"]
    sphinx = config.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    for name, folder in (sphinx.get("local_extensions") or {}).items():
        sphinx["local_extensions"][name] = (root / folder).resolve().as_posix()
    return config


def write_edition(out: Path, root: Path = ROOT) -> dict[str, Report]:
    """Write the student edition of the book at ``root`` into ``out``; return a report per file."""
    out.mkdir(parents=True, exist_ok=True)
    book, target = root / "book", out / "book"
    if target.exists():
        shutil.rmtree(target)
    reports, checks = {}, exercise_checks(root / "qnnlib" / "exercises.py")
    for path in sorted(book.rglob("*")):
        relative = path.relative_to(book)
        if path.is_dir() or SKIP_DIRS & set(relative.parts):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".ipynb":
            nb, reports[relative.as_posix()] = student_notebook(nbformat.read(path, as_version=4), checks)
            nbformat.write(nb, destination)
        elif path.suffix == ".md":
            reports[relative.as_posix()] = report = Report()
            destination.write_text(strip_markdown(path.read_text(), report=report, checks=checks))
        else:
            shutil.copy2(path, destination)
    config = yaml.safe_load((root / "_config.yml").read_text())
    header = "# Generated by tools/student_edition.py: do not edit.\n"
    (out / "_config.yml").write_text(header + yaml.safe_dump(student_config(config, root), sort_keys=False,
                                                             allow_unicode=True))
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pruned = student_toc(toc, lambda f: any((out / f).with_suffix(s).exists() for s in (".md", ".ipynb")))
    for missing in sorted(set(_toc_files(toc.get("parts", toc.get("chapters")))) - set(_toc_files(
            pruned.get("parts", pruned.get("chapters"))))):
        print(f"student edition: {missing} is in _toc.yml but does not exist; left out")
    (out / "_toc.yml").write_text(header + yaml.safe_dump(pruned, sort_keys=False, allow_unicode=True))
    return reports


def main(argv: list[str]) -> int:
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else ROOT / "_build" / "student"
    try:
        reports = write_edition(out)
    except ValueError as error:
        print(f"student_edition: {error}", file=sys.stderr)
        return 2
    for name, report in reports.items():
        if report.removed:
            print(f"{name}: {len(report.stubs)} stub(s) {report.stubs}, "
                  f"{len(report.pen_and_paper)} pen-and-paper {report.pen_and_paper}")
    print(f"student edition written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
