"""Where this copy of qnnlib comes from: the book's repository, and the commit it was installed at.

A chapter opened in Colab installs qnnlib with pip from the repository at the commit its page was
built from (the install cell written by ``tools/sync_notebooks.py``). pip records that origin in
the installed package's ``direct_url.json``; from it qnnlib knows which recorded runs belong to
this code (``book/results`` at the same commit, Chapters 6–9), also in a kernel restarted after the
install. ``REPOSITORY_URL`` is the repository named in ``_config.yml`` (a test keeps them equal), so
messages and the reproduction appendix show the real ``git clone`` command.
"""

from __future__ import annotations

import json
import os
import re
from importlib import metadata

REPOSITORY_URL = "https://github.com/qnnlib/qnnlib-book"
RESULTS_URL_ENV = "QNNLIB_RESULTS_URL"
_GITHUB = re.compile(r"^(?:git\+)?https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?$")


def clone_command() -> str:
    """The two shell lines that get the repository: ``git clone URL`` and ``cd NAME``."""
    return f"git clone {REPOSITORY_URL}\ncd {REPOSITORY_URL.rsplit('/', 1)[-1]}"


def install_origin(distribution: str = "qnnlib") -> dict | None:
    """``{"url": ..., "commit": ...}`` when qnnlib was pip-installed from a git repository, else None.

    Read from the ``direct_url.json`` that pip writes into the installed package (PEP 610). A
    checkout (an editable install, or qnnlib imported from the source tree) has no commit there:
    it reads ``book/results/`` directly.
    """
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        origin = json.loads(text)
    except ValueError:
        return None
    commit = origin.get("vcs_info", {}).get("commit_id")
    if not commit or not origin.get("url"):
        return None
    return {"url": origin["url"], "commit": commit}


def raw_results_url(repository: str, ref: str) -> str:
    """The raw-file URL of ``book/results`` of a GitHub ``repository`` at ``ref`` (commit or branch)."""
    match = _GITHUB.match(repository.rstrip("/"))
    if not match:
        raise ValueError(f"repository must be a https://github.com/OWNER/NAME URL, got {repository!r}")
    return f"https://raw.githubusercontent.com/{match[1]}/{match[2]}/{ref}/book/results"


def results_url() -> str | None:
    """Where the recorded runs of this qnnlib are downloaded from, or None (read locally only).

    ``$QNNLIB_RESULTS_URL`` when set (the install cell sets it; a reader may point it elsewhere);
    otherwise, for a pip install from a GitHub repository, that repository's ``book/results`` at
    the installed commit.
    """
    explicit = os.environ.get(RESULTS_URL_ENV, "").strip()
    if explicit:
        return explicit
    origin = install_origin()
    if origin is None or not _GITHUB.match(origin["url"].rstrip("/")):
        return None
    return raw_results_url(origin["url"], origin["commit"])
