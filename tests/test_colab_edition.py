"""Tests for tools/colab_edition.py: the Colab edition of the book, from an executed build.

First the parts on synthetic input (the Pages URL, one notebook, a two-page HTML build), then
the real edition of the executed build in ``_build/`` (``make test`` builds it; skipped without
it), checked against what the HTML book shows and against MyST-NB's own formatting of the glue.
"""

import ast
import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup
from myst_nb.core.variables import format_plain_text as mystnb_format
from sphinxcontrib.bibtex.directives import BibliographyKey
from sphinxcontrib.bibtex.domain import Citation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_edition as ce  # noqa: E402
import colab_markdown as cm  # noqa: E402

BUILD = ROOT / "_build"
URL = ce.read_config()["url"]
BASE = ce.published_base(URL)


# ---------------------------------------------------------------------------------------------
# Synthetic input
# ---------------------------------------------------------------------------------------------


def test_published_base_is_the_github_pages_site_of_the_repository():
    assert ce.published_base("https://github.com/qnnlib/qnnlib-book") == "https://qnnlib.github.io/qnnlib-book/"
    assert ce.published_base("https://github.com/QnnLib/book.git/") == "https://qnnlib.github.io/book/"
    for bad in ("https://gitlab.com/a/b", "https://github.com/only-owner", "github.com/a/b"):
        with pytest.raises(ValueError, match="repository url"):
            ce.published_base(bad)


def test_config_macros_are_read_with_their_argument_count():
    assert ce.read_config()["macros"]["ket"] == ("\\left|#1\\right\\rangle", 1)


PAGE = """<html><body><main><article class="bd-article">
<section id="the-chapter"><h1>6. The chapter<a class="headerlink" href="#the-chapter">#</a></h1>
<p>See <a class="reference internal" href="#ex-06-a"><span class="std std-ref">Exercise 6.1</span></a>
and <a class="reference internal" href="01_intro.html#thm-r">Theorem 1</a>,
<span>[<a class="reference internal" href="references.html#id7" title="R.">Robertson, 1929</a>]</span>.</p>
<div class="exercise admonition" id="ex-06-a"><p class="admonition-title">
<span class="caption-number">Exercise 6.1 </span> (Train it)</p></div>
</section></article></main></body></html>"""
OTHER = """<html><body><main><article><section id="intro"><h1>1. Intro<a class="headerlink" href="#intro">¶</a></h1>
<div class="proof theorem admonition" id="thm-r"><p class="admonition-title"><span class="caption-number">Theorem 1 </span>
(Robertson)</p></div></section></article></main></body></html>"""
REFS = """<html><body><main><article><section id="references"><h1>References</h1>
<div class="citation" id="id7" role="doc-biblioentry"><span class="label">Rob29</span><p>H. P. Robertson. 1929.</p></div>
</section></article></main></body></html>"""


@pytest.fixture
def html_build(tmp_path):
    for name, text in {"06_ch": PAGE, "01_intro": OTHER, "references": REFS}.items():
        (tmp_path / "html" / "book").mkdir(parents=True, exist_ok=True)
        (tmp_path / "html" / "book" / f"{name}.html").write_text(text)
    # The Sphinx environment as sphinxcontrib-bibtex leaves it: which entry anchor has which key.
    citation = Citation(citation_id="id7", bibliography_key=BibliographyKey("book/references", "id1"),
                        key="robertson1929", entry=None, formatted_entry=None, tooltip_entry=None)
    env = SimpleNamespace(domaindata={"cite": {"citations": [citation]}})
    (tmp_path / ".doctrees").mkdir()
    (tmp_path / ".doctrees" / "environment.pickle").write_bytes(pickle.dumps(env))
    return tmp_path


