"""Run every chapter as a Colab reader would, and check what they see (``make colab-check``).

The reader's machine, simulated offline:

- a Colab-like virtual environment ``.venv-colab/`` (Colab's preinstalled packages, no myst-nb,
  Sphinx, nbval or torchattacks) and, per notebook, a fresh environment layered on it, in which
  the notebook's own install cell installs qnnlib, as in a new Colab VM
  (``tools/colab_env.py``): ``%pip install "qnnlib @ git+URL@REF"`` with the repository URL
  replaced by this checkout (``git+file://``) and the ref by a commit of it;
- the recorded runs served from ``book/results`` of that commit on a loopback port, in place of
  ``raw.githubusercontent.com`` (the install cell's ``QNNLIB_RESULTS_URL`` is rewritten to it);
- the notebook copied into a temporary folder outside the repository, and ``PYTHONPATH`` unset.

Every chapter runs top to bottom in fast mode (``QNNLIB_FAST=1``), Chapter 6 also in full mode;
then Chapters 6 and 8 (``RESTART_TOO``; every chapter with ``--restart-all``) again in fast mode in
the same environments, qnnlib already installed, in a new kernel (the restart that the install asks
for). Every chapter's install cell is the same text (``tests/test_colab_edition.py``), so what a
restart can lose is lost in every chapter alike; Chapters 6 and 8 read recorded runs through the
results URL that a restart would lose (Chapter 6 retrained its 50-epoch run when it did). In that
restart pass Chapter 8 reads CIFAR-10 in the
official layout, with images that differ from the JPEG copy the recorded runs used (written by
``tools/official_layout.py``, which also tells torchvision their md5s in that kernel only): it
must run to the end and say which data it used. With ``--students``, every assignment notebook
(``tools/assignments.py build``) runs once in an environment of its own, its install cell
installing otter-grader from the package index; each public check must report its stub as not
done. A run passes when every code cell ran without error, no Markdown cell holds raw MyST
(``{glue``, ``{cite``, ``{numref``, ``:::``), no output shows an object's address
(``<... at 0x...>``) and no output has qnnlib's "training started" line
(``qnnlib.experiments.TRAINING_MARKER``): nothing trains unasked. Afterwards ``.venv-colab``
must still hold Colab's versions (what the notebooks installed stayed in their environments).

Notebooks run in parallel (``--workers``), longest first, each notebook's runs one after the
other in its environment; torch gets one thread in every notebook but the longest (Chapter 8,
whose two runs are the critical path), so the other worker never oversubscribes the cores.

Usage::

    .venv/bin/python tools/colab_check.py [--notebooks DIR] [--students DIR] [--only 06 07] [--workers 2]
                                          [--restart-all | --no-restart]

``--notebooks`` defaults to the Colab edition ``_build/colab/book`` (``make colab``). Prints one
table, notebook × status × wall seconds per pass, and exits 1 if any run failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from qnnlib import source  # noqa: E402  (the repository URL the install cells name)

sys.path.insert(0, str(ROOT / "tools"))
import official_layout  # noqa: E402  (official-layout CIFAR-10 from the JPEG copy, for Chapter 8)
from colab_env import (ABSENT, COLAB_PACKAGES, UNPINNED, VENV, _constraints, check_base,  # noqa: E402,F401
                       chapter_env, ensure_venv)

EDITION = ROOT / "_build" / "colab" / "book"
FULL_MODE_TOO = ("06_",)
# The chapters run again after a restart (all of them with --restart-all): see the docstring.
RESTART_TOO = ("06_", "08_")
# The restart pass of these chapters reads CIFAR-10 in the official layout whose images differ
# from the JPEG copy the recorded runs used (official_layout.py): the page must say so, in the
# sentence of experiments.data_check, and run to the end.
OTHER_DATA = {"08_": "was made on CIFAR-10 (JPEG copy), but the images here are CIFAR-10 (official)"}
# Longest first (seconds per pass on the 2-core machine, measured): the pool stays busy to the end.
SLOW_FIRST = ("08_", "02_", "06_", "07_", "05_", "03_")
CELL_TIMEOUT = 1800  # seconds per cell, as the book build (_config.yml); training for hours fails
RAW_MYST = re.compile(r"\{glue|\{cite|\{numref|^\s*:::", re.M)
ADDRESS = re.compile(r"<[^<>\n]* at 0x[0-9a-fA-F]+>")
TRAINING_MARKER = "qnnlib: training"


def fail(message: str) -> None:
    print(f"colab_check: {message}", file=sys.stderr)
    sys.exit(2)


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


def student_problems(nb) -> list[str]:
    """What an untouched assignment notebook must show: every public check reports its stub as not done."""
    found, checks = [], 0
    for n, cell in enumerate(nb.cells):
        match = cell.cell_type == "code" and re.search(r"""grader\.check\(\s*["'](\w+)["']""", cell.source)
        if not match:
            continue
        checks += 1
        label, text = match[1].replace("_", "-"), "\n".join(_texts(cell))
        if f"NotImplementedError: Exercise {label}" not in text or "All test cases passed" in text:
            found.append(f"cell {n}: grader.check({match[1]!r}) does not report the stub as not done: {text[-200:]!r}")
    if not checks:
        found.append("no grader.check(...) cell")
    return found


def run_chapter(path: Path, env_dir: Path, *, kernel: str, work: Path, clone_url: str, commit: str,
                results_url: str, markdown: bool, expect=None) -> dict:
    """Run one notebook top to bottom in ``env_dir``'s ``kernel``, in a folder of its own.

    ``expect``: a function of the executed notebook that returns more problems (empty: none).
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    nb = nbformat.read(path, as_version=4)
    localise(nb, clone_url, commit, results_url)
    workdir = Path(tempfile.mkdtemp(prefix=path.stem + "-", dir=work))
    shutil.copy(path, workdir / path.name)  # the notebook alone, outside the repository
    specs = KernelSpecManager(kernel_dirs=[str(env_dir / "kernels")])
    # Unix sockets, not TCP ports: kernels of other jobs on a shared machine can take a port that
    # this one was given (a client then talks to the wrong kernel and waits for ever).
    km = KernelManager(kernel_name=kernel, kernel_spec_manager=specs, transport="ipc", ip=str(workdir / "kernel"))
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
    found = problems(nb, markdown=markdown) + (expect(nb) if expect and status == "ok" else [])
    if status == "ok" and found:
        status = "fail: " + "; ".join(found[:3])
    nbformat.write(nb, workdir / f"{path.stem}.{kernel}.out.ipynb")
    return {"status": status, "seconds": seconds, "problems": found, "output": str(workdir), "cells": cell_seconds(nb)}


def cell_seconds(nb) -> dict[int, float]:
    """Seconds each code cell ran (nbclient's timestamps), by cell index: where a run's time goes."""
    from datetime import datetime

    out = {}
    for n, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in stamps and "shell.execute_reply" in stamps:
            start, end = (datetime.fromisoformat(stamps[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            out[n] = (end - start).total_seconds()
    return out


def _where(cells: dict[int, float]) -> str:
    """"install 12 s, slowest cells #12 40 s, #3 9 s" (the first code cell is the install cell)."""
    if not cells:
        return ""
    first = min(cells)
    top = sorted((k for k in cells if k != first), key=lambda k: -cells[k])[:3]
    return f"install {cells[first]:.0f} s, slowest " + ", ".join(f"#{k} {cells[k]:.0f} s" for k in top)


def _says(sentence: str):
    def expect(nb):
        if any(sentence in text for cell in nb.cells if cell.cell_type == "code" for text in _texts(cell)):
            return []
        return [f"the page does not say which data it used (no output contains {sentence!r})"]
    return expect


# ---------------------------------------------------------------------------------------------
# The whole check
# ---------------------------------------------------------------------------------------------


def plan(chapters: list[Path], students: list[Path], *, restart: bool, other_data: bool,
         restart_all: bool = False) -> dict[Path, list[tuple]]:
    """The runs of each notebook, in order: (row name, phase, kernel, expect), longest notebooks first.

    ``restart``: run the chapters of ``RESTART_TOO`` (every chapter if ``restart_all``) again after a restart.

    A notebook's runs share its environment, so they run one after the other (the first installs
    qnnlib; the restart pass finds it installed); different notebooks run in parallel.
    """
    runs = {}
    for path in chapters:
        todo = [(path.stem, "first run", "colab-fast", None)]
        if path.name.startswith(FULL_MODE_TOO):
            todo.append((f"{path.stem} (full mode)", "first run", "colab-full", None))
        if restart and (restart_all or path.name.startswith(RESTART_TOO)):
            # The restart pass runs fast mode only: what a restart can lose (the results URL, the
            # installed package) both modes read the same way, and in fast mode a lost URL shows as
            # the tiny runs' "training started" line just as a full-mode run would retrain.
            for name, phase, kernel, _ in [t for t in todo if t[2] == "colab-fast"]:
                data = next((s for p, s in OTHER_DATA.items() if path.name.startswith(p)), None)
                if data and other_data and kernel == "colab-fast":
                    todo.append((name, "restart", "colab-fast-official", _says(data)))
                else:
                    todo.append((name, "restart", kernel, None))
        runs[path] = todo
    for path in students:
        runs[path] = [(f"assignment {path.stem}", "first run", "colab-fast", student_problems)]

    def cost(path):
        rank = next((k for k, p in enumerate(SLOW_FIRST) if path.name.startswith(p)), len(SLOW_FIRST))
        return (path in students, rank, path.name)
    return dict(sorted(runs.items(), key=lambda item: cost(item[0])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=EDITION, help="folder of chapter notebooks (default: %(default)s)")
    parser.add_argument("--students", type=Path, help="folder of assignment notebooks (tools/assignments.py build: student/)")
    parser.add_argument("--only", nargs="*", default=[], help="chapter prefixes to run, e.g. 06 07")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--commit", default="HEAD", help="the commit to install and serve results from")
    parser.add_argument("--no-restart", action="store_true", help="skip the second (restart) pass")
    parser.add_argument("--restart-all", action="store_true",
                        help="run every chapter after the restart, not only " + ", ".join(RESTART_TOO))
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (executed notebooks)")
    args = parser.parse_args(argv)
    if not args.notebooks.is_dir():
        fail(f"--notebooks {args.notebooks} is not a folder (build the Colab edition with `make colab`)")
    if args.students is not None and not args.students.is_dir():
        fail(f"--students {args.students} is not a folder (write the assignments with `make assignments`)")
    if args.workers < 1:
        fail(f"--workers must be ≥ 1, got {args.workers}")
    chapters = sorted(p for p in args.notebooks.glob("*.ipynb") if not args.only or p.name.startswith(tuple(args.only)))
    students = sorted(p for p in args.students.glob("*.ipynb") if not args.only or p.name.startswith(tuple(args.only))) \
        if args.students else []
    if not chapters and not students:
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
    # One wheel cache for all the environments: the first install cell builds qnnlib's wheel from
    # the clone (at a fixed commit), the others reuse it; the package index is read as in Colab.
    os.environ["PIP_CACHE_DIR"] = str(work / "pip-cache")
    results_url, server = serve(export_results(commit, work))
    data = os.environ.get("QNNLIB_DATA") or None
    other_data = bool(data) and any(c.name.startswith(tuple(OTHER_DATA)) for c in chapters) and not args.no_restart
    extra = {}
    if other_data:
        if (Path(data) / "cifar10-jpeg" / "train").is_dir():
            folder, site = official_layout.from_jpeg_copy(Path(data), work / "official")
            extra["colab-fast-official"] = {"QNNLIB_DATA": str(folder), "PYTHONPATH": str(site)}
        else:   # the official files themselves (or none: downloaded): the first pass reads them already
            print(f"colab-check: no JPEG copy under {data}: Chapter 8's restart pass reads the same data", flush=True)
            other_data = False
    if args.restart_all and args.no_restart:
        fail("--restart-all and --no-restart contradict each other; give one")
    runs = plan(chapters, students, restart=not args.no_restart, other_data=other_data, restart_all=args.restart_all)
    # The longest notebook (Chapter 8, both passes: the critical path) may use every core; the
    # others get one torch thread each and fill the other worker's time without oversubscribing.
    longest = next(iter(runs))
    threads = {path: 1 if args.workers > 1 and path != longest else None for path in runs}
    from qnnlib.data import cache_dir   # the decoded JPEG copy (written by make test, or just above)

    envs = {path: chapter_env(python, work / f"env-{path.parent.name}-{path.stem}", data, threads=threads[path],
                              extra=extra if path in chapters else None, decoded=cache_dir() / "decoded")
            for path in runs}
    table = {}
    common = dict(work=work, clone_url=f"file://{ROOT}", commit=commit, results_url=results_url)

    def chain(path):
        out = []
        for name, phase, kernel, expect in runs[path]:
            result = run_chapter(path, envs[path], kernel=kernel, expect=expect, markdown=markdown,
                                 **common)
            print(f"{phase:9s} {name + ('' if kernel == 'colab-fast' else f' [{kernel}]'):48s} "
                  f"{result['seconds']:6.0f} s  {result['status'][:200]}  ({_where(result['cells'])})", flush=True)
            out.append(((name, phase), result))
        return out
    try:
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            for future in [pool.submit(chain, path) for path in runs]:
                table.update(future.result())
    finally:
        server.shutdown()
    total = time.perf_counter() - clock
    base = check_base()
    print("\n| notebook | first run | s | restart | s |\n|---|---|---|---|---|")
    for name in dict.fromkeys(k[0] for k in table):
        first, again = table.get((name, "first run")), table.get((name, "restart"))
        cell = lambda r: ("—", "") if r is None else (r["status"].split(":")[0], f"{r['seconds']:.0f}")
        print(f"| {name} | {' | '.join(cell(first))} | {' | '.join(cell(again))} |")
    print(f"\ncolab-check: {len(table)} runs in {total:.0f} s (executed notebooks in {work})")
    bad = {k: r for k, r in table.items() if r["status"] != "ok"}
    for (name, phase), result in sorted(bad.items()):
        print(f"FAILED {name} ({phase}): {result['status']}")
        for problem in result["problems"][3:]:
            print(f"    {problem}")
    for problem in base:
        print(f"FAILED {VENV} is no longer Colab's: {problem}")
    if not args.keep and not bad and not base:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if bad or base else 0


if __name__ == "__main__":
    sys.exit(main())
