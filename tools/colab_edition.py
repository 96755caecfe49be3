"""Write the Colab edition of the book: one plain-Markdown notebook per chapter, from a build.

Colab renders none of MyST (glued numbers, citations, cross-references, exercises and proofs
would show as raw ``{role}`…``` text), so this edition is generated from the *executed* build:

* ``BUILD/jupyter_execute/book/NAME.ipynb`` — the notebooks as MyST-NB executed them, hidden
  cells included, with ``NAME.glue.json`` beside each (every glued value, as MyST-NB stored it);
* ``BUILD/html/`` — what only Sphinx knows, read from the pages the reader sees: page titles,
  the numbers of exercises and theorems, anchors, the text of cross-references, and the
  author–year label and bibliography anchor of every citation.

Each notebook's Markdown goes through :class:`colab_markdown.MystToMarkdown`; links point at the
published book (GitHub Pages of the repository in ``_config.yml``, :func:`published_base`).
Code cells all stay (hidden ones, tagged ``remove-cell``/``remove-input``, are needed by the cells
after them; Colab shows them as collapsed forms), without outputs: the reader runs the notebook.
The badge and install cells are rewritten by ``tools/sync_notebooks.py``'s functions, the badge
pointing at the edition itself (branch ``colab``) and the install pinned to the build's commit.

Usage: ``python tools/colab_edition.py [--build-dir _build] [--out _build/colab] [--mode fast|full]
[--commit SHA]``; writes ``OUT/book/NAME.ipynb`` and prints what it converted. ``make colab``
builds the full book first; the ``colab`` branch of the repository holds the result.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import posixpath
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urldefrag

import nbformat
import yaml
from bs4 import BeautifulSoup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from colab_markdown import Counts, MystToMarkdown  # noqa: E402
from sync_notebooks import BADGE_ID, COLAB_BRANCH, INSTALL_ID, badge_source, install_source  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_TAGS = ("remove-cell", "remove-input")


def published_base(repository_url: str) -> str:
    """``https://github.com/OWNER/REPO`` -> ``https://OWNER.github.io/REPO/`` (GitHub Pages)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", repository_url)
    if not match:
        raise ValueError(f"repository url must be https://github.com/OWNER/REPO, got {repository_url!r}")
    owner, repo = match.groups()
    return f"https://{owner.lower()}.github.io/{repo}/"


def read_config(root: Path = ROOT) -> dict:
    """``_config.yml``: the repository URL and the MathJax macros (name -> (body, nargs))."""
    config = yaml.safe_load((root / "_config.yml").read_text())
    tex = (config.get("sphinx", {}).get("config", {}).get("mathjax3_config", {}).get("tex", {}))
    macros = {}
    for name, value in tex.get("macros", {}).items():
        body, nargs = (value[0], int(value[1])) if isinstance(value, list) else (value, 0)
        macros[name] = (body, nargs)
    return {"url": config["repository"]["url"].rstrip("/"), "macros": macros}


def _text(element) -> str:
    """The text of an HTML element as the reader sees it, inline math back as ``$…$``."""
    text = " ".join(element.get_text().split())
    return text.replace("\\(", "$").replace("\\)", "$").strip()


