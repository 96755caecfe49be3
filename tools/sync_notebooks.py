"""Write the Colab header of every chapter notebook from ``_config.yml``.

Each chapter notebook starts with: a title cell (written by the author), an Open-in-Colab
badge, and an install cell (tagged ``hide-output``). The badge opens the notebook's *Colab
edition* (``make colab``: the executed notebook with plain Markdown) on branch ``colab`` of the
repository. The install cell sets where the recorded runs are read from *outside* any
``try``, so that a kernel restarted after the install reads the same runs, and installs qnnlib
with pip only when ``import qnnlib`` fails. Both name one ref: ``main`` here; the Colab edition
(``tools/colab_edition.py``) calls :func:`install_source` with the commit its pages were built
from, so a reader gets the package and the recorded runs of the page they read. The repository URL
lives in ``_config.yml`` (and, for the installed package, ``qnnlib.source.REPOSITORY_URL``; a test
keeps them equal); run this script after changing it (``tests/test_notebooks.py`` fails until you
do). Experiment chapters also ask Colab for a GPU.

Usage: ``python tools/sync_notebooks.py [NOTEBOOK ...]`` (default: every ``book/*.ipynb``).
It also strips outputs and execution counts, since the build executes the notebooks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BADGE_ID = "colab-badge"
INSTALL_ID = "colab-install"
# Chapters that train networks: Colab should open them on a GPU runtime.
GPU_CHAPTERS = ("02_", "05_", "06_", "07_", "08_")
# The branch that holds the Colab edition (written by `make colab`); the source badges open it.
COLAB_BRANCH = "colab"


def repository() -> tuple[str, str]:
    """Return (url, branch) of the book's repository from ``_config.yml``."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def colab_url(url: str, branch: str, notebook: str) -> str:
    github = url.removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{github}/blob/{branch}/{notebook}"


def badge_source(url: str, branch: str, notebook: str) -> str:
    link = colab_url(url, branch, notebook)
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({link})"


def results_url(url: str, ref: str) -> str:
    """The raw-file URL of the repository's ``book/results`` folder at ``ref`` (GitHub)."""
    return f"https://raw.githubusercontent.com/{url.removeprefix('https://github.com/')}/{ref}/book/results"


def install_source(url: str, ref: str) -> str:
    """The install cell: the recorded runs and qnnlib of ``url`` at ``ref`` (a commit or a branch)."""
    return (
        "# Colab (or any machine without qnnlib): install qnnlib from the book's repository, at the\n"
        "# version this page was made with. Its requirements are lower bounds only, so Colab's torch and\n"
        "# torchvision stay untouched. The recorded training runs are read from the same version (set\n"
        "# before the install, so a restarted kernel reads them too); a checkout reads book/results/.\n"
        "import os\n"
        "\n"
        f'os.environ.setdefault("QNNLIB_RESULTS_URL", "{results_url(url, ref)}")\n'
        "try:\n"
        "    import qnnlib\n"
        "except ImportError:\n"
        f'    %pip install --quiet "qnnlib @ git+{url}@{ref}"\n'
        "    import qnnlib"
    )


def sync(path: Path) -> bool:
    """Rewrite the header cells of one notebook; return True if the file changed."""
    url, branch = repository()
    relative = path.resolve().relative_to(ROOT).as_posix()
    before = path.read_text()
    nb = nbformat.reads(before, as_version=4)
    body = [c for c in nb.cells if c.get("id") not in (BADGE_ID, INSTALL_ID)]
    if not body or body[0].cell_type != "markdown" or not body[0].source.startswith("# "):
        raise ValueError(f"{relative}: the first cell must be a markdown title ('# ...')")
    badge = nbformat.v4.new_markdown_cell(badge_source(url, COLAB_BRANCH, relative), id=BADGE_ID)
    install = nbformat.v4.new_code_cell(install_source(url, branch), id=INSTALL_ID)
    install.metadata["tags"] = ["hide-output"]
    nb.cells = [body[0], badge, install, *body[1:]]
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["colab"] = {"provenance": [], "toc_visible": True}
    if path.name.startswith(GPU_CHAPTERS):
        nb.metadata["accelerator"] = "GPU"
        nb.metadata["colab"]["gpuType"] = "T4"
    else:
        nb.metadata.pop("accelerator", None)
    nb.metadata.pop("jupytext", None)
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "book").glob("*.ipynb"))
    for path in paths:
        if sync(path):
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