def test_built_book_reads_titles_numbers_references_and_citations_from_the_html(html_build):
    book = ce.BuiltBook(html_build, "https://o.github.io/r/")
    page = book.page("book/06_ch", {})
    assert book.titles["book/06_ch"] == "6. The chapter" and book.titles["book/01_intro"] == "1. Intro"
    assert page.page_title("book/01_intro") == "1. Intro"
    assert page.target("ex-06-a") == ("https://o.github.io/r/book/06_ch.html#ex-06-a", "Exercise 6.1")
    assert page.target("thm-r") == ("https://o.github.io/r/book/01_intro.html#thm-r", "Theorem 1")
    assert page.numbered("ex-06-a") == "Exercise 6.1" and page.number("ex-06-a") == "6.1"
    assert page.numbered("thm-r") == "Theorem 1"
    assert page.citation("robertson1929") == ("Robertson, 1929", "https://o.github.io/r/book/references.html#id7")


# As Sphinx 7 (numfig, sphinx-book-theme) writes a numbered figure and table, with a {numref} to each.
FIGURES = """<html><body><main><article><section id="ch"><h1>6. Figures</h1>
<figure class="align-default" id="fig-06-traj">
<img alt="../_images/traj1.png" src="../_images/traj1.png"/>
<figcaption>
<p><span class="caption-number">Fig. 6.2 </span><span class="caption-text">The trajectory.</span><a class="headerlink" href="#fig-06-traj" title="Link to this image">#</a></p>
</figcaption>
</figure>
<table class="table" id="tab-06-acc">
<caption><span class="caption-number">Table 6.1 </span><span class="caption-text">Accuracy</span><a class="headerlink" href="#tab-06-acc" title="Link to this table">#</a></caption>
<tbody><tr class="row-even"><td><p>c</p></td></tr></tbody></table>
<p><a class="reference internal" href="#fig-06-traj"><span class="std std-numref">Fig. 6.2</span></a>
<a class="reference internal" href="#tab-06-acc"><span class="std std-numref">Table 6.1</span></a></p>
</section></article></main></body></html>"""


def test_figures_and_tables_get_the_numbers_and_images_of_the_html_build(html_build):
    (html_build / "html" / "book" / "06_fig.html").write_text(FIGURES)
    page = ce.BuiltBook(html_build, "https://o.github.io/r/").page("book/06_fig", {"traj": {"data": {}}})
    converter = cm.MystToMarkdown(page)
    assert converter.convert("```{glue:figure} traj\n:name: fig-06-traj\n\nΔx per epoch.\n```") == \
        "**Fig. 6.2.** Δx per epoch."
    assert converter.convert("```{figure} figures/traj.png\n:name: fig-06-traj\n\nIt.\n```") == \
        "![It.](https://o.github.io/r/_images/traj1.png)\n\n**Fig. 6.2.** It."
    assert converter.convert("```{list-table} Accuracy\n:name: tab-06-acc\n\n* - c\n```").startswith("**Table 6.1.** Accuracy")
    assert converter.convert("{numref}`tab-06-acc`") == "[Table 6.1](https://o.github.io/r/book/06_fig.html#tab-06-acc)"
    with pytest.raises(ValueError, match="no image 'other.png'"):
        page.image_url("other.png")


@pytest.mark.parametrize("call, name", [("target", "no-such-label"), ("citation", "nobody2000"),
                                        ("page_title", "book/99_none")])
def test_built_book_names_what_it_cannot_find(html_build, call, name):
    page = ce.BuiltBook(html_build, "https://o.github.io/r/").page("book/06_ch", {})
    with pytest.raises(ValueError, match=name):
        getattr(page, call)(name)


class FakePage:
    docname = "book/06_ch"

    def glue(self, key):
        return {"acc": {"text/plain": "0.5"}}[key]

    def page_url(self, docname, anchor=""):
        return f"{BASE}{docname}.html" + (f"#{anchor}" if anchor else "")


def _notebook():
    cells = [nbformat.v4.new_markdown_cell("# 6. The chapter\n\nWhat it shows.", id="title"),
             nbformat.v4.new_markdown_cell("[![Open In Colab](x.svg)](https://old)", id="colab-badge"),
             nbformat.v4.new_code_cell("import qnnlib", id="colab-install"),
             nbformat.v4.new_code_cell("from qnnlib.glue import glue\nglue('acc', 0.5)", id="hidden"),
             nbformat.v4.new_markdown_cell("Only for the HTML book.", id="gone"),
             nbformat.v4.new_markdown_cell("Accuracy {glue:text}`acc:.0%`.", id="prose"),
             nbformat.v4.new_raw_cell("raw", id="raw"),
             nbformat.v4.new_code_cell("print(1)", id="shown")]
    cells[2].metadata["tags"] = ["hide-output"]
    cells[3].metadata["tags"] = ["remove-cell"]
    cells[4].metadata["tags"] = ["remove-cell"]
    for cell in cells:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="out\n")]
            cell.execution_count = 3
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["accelerator"] = "GPU"
    nb.metadata["widgets"] = {"state": {}}
    return nb


