"""Every chapter notebook opens in Colab from the repository named in _config.yml, and runs there.

The repository URL and branch live only in ``_config.yml``; these tests read them from there and
check each notebook independently of ``tools/sync_notebooks.py`` (which writes the cells). The
badge opens the Colab edition (branch ``colab``, written by ``make colab``); ``make colab-check``
runs that edition in a Colab-like environment.
"""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
URL = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"]["branch"]
NOTEBOOKS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
# Chapters that train networks ask Colab for a GPU runtime.
GPU_PREFIXES = ("02_", "05_", "06_", "07_", "08_")
COLAB_BRANCH = "colab"
# Not in Colab: a cell Colab runs may import them only inside `try: ... except ImportError:`.
NOT_IN_COLAB = ("myst_nb", "sphinx", "nbval", "torchattacks", "jupyter_book")


def _toc_files():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", [{"chapters": toc.get("chapters", [])}]):
        files += [chapter["file"] for chapter in part["chapters"]]
    return files


def _load(path):
    return json.loads(path.read_text())


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_there_are_chapter_notebooks():
    assert NOTEBOOKS, "book/ has no chapter notebooks"


def test_repository_url_is_a_github_repository():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", URL), URL
    assert BRANCH == "main"


def test_toc_lists_only_files_that_exist_and_every_chapter():
    listed = _toc_files()
    for entry in listed:
        matches = [p for p in ROOT.glob(entry + ".*") if p.suffix in (".md", ".ipynb")]
        assert matches, f"_toc.yml lists {entry}, which does not exist"
    for notebook in NOTEBOOKS:
        assert notebook.relative_to(ROOT).with_suffix("").as_posix() in listed, f"{notebook.name} is not in _toc.yml"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_starts_with_title_badge_and_install_cell(path):
    nb = _load(path)
    title, badge, install = nb["cells"][:3]
    assert title["cell_type"] == "markdown" and _source(title).startswith("# "), "first cell must be the title"
    assert len(_source(title).strip().splitlines()) > 1, "the title cell also promises what the chapter shows"

    relative = path.relative_to(ROOT).as_posix()
    github = URL.removeprefix("https://github.com/")
    colab = f"https://colab.research.google.com/github/{github}/blob/{COLAB_BRANCH}/{relative}"
    assert badge["cell_type"] == "markdown"
    assert f"]({colab})" in _source(badge), f"badge must link to the Colab edition, {colab}"
    assert "colab-badge.svg" in _source(badge)

    code = _source(install)
    assert install["cell_type"] == "code"
    assert "hide-output" in install["metadata"].get("tags", [])
    assert "import qnnlib" in code and "except ImportError" in code
    assert f"git+{URL}@{BRANCH}" in code
    raw = f"https://raw.githubusercontent.com/{github}/{BRANCH}/book/results"
    setting = f'os.environ.setdefault("QNNLIB_RESULTS_URL", "{raw}")'
    assert setting in code, "Colab reads the recorded runs of the same ref"
    # Set before the try, at the top level: a restarted kernel (qnnlib already installed) sets it too.
    assert code.index(setting) < code.index("try:") and f"\n{setting}" in code
    pip_lines = [line for line in code.splitlines() if "pip" in line]
    assert pip_lines and all("torch" not in line for line in pip_lines), "never (re)install torch/torchvision"
    assert all(line.startswith("    ") for line in pip_lines), "pip runs only when import qnnlib fails"


def _code(cell):
    """A code cell's source as Python (IPython magics such as %pip become `pass`)."""
    return "\n".join(re.sub(r"^(\s*)%.*$", r"\1pass", line) for line in _source(cell).splitlines())


def _unguarded_imports(tree):
    """Top modules imported outside a `try` whose handlers catch ImportError."""
    found = []

    def visit(node, guarded):
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module.split(".")[0], guarded))
        if isinstance(node, ast.Try):
            catches = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
            safe = guarded or bool(catches & {"ImportError", "ModuleNotFoundError"})
            for child in node.body:
                visit(child, safe)
            for child in node.handlers + node.orelse + node.finalbody:
                visit(child, guarded)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return [name for name, guarded in found if not guarded]


def test_unguarded_imports_sees_a_plain_import_and_not_a_guarded_one():
    plain = ast.parse("import torchattacks\nfrom myst_nb import glue")
    guarded = ast.parse("try:\n    import torchattacks\nexcept ImportError:\n    torchattacks = None")
    assert _unguarded_imports(plain) == ["torchattacks", "myst_nb"]
    assert _unguarded_imports(guarded) == []


@pytest.mark.parametrize("path", NOTEBOOKS + [ROOT / "book" / "reproduce.ipynb"], ids=lambda p: p.name)
def test_notebook_imports_only_what_colab_has(path):
    for n, cell in enumerate(_load(path)["cells"]):
        if cell["cell_type"] != "code":
            continue
        missing = set(_unguarded_imports(ast.parse(_code(cell)))) & set(NOT_IN_COLAB)
        assert not missing, f"{path.name} cell {n} imports {sorted(missing)}, which Colab does not have"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_without_outputs(path):
    for cell in _load(path)["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_reads_fast_mode_once(path):
    sources = [_source(c) for c in _load(path)["cells"] if c["cell_type"] == "code"]
    assert sum("qnnlib.fast_mode()" in s for s in sources) == 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_experiment_chapters_request_a_gpu_in_colab(path):
    metadata = _load(path)["metadata"]
    wants_gpu = path.name.startswith(GPU_PREFIXES)
    assert (metadata.get("accelerator") == "GPU") == wants_gpu
    assert metadata["kernelspec"]["name"] == "python3"


_OPENING = re.compile(r"^ {0,3}(`{3,}|:{3,})\{(exercise|solution)\}")
_OPTION = re.compile(r"^:([\w-]+):\s*(.*)$")


def _exercise_directives(nb):
    """(exercises, solutions, solutions shown in a dropdown) over the markdown cells of a notebook."""
    exercises = solutions = dropdowns = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        lines = _source(cell).splitlines()
        for n, line in enumerate(lines):
            match = _OPENING.match(line)
            if not match:
                continue
            if match[2] == "exercise":
                exercises += 1
                continue
            solutions += 1
            options = {}
            for option in lines[n + 1:]:
                found = _OPTION.match(option.strip())
                if not found:
                    break
                options[found[1]] = found[2].split()
            dropdowns += "dropdown" in options.get("class", [])
    return exercises, solutions, dropdowns


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_chapter_has_three_exercises_each_with_a_dropdown_solution(path):
    exercises, solutions, dropdowns = _exercise_directives(_load(path))
    assert exercises >= 3, f"{path.name}: {exercises} {{exercise}} directives, at least 3 expected"
    assert solutions == exercises, f"{path.name}: {exercises} exercises but {solutions} solutions"
    assert dropdowns == solutions, f"{path.name}: {solutions - dropdowns} solution(s) without :class: dropdown"
