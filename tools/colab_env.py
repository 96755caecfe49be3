"""The Colab-like environment of the Colab check (``tools/colab_check.py``).

- ``.venv-colab/``: the torch/torchvision pair of the pinned environment and what Colab
  preinstalls (numpy, scipy, matplotlib, pandas, scikit-learn, ipywidgets 7.7, tqdm, requests,
  ipykernel), *without* myst-nb, Sphinx, nbval or torchattacks (checked). It is built once and
  reused while ``requirements.txt`` and :data:`COLAB_PACKAGES` are unchanged; torch and its CUDA
  libraries are hard-linked from ``.venv`` (the same pinned files) instead of being unpacked
  again (5.5 GB). :func:`check_base` confirms after a check that nothing was installed into it;
- per notebook, a fresh environment layered on it (:func:`chapter_env`: a bare venv whose
  ``.pth`` file adds ``.venv-colab``'s packages), in which the notebook's own install cell
  installs qnnlib (and otter-grader, for the assignments) as in a new Colab VM. pip installs
  into that environment only: a package that replaces a preinstalled one (otter-grader needs
  ipywidgets 8) shadows it there, as in the reader's VM, and ``.venv-colab`` stays Colab's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-colab"
# What Colab preinstalls that the chapters use, with Colab's ipywidgets 7.7 (the book pins 8).
COLAB_PACKAGES = ["pip==24.1.2", "torch", "torchvision", "numpy", "scipy", "matplotlib", "pandas==2.2.3", "scikit-learn",
                  "ipywidgets==7.7.1", "tqdm", "requests", "ipykernel", "pyyaml"]
# Never in the Colab environment: a chapter that needs one of them fails the check.
ABSENT = ["myst_nb", "sphinx", "nbval", "torchattacks", "jupyter_book"]
# Pinned in requirements.txt for ipywidgets 8; Colab's ipywidgets 7.7 needs others (as do the
# packages pinned in COLAB_PACKAGES).
UNPINNED = ("widgetsnbextension", "jupyterlab_widgets")




def _site_packages(prefix: Path) -> Path:
    return prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _constraints(folder: Path) -> Path:
    """requirements.txt as pip constraints, less the packages whose Colab version differs."""
    colab = {_norm(p.split("==")[0]) for p in COLAB_PACKAGES if "==" in p} | {_norm(u) for u in UNPINNED}
    lines = [line for line in (ROOT / "requirements.txt").read_text().splitlines()
             if _norm(line.split("==")[0].strip()) not in colab]
    path = folder / "colab-constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _link_tree(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` as hard links (same bytes, no space; a later delete touches only dst)."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link, symlinks=True, dirs_exist_ok=True)
    else:
        link(src, dst)


def _closure(site: Path, roots: list[str], skip: set[str]) -> dict:
    """Distributions of ``site`` that ``roots`` need (requirements without extras), by name."""
    from packaging.requirements import Requirement

    dists = {_norm(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)]) if d.metadata["Name"]}
    found, todo = {}, [_norm(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in found or name in skip or name not in dists:
            continue
        found[name] = dists[name]
        for text in dists[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(_norm(requirement.name))
    return found


def _seed(target: Path) -> list[str]:
    """Hard-link from the running (pinned) venv what Colab's packages need at the pinned versions.

    torch, torchvision and their CUDA libraries (5.5 GB) and the rest of the closure of
    ``COLAB_PACKAGES``, less the packages whose Colab version differs (pip installs those).
    """
    here = _site_packages(Path(sys.prefix))
    colab = {_norm(p.split("==")[0]) for p in COLAB_PACKAGES if "==" in p} | {_norm(u) for u in UNPINNED}
    roots = [p.split("==")[0] for p in COLAB_PACKAGES if "==" not in p]
    linked = []
    for name, dist in sorted(_closure(here, roots, colab | {_norm(a) for a in ABSENT}).items()):
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if (here / top).exists() and not (target / top).exists():
                _link_tree(here / top, target / top)
        linked.append(f"{dist.metadata['Name']}=={dist.version}")
    return linked


def _stamp_text() -> str:
    digest = hashlib.sha256((ROOT / "requirements.txt").read_bytes() + repr(COLAB_PACKAGES).encode()).hexdigest()
    return f"{digest}\n"


def ensure_venv(venv: Path = VENV) -> Path:
    """Build ``.venv-colab`` unless it is there for these requirements; return its python."""
    python = venv / "bin" / "python"
    stamp = venv / ".colab-installed"
    if stamp.exists() and stamp.read_text() == _stamp_text() and python.exists():
        return python
    clock = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    linked = _seed(_site_packages(venv))
    print(f"colab venv: {len(linked)} pinned distributions hard-linked from {sys.prefix}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-c", str(_constraints(Path(scratch))),
                              *COLAB_PACKAGES], stderr=subprocess.PIPE, text=True)
    if pip.returncode:
        print("\n".join(l for l in pip.stderr.splitlines() if not l.startswith("WARNING: Location")), file=sys.stderr)
        raise RuntimeError("could not install the Colab environment (pip's message above)")
    subprocess.run([str(python), "-m", "pip", "check"], check=True, stdout=subprocess.DEVNULL)
    present = subprocess.run([str(python), "-c", "import importlib.util as u, sys; "
                              f"print(' '.join(m for m in {ABSENT!r} if u.find_spec(m)))"],
                             check=True, capture_output=True, text=True).stdout.split()
    if present:
        raise RuntimeError(f"the Colab environment must not have {present}")
    stamp.write_text(_stamp_text())
    print(f"colab venv: built in {time.perf_counter() - clock:.0f} s", flush=True)
    return python


def check_base(venv: Path = VENV) -> list[str]:
    """What differs in ``.venv-colab`` from :data:`COLAB_PACKAGES`' pins or :data:`ABSENT` (empty: nothing)."""
    site = _site_packages(venv)
    installed = {_norm(d.metadata["Name"]): d.version for d in metadata.distributions(path=[str(site)])
                 if d.metadata["Name"]}
    found = [f"{name} is {installed.get(_norm(name), 'absent')}, not {version}"
             for name, _, version in (p.partition("==") for p in COLAB_PACKAGES if "==" in p)
             if installed.get(_norm(name)) != version]
    found += [f"{name} is installed" for name in ABSENT if _norm(name) in installed]
    return found