def test_convert_notebook_keeps_every_code_cell_without_outputs_and_pins_the_install():
    page = FakePage()
    out = ce.convert_notebook(_notebook(), page, cm.MystToMarkdown(page), url=URL, commit="abc123",
                              mode="fast", relative="book/06_ch.ipynb")
    nbformat.validate(out)
    ids = [cell["id"] for cell in out.cells]
    assert ids == ["title", "colab-badge", "colab-install", "hidden", "prose", "shown"]
    cells = dict(zip(ids, out.cells))
    github = URL.removeprefix("https://github.com/")
    assert f"(https://colab.research.google.com/github/{github}/blob/colab/book/06_ch.ipynb)" in cells["colab-badge"].source
    assert f"git+{URL}@abc123" in cells["colab-install"].source
    assert cells["prose"].source == "Accuracy 50%."
    for cell in out.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    # The hidden cell runs in Colab (later cells need it), collapsed as a form.
    assert cells["hidden"].source.startswith("# @title ") and cells["hidden"].source.endswith("glue('acc', 0.5)")
    assert cells["hidden"].metadata["cellView"] == "form"
    assert "cellView" not in cells["shown"].metadata
    assert out.metadata["accelerator"] == "GPU" and "widgets" not in out.metadata
    assert out.metadata["colab_edition"] == {"source": "book/06_ch.ipynb", "commit": "abc123", "dirty": False,
                                             "mode": "fast", "book": f"{BASE}book/06_ch.html"}


def test_cli_without_a_build_prints_one_line_and_exits_2(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "colab_edition.py"), "--build-dir",
                             str(tmp_path), "--out", str(tmp_path / "out"), "--commit", "abc"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "build_dir" in result.stderr


# ---------------------------------------------------------------------------------------------
# The real edition, from the executed build in _build/
# ---------------------------------------------------------------------------------------------

EXECUTED = BUILD / "jupyter_execute" / "book"
needs_build = pytest.mark.skipif(
    os.environ.get("QNNLIB_NO_BUILD") == "1" or not (sorted(EXECUTED.glob("*.ipynb")) and (BUILD / "html" / "index.html").exists()),
    reason="no finished executed build in _build/ (make book writes one; make colab-check runs these after make test's)")
# What a reader must never see as raw text in Colab.
MYST_SYNTAX = ("{glue", "{cite", "{numref", "{doc}", "{ref}", "{prf:", "{exercise", "{solution",
               "{note", "{eq}", "{math}", "```{", ":::")
ROLE = re.compile(r"\{(?P<name>[\w:.+-]+)\}`(?P<content>[^`]+)`")
FORBIDDEN_MODULES = ("myst_nb", "torchattacks")


@pytest.fixture(scope="module")
def edition(tmp_path_factory):
    out = tmp_path_factory.mktemp("colab")
    written, counts = ce.write_edition(BUILD, out, commit="0" * 40, mode="fast")
    return {path.name: nbformat.read(path, as_version=4) for path in written}, counts


def _sources():
    return {path.name: nbformat.read(path, as_version=4) for path in sorted(EXECUTED.glob("*.ipynb"))}


def _html(name):
    return BeautifulSoup((BUILD / "html" / "book" / name).with_suffix(".html").read_text(), "html.parser")