class BuiltBook:
    """The HTML build of the book, indexed by anchor; one :meth:`page` resolver per notebook.

    From the pages (``BUILD/html``): each page's title, every element with an id (the numbered
    exercises and theorems carry a ``caption-number``), and the text of every internal link to
    an anchor, which is how the book shows a ``{ref}``/``{prf:ref}`` or a citation. Which
    bibliography anchor belongs to which citation key is known only to sphinxcontrib-bibtex; it
    is read from the Sphinx environment of the build (``BUILD/.doctrees/environment.pickle``).
    """

    def __init__(self, build_dir: Path, base_url: str):
        self.build_dir = Path(build_dir)
        self.html_dir = self.build_dir / "html"
        self.base_url = base_url
        if not self.html_dir.is_dir():
            raise ValueError(f"build_dir: no HTML build in {self.html_dir}")
        self.titles, self.anchors, self.shown, self.images = {}, {}, {}, {}
        for path in sorted(self.html_dir.rglob("*.html")):
            docname = path.relative_to(self.html_dir).with_suffix("").as_posix()
            if docname.startswith(("_", "genindex", "search", "py-modindex")):
                continue
            soup = BeautifulSoup(path.read_text(), "html.parser")
            article = soup.find("article") or soup.find("main") or soup
            for permalink in article.select("a.headerlink"):
                permalink.decompose()
            heading = article.find("h1")
            if heading:
                self.titles[docname] = _text(heading)
            for element in article.find_all(id=True):
                self.anchors.setdefault(element["id"], (docname, element))
            self._index_links(docname, article)
            folder = docname.rpartition("/")[0]
            self.images[docname] = [posixpath.normpath(posixpath.join(folder, img["src"]))
                                    for img in article.find_all("img", src=True) if "://" not in img["src"]]
        self.citation_ids = self._citation_ids()

    def _index_links(self, docname: str, article) -> None:
        folder = docname.rpartition("/")[0]
        for link in article.find_all("a", href=True):
            href, anchor = urldefrag(link["href"])
            if not anchor or "://" in href:
                continue
            page = docname if not href else posixpath.normpath(posixpath.join(folder, href))
            self.shown.setdefault((page.removesuffix(".html"), anchor), _text(link))

    def _citation_ids(self) -> dict[str, tuple[str, str]]:
        """citation key -> (docname of its bibliography, anchor of its entry)."""
        path = self.build_dir / ".doctrees" / "environment.pickle"
        if not path.exists():
            return {}
        with path.open("rb") as handle:
            env = pickle.load(handle)   # our own build's environment (same Sphinx as wrote it)
        citations = env.domaindata.get("cite", {}).get("citations", [])
        return {c.key: (c.bibliography_key.docname, c.citation_id) for c in citations}

    def page(self, docname: str, glue: dict) -> "PageResolver":
        return PageResolver(self, docname, glue)
class PageResolver:
    """The :class:`colab_markdown.Resolver` of one page of a :class:`BuiltBook`."""

    def __init__(self, book: BuiltBook, docname: str, glue: dict):
        self.book, self.docname, self.glued = book, docname, glue

    def glue(self, key: str) -> dict:
        if key not in self.glued:
            raise ValueError(f"{self.docname}: nothing glued under {key!r}")
        return self.glued[key]["data"]

    def page_url(self, docname: str, anchor: str = "") -> str:
        if docname not in self.book.titles:
            raise ValueError(f"{self.docname}: no page {docname!r} in the HTML build")
        return f"{self.book.base_url}{docname}.html" + (f"#{anchor}" if anchor else "")

    def page_title(self, docname: str) -> str:
        self.page_url(docname)
        return self.book.titles[docname]

    def _anchor(self, label: str) -> tuple[str, object]:
        if label not in self.book.anchors:
            raise ValueError(f"{self.docname}: no anchor {label!r} in the HTML build")
        return self.book.anchors[label]

    def target(self, label: str) -> tuple[str, str]:
        docname, _ = self._anchor(label)
        shown = self.book.shown.get((docname, label))
        if shown is None:
            raise ValueError(f"{self.docname}: the book never shows a reference to {label!r}")
        return self.page_url(docname, label), shown

    def image_url(self, path: str) -> str:
        """The image of this page that Sphinx copied from ``path`` (``_images/NAME`` or ``NAME1``...)."""
        stem, suffix = posixpath.splitext(posixpath.basename(path))
        pattern = re.compile(re.escape(stem) + r"\d*" + re.escape(suffix) + "$")
        found = [src for src in self.book.images.get(self.docname, [])
                 if pattern.fullmatch(posixpath.basename(src))]
        if not found:
            raise ValueError(f"{self.docname}: the HTML build shows no image {path!r}")
        return self.book.base_url + found[0]

    def numbered(self, label: str) -> str:
        _, element = self._anchor(label)
        number = element.find(class_="caption-number")
        if number is None:
            raise ValueError(f"{self.docname}: {label!r} has no number in the HTML build")
        return _text(number)

    def number(self, label: str) -> str:
        return self.numbered(label).split()[-1]

    def citation(self, key: str) -> tuple[str, str]:
        if key not in self.book.citation_ids:
            raise ValueError(f"{self.docname}: citation {key!r} is not in the build's bibliography")
        docname, anchor = self.book.citation_ids[key]
        shown = self.book.shown.get((docname, anchor))
        if shown is None:
            raise ValueError(f"{self.docname}: the book never shows the citation {key!r}")
        return shown, self.page_url(docname, anchor)


# ---------------------------------------------------------------------------------------------
# Notebooks
# ---------------------------------------------------------------------------------------------


def _hide(cell) -> None:
    """Show a code cell the book hides as a collapsed Colab form (a ``# @title`` first line)."""
    if not cell.source.lstrip().startswith(("# @title", "#@title")):
        cell.source = "# @title Code hidden in the book (double-click to show it)\n" + cell.source
    cell.metadata["cellView"] = "form"