def chapter_env(base_python: Path, folder: Path, data: str | None, *, threads: int | None = None,
                extra: dict[str, dict[str, str]] | None = None, decoded: Path | None = None) -> Path:
    """A fresh environment for one notebook: empty, with ``.venv-colab``'s packages underneath.

    Its kernels ``colab-fast`` and ``colab-full`` differ only in ``QNNLIB_FAST``; downloads (the
    recorded runs) go to its own cache folder, pip's wheel cache is shared (``PIP_CACHE_DIR`` of
    the caller). ``threads`` caps torch's threads (several notebooks share the CPU cores);
    ``extra`` adds fast-mode kernels with more environment variables (name -> variables).
    ``decoded``: qnnlib's cache of decoded JPEG-copy images (``qnnlib.data``), hard-linked into
    the environment's cache: decoding the offline machine's JPEG copy of CIFAR-10 again in every
    environment would cost a minute each, and a Colab reader reads the official files instead.
    The cache is keyed by the files' contents, so a linked entry is exactly what decoding gives.
    """
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(folder)], check=True)
    base = _site_packages(base_python.parent.parent)
    (_site_packages(folder) / "colab-preinstalled.pth").write_text(f"{base}\n")
    if decoded is not None and decoded.is_dir():
        _link_tree(decoded, folder / "cache" / "qnnlib" / "decoded")
    kernels = {"colab-fast": {"QNNLIB_FAST": "1"}, "colab-full": {"QNNLIB_FAST": "0"}}
    for name, variables in (extra or {}).items():
        kernels[name] = {"QNNLIB_FAST": "1", **variables}
    for name, variables in kernels.items():
        kernel = folder / "kernels" / name
        kernel.mkdir(parents=True)
        env = {"XDG_CACHE_HOME": str(folder / "cache"), "PATH": f"{folder / 'bin'}:{os.environ.get('PATH', '')}"}
        if os.environ.get("PIP_CACHE_DIR"):
            env["PIP_CACHE_DIR"] = os.environ["PIP_CACHE_DIR"]
        if data:
            env["QNNLIB_DATA"] = data
        if threads:
            env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
        env.update(variables)
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [str(folder / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Colab-like ({name})", "language": "python", "env": env}))
    return folder