def _unguarded_imports(code):
    """Modules imported by ``code`` outside a ``try`` whose handler catches ImportError."""
    code = "\n".join(line[:len(line) - len(line.lstrip())] + "pass" if line.lstrip().startswith(("%", "!"))
                     else line for line in code.splitlines())
    tree = ast.parse(code)
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                h.type is None or any(n in ast.unparse(h.type) for n in ("ImportError", "ModuleNotFoundError"))
                for h in node.handlers):
            guarded |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    found = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            found += [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append(node.module.split(".")[0])
    return found


def test_unguarded_imports_sees_through_try_blocks_only_for_import_errors():
    assert _unguarded_imports("import os\nfrom myst_nb import glue") == ["os", "myst_nb"]
    assert _unguarded_imports("try:\n    import torchattacks\nexcept ImportError:\n    pass") == []
    assert _unguarded_imports("try:\n    import torchattacks\nexcept KeyError:\n    pass") == ["torchattacks"]
    assert _unguarded_imports("%pip install x\nimport qnnlib") == ["qnnlib"]
    assert _unguarded_imports("try:\n    import a\nexcept ImportError:\n    %pip install b\n    import b") == ["b"]


@needs_build
def test_edition_has_every_executed_notebook_valid_with_badge_and_pinned_install(edition):
    notebooks, _ = edition
    assert sorted(notebooks) == sorted(_sources())
    github = URL.removeprefix("https://github.com/")
    for name, nb in notebooks.items():
        nbformat.validate(nb)
        cells = {cell.get("id"): cell for cell in nb.cells}
        badge = f"(https://colab.research.google.com/github/{github}/blob/colab/book/{name})"
        assert badge in cells["colab-badge"].source, name
        assert f"git+{URL}@{'0' * 40}" in cells["colab-install"].source, name
        assert nb.metadata["colab_edition"]["commit"] == "0" * 40
        assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    # One install cell for all: the Colab check's restart pass of two chapters covers every chapter.
    assert len({nb.cells[[c.get("id") for c in nb.cells].index("colab-install")].source
                for nb in notebooks.values()}) == 1


@needs_build
def test_no_myst_syntax_in_any_markdown_cell(edition):
    notebooks, _ = edition
    for name, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                found = [s for s in MYST_SYNTAX if s in cell.source]
                assert not found, f"{name}: {found} in\n{cell.source[:500]}"
                assert cm.leftover_syntax(cell.source) == [], name


@needs_build
def test_no_code_cell_imports_myst_nb_or_torchattacks_unguarded(edition):
    notebooks, _ = edition
    for name, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type == "code":
                bad = [m for m in _unguarded_imports(cell.source) if m in FORBIDDEN_MODULES]
                assert not bad, f"{name}: imports {bad} outside try/except ImportError:\n{cell.source[:400]}"


@needs_build
def test_every_code_cell_of_the_build_is_in_the_edition_in_order(edition):
    # Hidden cells too: later cells need their variables.
    notebooks, _ = edition
    for name, source in _sources().items():
        expected = [c.source for c in source.cells if c.cell_type == "code" and c.get("id") != "colab-install"]
        got = [c.source.split("\n", 1)[1] if c.metadata.get("cellView") == "form" else c.source
               for c in notebooks[name].cells if c.cell_type == "code" and c.get("id") != "colab-install"]
        assert got == expected, name


@needs_build
def test_glued_numbers_are_the_values_the_html_book_shows(edition):
    # Independent of the converter: MyST-NB's own formatter on glue.json, and the HTML's spans.
    notebooks, _ = edition
    for name, source in _sources().items():
        glue = json.loads((EXECUTED / name).with_suffix(".glue.json").read_text()) if \
            (EXECUTED / name).with_suffix(".glue.json").exists() else {}
        expected = []
        converted = [c for c in notebooks[name].cells if c.cell_type == "markdown"]
        markdown = [c for c in source.cells if c.cell_type == "markdown" and "remove-cell" not in c.metadata.get("tags", [])]
        for src, out in zip(markdown, converted):
            for match in ROLE.finditer(src.source):
                if match["name"] == "glue:text":
                    key, spec = match["content"].rsplit(":", 1) if ":" in match["content"] else (match["content"], "s")
                    value = mystnb_format(glue[key]["data"]["text/plain"], spec)
                    assert value in out.source, f"{name}: {key} = {value!r} missing"
                    expected.append(value)
        shown = [_text(span) for span in _html(name).select("article span.pasted-text")]
        assert expected == shown, name


def _text(element):
    return " ".join(element.get_text().split())


@needs_build
def test_exercise_and_theorem_numbers_are_those_of_the_sphinx_build(edition):
    # Independent of the HTML that the converter reads: the numbers Sphinx assigned (toc_fignumbers).
    notebooks, _ = edition
    env = pickle.loads((BUILD / ".doctrees" / "environment.pickle").read_bytes())
    heading = re.compile(r"^\*\*(Exercise|Theorem|Lemma|Corollary|Proposition|Definition) ([\d.]+)[ *(]", re.M)
    label = re.compile(r"^[`:]{3,}\{(?:prf:)?(?:exercise|theorem|lemma|corollary|proposition|definition)\}.*\n:label: (\S+)", re.M)
    checked = 0
    for name, source in _sources().items():
        numbers = {lab: ".".join(map(str, num)) for kind in env.toc_fignumbers.get(f"book/{Path(name).stem}", {}).values()
                   for lab, num in kind.items()}
        labels = [m[1] for c in source.cells if c.cell_type == "markdown" for m in label.finditer(c.source)]
        shown = [m[2] for c in notebooks[name].cells if c.cell_type == "markdown" for m in heading.finditer(c.source)]
        assert shown == [numbers[lab] for lab in labels], name
        checked += len(labels)
    assert checked > 0


@needs_build
def test_solutions_are_only_inside_collapsed_details(edition):
    notebooks, counts = edition
    for name, nb in notebooks.items():
        for cell in nb.cells:
            if cell.cell_type != "markdown" or "<details>" not in cell.source:
                continue
            blocks = re.findall(r"<details>\n<summary><b>Solution to [^<]+</b></summary>\n(.*?)\n</details>", cell.source, re.S)
            assert len(blocks) == cell.source.count("<details>"), name
            outside = re.sub(r"<details>.*?</details>", "", cell.source, flags=re.S)
            for block in blocks:
                for line in block.splitlines():
                    if len(line.strip()) > 30:
                        assert line not in outside, f"{name}: solution text outside <details>: {line!r}"
    total = sum(cell.source.count("<details>") for nb in notebooks.values() for cell in nb.cells
                if cell.cell_type == "markdown")
    assert total == counts.directives.get("solution", 0) > 0


@needs_build
def test_every_link_into_the_book_names_a_page_and_anchor_that_exist(edition):
    notebooks, _ = edition
    link = re.compile(re.escape(BASE) + r"(?P<page>[\w/.-]+)\.html(?:#(?P<anchor>[\w.-]+))?")
    ids = {}
    checked = 0
    for nb in notebooks.values():
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            for match in link.finditer(cell.source):
                path = BUILD / "html" / f"{match['page']}.html"
                assert path.exists(), match[0]
                if match["anchor"]:
                    if path not in ids:
                        ids[path] = {e["id"] for e in BeautifulSoup(path.read_text(), "html.parser").find_all(id=True)}
                    assert match["anchor"] in ids[path], match[0]
                checked += 1
    assert checked > 0


@needs_build
def test_every_role_and_directive_of_the_source_was_converted(edition):
    _, counts = edition
    roles = {}
    for source in _sources().values():
        for cell in source.cells:
            if cell.cell_type == "markdown" and "remove-cell" not in cell.metadata.get("tags", []):
                for match in ROLE.finditer(cell.source):
                    roles[match["name"]] = roles.get(match["name"], 0) + 1
    # glue:md values may hold roles of their own, so the converter can count more, never fewer.
    for name, count in roles.items():
        assert counts.roles.get(name, 0) >= count, name


def test_book_workflow_publishes_the_edition_of_the_build_it_deploys():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job.get("steps", [])]
    assert steps.index("make book") < steps.index("make colab")
    publish = next(run for run in steps if "_build/colab" in run)
    assert "git init -q -b colab" in publish and publish.rstrip().endswith(" colab")
    readme = (ROOT / "README.md").read_text()
    assert "make colab" in readme and "branch `colab`" in readme