def convert_notebook(nb, resolver, converter: MystToMarkdown, *, url: str, commit: str,
                     mode: str, relative: str, dirty: bool = False):
    """The Colab edition of one executed notebook (``relative``: ``book/NAME.ipynb``)."""
    cells = []
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        metadata = {"tags": tags} if tags else {}
        if cell.cell_type == "markdown":
            if "remove-cell" in tags:
                continue
            if cell.get("id") == BADGE_ID:
                source = badge_source(url, COLAB_BRANCH, relative)
            else:
                source = converter.convert(cell.source)
            new = nbformat.v4.new_markdown_cell(source, metadata=metadata)
        elif cell.cell_type == "code":
            source = install_source(url, commit) if cell.get("id") == INSTALL_ID else cell.source
            new = nbformat.v4.new_code_cell(source, metadata=metadata)
            if any(tag in tags for tag in HIDDEN_TAGS):
                _hide(new)
        else:
            continue   # raw cells: nothing a reader runs or reads in Colab
        if cell.get("id"):
            new["id"] = cell["id"]
        cells.append(new)
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out.metadata["language_info"] = {"name": "python"}
    colab = dict(nb.metadata.get("colab", {}))
    colab.update({"provenance": [], "toc_visible": True})
    out.metadata["colab"] = colab
    if "accelerator" in nb.metadata:
        out.metadata["accelerator"] = nb.metadata["accelerator"]
    out.metadata["colab_edition"] = {"source": relative, "commit": commit, "dirty": dirty,
                                     "mode": mode, "book": resolver.page_url(resolver.docname)}
    return out


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(commit of the checkout, whether tracked files have uncommitted changes)."""
    def git(*args):
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))


def write_edition(build_dir: Path, out_dir: Path, *, commit: str, mode: str, dirty: bool = False,
                  root: Path = ROOT) -> tuple[list[Path], Counts]:
    """Convert every executed ``book/*.ipynb`` of ``build_dir`` into ``out_dir/book/``."""
    executed = Path(build_dir) / "jupyter_execute" / "book"
    notebooks = sorted(executed.glob("*.ipynb"))
    if not notebooks:
        raise ValueError(f"build_dir: no executed notebooks in {executed}")
    config = read_config(root)
    book = BuiltBook(build_dir, published_base(config["url"]))
    counts = Counts({}, {})
    written = []
    (Path(out_dir) / "book").mkdir(parents=True, exist_ok=True)
    for path in notebooks:
        glue_path = path.with_suffix(".glue.json")
        glue = json.loads(glue_path.read_text()) if glue_path.exists() else {}
        relative = f"book/{path.name}"
        resolver = book.page(f"book/{path.stem}", glue)
        converter = MystToMarkdown(resolver, config["macros"], counts)
        nb = nbformat.read(path, as_version=4)
        try:
            edition = convert_notebook(nb, resolver, converter, url=config["url"], commit=commit,
                                       mode=mode, relative=relative, dirty=dirty)
        except ValueError as exc:
            raise ValueError(f"{relative}: {exc}") from exc
        nbformat.validate(edition)
        target = Path(out_dir) / relative
        target.write_text(nbformat.writes(edition) + "\n")
        written.append(target)
    return written, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "_build")
    parser.add_argument("--out", type=Path, default=ROOT / "_build" / "colab")
    parser.add_argument("--mode", choices=("fast", "full"),
                        default="fast" if os.environ.get("QNNLIB_FAST") == "1" else "full",
                        help="the mode the build was executed in (default: from QNNLIB_FAST)")
    parser.add_argument("--commit", help="the commit the build came from (default: git HEAD)")
    args = parser.parse_args(argv)
    try:
        if args.commit:
            commit, dirty = args.commit, False
        elif os.environ.get("GITHUB_SHA") and not (ROOT / ".git").exists():
            commit, dirty = os.environ["GITHUB_SHA"], False   # a CI checkout without git metadata
        else:
            commit, dirty = git_commit()
        written, counts = write_edition(args.build_dir, args.out, commit=commit, mode=args.mode,
                                        dirty=dirty)
    except (ValueError, OSError, subprocess.CalledProcessError) as exc:
        print(f"colab_edition: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} notebooks to {args.out / 'book'} ({args.mode} build of {commit})")
    print("roles: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.roles.items(), key=lambda kv: -kv[1])))
    print("directives: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.directives.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
