"""Run every chapter as a Colab reader would, and check what they see (``make colab-check``).

The reader's machine, simulated offline:

- a Colab-like virtual environment ``.venv-colab/``: the torch/torchvision pair of the pinned
  environment and what Colab preinstalls (numpy, scipy, matplotlib, pandas, scikit-learn,
  ipywidgets 7.7, tqdm, requests, ipykernel), *without* myst-nb, Sphinx, nbval or torchattacks
  (checked). It is built once and reused while ``requirements.txt`` and this list are unchanged;
  torch and its CUDA libraries are hard-linked from ``.venv`` (the same pinned files) instead
  of being unpacked again (5.5 GB);
- per chapter, a fresh environment layered on it (a bare venv whose ``.pth`` file adds
  ``.venv-colab``'s packages), so that each chapter's own install cell installs qnnlib, as in a
  new Colab VM: ``%pip install "qnnlib @ git+URL@REF"`` with the repository URL replaced by this
  checkout (``git+file://``) and the ref by a commit of it;
- the recorded runs served from ``book/results`` of that commit on a loopback port, in place of
  ``raw.githubusercontent.com`` (the install cell's ``QNNLIB_RESULTS_URL`` is rewritten to it);
- the chapter copied into a temporary folder outside the repository, and ``PYTHONPATH`` unset.

Every chapter runs top to bottom in fast mode (``QNNLIB_FAST=1``), Chapter 6 also in full mode;
then all of them again in the same environments, qnnlib already installed, in a new kernel (the
restart that the install asks for). A run passes when every code cell ran without error, no
Markdown cell holds raw MyST (``{glue``, ``{cite``, ``{numref``, ``:::``), no output shows an
object's address (``<... at 0x...>``) and no output has qnnlib's "training started" line
(``qnnlib.experiments.TRAINING_MARKER``): nothing trains unasked.

Usage::

    .venv/bin/python tools/colab_check.py [--notebooks DIR] [--only 06 07] [--workers 2]

``--notebooks`` defaults to the Colab edition ``_build/colab/book`` (``make colab``). Prints one
table, chapter × status × wall seconds per phase, and exits 1 if any run failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qnnlib import source  # noqa: E402  (the repository URL the install cells name)

VENV = ROOT / ".venv-colab"
EDITION = ROOT / "_build" / "colab" / "book"
# What Colab preinstalls that the chapters use, with Colab's ipywidgets 7.7 (the book pins 8).
COLAB_PACKAGES = ["pip==24.1.2", "torch", "torchvision", "numpy", "scipy", "matplotlib", "pandas==2.2.3", "scikit-learn",
                  "ipywidgets==7.7.1", "tqdm", "requests", "ipykernel", "pyyaml"]
# Never in the Colab environment: a chapter that needs one of them fails the check.
ABSENT = ["myst_nb", "sphinx", "nbval", "torchattacks", "jupyter_book"]
# Pinned in requirements.txt for ipywidgets 8; Colab's ipywidgets 7.7 needs others (as do the
# packages pinned in COLAB_PACKAGES).
UNPINNED = ("widgetsnbextension", "jupyterlab_widgets")
FULL_MODE_TOO = ("06_",)
CELL_TIMEOUT = 1800  # seconds per cell, as the book build (_config.yml); training for hours fails
RAW_MYST = re.compile(r"\{glue|\{cite|\{numref|^\s*:::", re.M)
ADDRESS = re.compile(r"<[^<>\n]* at 0x[0-9a-fA-F]+>")
TRAINING_MARKER = "qnnlib: training"


def fail(message: str) -> None:
    print(f"colab_check: {message}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# The Colab-like environment
# ---------------------------------------------------------------------------------------------


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


def chapter_env(base_python: Path, folder: Path, data: str | None) -> Path:
    """A fresh environment for one chapter: empty, with ``.venv-colab``'s packages underneath.

    Its kernels ``colab-fast`` and ``colab-full`` differ only in ``QNNLIB_FAST``; downloads (the
    recorded runs) go to its own cache folder.
    """
    subprocess.run([str(base_python), "-m", "venv", "--without-pip", str(folder)], check=True)
    base = _site_packages(base_python.parent.parent)
    (_site_packages(folder) / "colab-preinstalled.pth").write_text(f"{base}\n")
    for mode, fast in (("fast", "1"), ("full", "0")):
        kernel = folder / "kernels" / f"colab-{mode}"
        kernel.mkdir(parents=True)
        env = {"QNNLIB_FAST": fast, "XDG_CACHE_HOME": str(folder / "cache"),
               "PATH": f"{folder / 'bin'}:{os.environ.get('PATH', '')}"}
        if data:
            env["QNNLIB_DATA"] = data
        (kernel / "kernel.json").write_text(json.dumps({
            "argv": [str(folder / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"Colab-like ({mode} mode)", "language": "python", "env": env}))
    return folder


# ---------------------------------------------------------------------------------------------
# Serving the recorded runs
# ---------------------------------------------------------------------------------------------


def export_results(commit: str, folder: Path) -> Path:
    """``book/results`` as committed at ``commit`` (what raw.githubusercontent.com would serve)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "book/results"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder / "book" / "results"


def serve(folder: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# ---------------------------------------------------------------------------------------------
# Running one chapter
# ---------------------------------------------------------------------------------------------


def localise(nb, clone_url: str, commit: str, results_url: str) -> None:
    """Point the install cell at this checkout (``git+file://``, ``commit``) and the local server."""
    repo = re.escape(source.REPOSITORY_URL)
    for cell in nb.cells:
        if cell.cell_type != "code" or "QNNLIB_RESULTS_URL" not in cell.source:
            continue
        text = re.sub(rf"git\+{repo}@[\w./-]+", f"git+{clone_url}@{commit}", cell.source)
        text = re.sub(r'(QNNLIB_RESULTS_URL", ")[^"]+(")', rf"\g<1>{results_url}\g<2>", text)
        if text == cell.source or clone_url not in text or results_url not in text:
            raise ValueError(f"install cell not recognised:\n{cell.source}")
        cell.source = text


def _texts(cell):
    for output in cell.get("outputs", []):
        if "text" in output:
            yield output["text"]
        for mime, value in output.get("data", {}).items():
            if mime.startswith("text/"):
                yield value if isinstance(value, str) else "".join(value)
        if output.get("output_type") == "error":
            yield "\n".join(output.get("traceback", []))


def problems(nb, *, markdown: bool = True) -> list[str]:
    """What a reader must not see in an executed notebook (empty list: nothing)."""
    found = []
    for n, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and markdown and RAW_MYST.search(cell.source):
            found.append(f"cell {n}: raw MyST in Markdown: {RAW_MYST.search(cell.source)[0]!r}")
        if cell.cell_type != "code":
            continue
        if cell.get("execution_count") is None and cell.source.strip():
            found.append(f"cell {n}: did not run")
        for text in _texts(cell):
            if ADDRESS.search(text):
                found.append(f"cell {n}: an object's address in the output: {ADDRESS.search(text)[0]}")
            if TRAINING_MARKER in text:
                line = next(l for l in text.splitlines() if TRAINING_MARKER in l)
                found.append(f"cell {n}: training started unasked: {line.strip()}")
    return found


def run_chapter(path: Path, env_dir: Path, *, fast: bool, work: Path, clone_url: str, commit: str,
                results_url: str, markdown: bool) -> dict:
    """Run one chapter top to bottom in ``env_dir``'s kernel, in a folder of its own."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    localise(nb, clone_url, commit, results_url)
    workdir = Path(tempfile.mkdtemp(prefix=path.stem + "-", dir=work))
    shutil.copy(path, workdir / path.name)  # the chapter alone, outside the repository
    specs = KernelSpecManager(kernel_dirs=[str(env_dir / "kernels")])
    km = KernelManager(kernel_name="colab-fast" if fast else "colab-full", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, allow_errors=False,
                            resources={"metadata": {"path": str(workdir)}})
    clock = time.perf_counter()
    status = "ok"
    try:
        client.execute()
    except CellTimeoutError:
        status = f"error: a cell ran longer than {CELL_TIMEOUT} s"
    except (CellExecutionError, DeadKernelError) as error:
        lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", str(error)).splitlines() if line.strip()]
        status = "error: " + (lines[-1] if lines else type(error).__name__)[:300]
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it was given running
            km.shutdown_kernel(now=True)
    seconds = time.perf_counter() - clock
    found = problems(nb, markdown=markdown)
    if status == "ok" and found:
        status = "fail: " + "; ".join(found[:3])
    nbformat.write(nb, workdir / (path.stem + (".fast" if fast else ".full") + ".out.ipynb"))
    return {"status": status, "seconds": seconds, "problems": found, "output": str(workdir)}


# ---------------------------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=EDITION, help="folder of chapter notebooks (default: %(default)s)")
    parser.add_argument("--only", nargs="*", default=[], help="chapter prefixes to run, e.g. 06 07")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commit", default="HEAD", help="the commit to install and serve results from")
    parser.add_argument("--no-restart", action="store_true", help="skip the second (restart) pass")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (executed notebooks)")
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        fail(f"--notebooks {args.notebooks} is not a folder (build the Colab edition with `make colab`)")
    if args.workers < 1:
        fail(f"--workers must be ≥ 1, got {args.workers}")
    chapters = sorted(p for p in args.notebooks.glob("*.ipynb") if not args.only or p.name.startswith(tuple(args.only)))
    if not chapters:
        fail(f"no notebooks in {args.notebooks} match {args.only}")
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.commit}^{{commit}}"],
                                check=True, capture_output=True, text=True).stdout.strip()
    except subprocess.CalledProcessError:
        fail(f"--commit {args.commit} is not a commit of {ROOT}")
    markdown = args.notebooks.resolve() != (ROOT / "book").resolve()  # the source notebooks are MyST
    for name in ("PYTHONPATH", "QNNLIB_RESULTS_URL", "QNNLIB_FAST", "VIRTUAL_ENV"):
        os.environ.pop(name, None)  # the reader's kernel has none of them
    clock = time.perf_counter()
    python = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="colab-check-"))
    results_url, server = serve(export_results(commit, work))
    data = os.environ.get("QNNLIB_DATA") or None
    jobs = [(path, fast) for path in chapters for fast in (True, False) if fast or path.name.startswith(FULL_MODE_TOO)]
    envs = {path: chapter_env(python, work / f"env-{path.stem}", data) for path in chapters}
    table = {}
    common = dict(work=work, clone_url=f"file://{ROOT}", commit=commit, results_url=results_url, markdown=markdown)
    try:
        for phase in ("first run", "restart"):
            if phase == "restart" and args.no_restart:
                break
            # The first run of each chapter installs qnnlib in its environment: one job per chapter
            # environment at a time (two pips must not install into one folder together).
            with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
                def chain(path):
                    out = {}
                    for p, fast in jobs:
                        if p == path:
                            out[fast] = run_chapter(p, envs[p], fast=fast, **common)
                    return out
                futures = {pool.submit(chain, path): path for path in chapters}
                for future in concurrent.futures.as_completed(futures):
                    path = futures[future]
                    for fast, result in future.result().items():
                        table[(path.stem + ("" if fast else " (full mode)"), phase)] = result
                        print(f"{phase:9s} {path.stem + ('' if fast else ' (full)'):34s} {result['seconds']:6.0f} s  "
                              f"{result['status']}", flush=True)
    finally:
        server.shutdown()
    total = time.perf_counter() - clock
    print(f"\n| chapter | first run | s | restart | s |\n|---|---|---|---|---|")
    for name in sorted({k[0] for k in table}):
        first, again = table.get((name, "first run")), table.get((name, "restart"))
        cell = lambda r: ("—", "") if r is None else (r["status"].split(":")[0], f"{r['seconds']:.0f}")
        print(f"| {name} | {' | '.join(cell(first))} | {' | '.join(cell(again))} |")
    print(f"\ncolab-check: {len(table)} runs in {total:.0f} s (executed notebooks in {work})")
    bad = {k: r for k, r in table.items() if r["status"] != "ok"}
    for (name, phase), result in sorted(bad.items()):
        print(f"FAILED {name} ({phase}): {result['status']}")
        for problem in result["problems"][3:]:
            print(f"    {problem}")
    if not args.keep and not bad:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
