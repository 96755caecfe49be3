"""Recorded results as the book reads them: local, downloaded, or run on demand (Chapters 6–9)."""

from __future__ import annotations

import os
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import results
from .configs import CONFIGS, MODELS, RESULTS_DIR, RUNS_DIR, make_config
from .runner import run

@dataclass(frozen=True, eq=False)
class RecordedRun:
    """A results file as the book reads it: the record, its Fig. 1 arrays, and where it lives."""

    record: dict
    snapshots: dict
    path: Path

    def series(self, key: str, space: str | None = None) -> np.ndarray:
        """One per-epoch quantity as an array, e.g. ``series("test_acc")``, ``series("dp", "pixel")``."""
        epochs = self.record["epochs"]
        if space is None:
            return np.array([e[key] for e in epochs], dtype=float)
        return np.array([e[space][key] for e in epochs], dtype=float)

    @property
    def epochs(self) -> np.ndarray:
        return self.series("epoch").astype(int)

    @property
    def is_fast(self) -> bool:
        """True for a tiny run of a fast configuration (its numbers show the method, not the study)."""
        return self.record["experiment"].endswith(" (fast)")


def _recorded(path: Path) -> RecordedRun:
    record = results.read_results(path)
    npz = path.with_suffix(".npz")
    return RecordedRun(record, load_snapshots(path) if npz.exists() else {}, path)


RESULTS_URL_ENV = "QNNLIB_RESULTS_URL"
RECORDED_SUFFIXES = (".json", ".npz", ".weights.pt")


def _recorded_path(name: str) -> Path:
    """Where the recorded run ``name`` is: ``book/results/`` of a repository checkout, else a
    downloaded copy.

    A pip-installed qnnlib (Colab) has no ``book/results/``; the chapters' install cell then sets
    ``QNNLIB_RESULTS_URL`` to the repository's ``book/results`` folder (raw files), and the
    recorded files are fetched once into ``~/.cache/qnnlib/results``. Without the variable, or if
    the download fails, the local path is returned (absent: the caller runs or reports).
    """
    local = RESULTS_DIR / f"{name}.json"
    base = os.environ.get(RESULTS_URL_ENV)
    if local.exists() or not base:
        return local
    from ..data import cache_dir

    folder = cache_dir() / "results"
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in RECORDED_SUFFIXES:
        target = folder / f"{name}{suffix}"
        if target.exists():
            continue
        try:
            with urllib.request.urlopen(f"{base.rstrip('/')}/{name}{suffix}", timeout=60) as response:
                data = response.read()
        except (OSError, ValueError) as error:
            if suffix == ".json":
                warnings.warn(f"could not download the recorded run {name} from {base} ({error})", stacklevel=3)
                return local
            continue  # snapshots or weights missing upstream: the record alone is still usable
        results._atomic_write(target, lambda handle, data=data: handle.write(data))
    return folder / f"{name}.json"


def load_or_run(name: str, fast: bool, *, device=None, progress: bool = True) -> RecordedRun:
    """Results for the book: the recorded run in full mode (run if absent or made with another
    config), a tiny real run of the fast config in fast mode."""
    if fast:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix="qnnlib-fast-"))
        return _recorded(run(name, fast=True, device=device, out=out, resume=False, progress=progress))
    config = make_config(name)
    path = _recorded_path(name)
    if path.exists():
        recorded = _recorded(path)
        if recorded.record["config"] != config.as_dict():
            # Recorded with another config (an older qnnlib?): never reuse it, never overwrite it.
            return _recorded(run(name, device=device, out=RUNS_DIR, progress=progress))
        if "final" in recorded.record:
            return recorded
    # Absent or unfinished: run, or resume, the recorded run (in a checkout: book/results/).
    out = RESULTS_DIR if RESULTS_DIR.parent.is_dir() else RUNS_DIR
    return _recorded(run(name, device=device, out=out, progress=progress))


def book_runs(names: dict[str, str], fast: bool, *, device=None, progress: bool = True) -> tuple[dict, dict]:
    """The runs a chapter reads, and the recorded runs among them that are still in progress.

    ``names`` maps the chapter's keys to experiment names. When every one of them is recorded with
    the current config and finished, the recorded runs are returned, in full *and* in fast mode:
    reading them costs seconds, and a fast build (``make test``) then renders and checks the page
    with the numbers it publishes. Otherwise:

    - fast mode: the tiny fast runs of all the experiments, as :func:`load_or_run`;
    - full mode: the recorded runs, as :func:`load_or_run` (running the absent ones) — unless one is
      recorded with the current config but unfinished (no final evaluation yet, e.g. a CPU run
      recorded over several sessions). A book build must not train for hours, so the chapter is then
      built from the fast runs of *all* its experiments (one consistent, tiny set of numbers), and
      the unfinished records are returned, as they stand, for the chapter to show and to label.

    Returns:
        ``(runs, in_progress)``: ``{key: RecordedRun}`` for the chapter, and ``{key: RecordedRun}``
        of the unfinished recorded runs (empty when all are finished, and in fast mode).
        ``run.is_fast`` tells which case a chapter got.
    """
    finished, in_progress = {}, {}
    for key, name in names.items():
        path = _recorded_path(name)
        if path.exists():
            run_ = _recorded(path)
            if run_.record["config"] == make_config(name).as_dict():
                (finished if "final" in run_.record else in_progress)[key] = run_
    if len(finished) == len(names):
        return finished, {}
    if fast:
        in_progress = {}
    small = fast or bool(in_progress)
    runs = {key: load_or_run(name, fast=small, device=device, progress=progress) for key, name in names.items()}
    return runs, in_progress


def book_runs_note(runs: dict, in_progress: dict) -> str:
    """One Markdown paragraph saying what a chapter built by :func:`book_runs` is made from."""
    any_run = next(iter(runs.values())).record
    if not in_progress and not any(run.is_fast for run in runs.values()):
        return "This page reads the recorded runs " + ", ".join(
            f"`{run.record['experiment']}` ({len(run.epochs)} epochs, {run.record['provenance']['dataset']['identity']})"
            for run in runs.values()) + "."
    small = make_config(any_run["config"]["name"], fast=True)
    tiny = (f"tiny runs of the fast configuration ({small.epochs} epochs on {small.train_size:,} training images, "
            "through the same code): their numbers show the method, not the study")
    if not in_progress:
        return f"Built in fast mode: every number and figure on this page comes from {tiny}."
    return ("**The recorded runs are still in progress:** " + "; ".join(
        f"`{run.record['experiment']}` at {len(run.epochs)} of {run.record['config']['epochs']} epochs"
        for run in in_progress.values())
        + " (`python -m qnnlib run NAME --out book/results` resumes them). A book build does not train for "
        f"hours, so until they have finished the rest of this page is computed from {tiny}. "
        "The curves recorded so far are drawn below.")


def weights_path(results_json: Path | str) -> Path:
    """``NAME.weights.pt`` beside ``NAME.json``: the final network's weights (kept in git, small)."""
    path = Path(results_json)
    return path.with_name(path.stem + ".weights.pt")


def final_model(run: RecordedRun) -> nn.Module:
    """The trained network of a recorded run, in eval mode (from ``NAME.weights.pt``, else the checkpoint).

    Raises ``FileNotFoundError`` naming both files when neither is there.
    """
    config = run.record["config"]
    cls = MODELS[config["model"]]
    model = cls(width=config["width"]) if config.get("width") else cls()
    weights = weights_path(run.path)
    ckpt = run.path.with_name(run.path.stem + ".ckpt.pt")
    source = weights if weights.exists() else ckpt
    if not source.exists():
        raise FileNotFoundError(f"no weights for {run.path.name}: expected {weights} or {ckpt}")
    state = torch.load(source, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


def recorded(name: str, *, finished: bool = True) -> RecordedRun:
    """The recorded run ``book/results/NAME.json`` as it is, never running anything.

    For pages that only read results (Chapter 9, the reproduction appendix). Raises
    ``FileNotFoundError`` if the file is absent and, with ``finished``, ``ResultsError`` if the
    run has not finished (no final evaluation yet).
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(CONFIGS)}")
    path = _recorded_path(name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: record it with `python -m qnnlib run {name} --out {RESULTS_DIR}`"
                                f" (or set {RESULTS_URL_ENV} to a folder URL holding the recorded files)")
    run = _recorded(path)
    if finished and "final" not in run.record:
        raise results.ResultsError(f"{path} is unfinished ({len(run.record['epochs'])} epochs so far)")
    return run


def load_snapshots(results_json: Path | str) -> dict:
    """The Fig. 1 arrays stored beside a results file (``NAME.npz``)."""
    path = Path(results_json).with_suffix(".npz")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def show(path) -> str:
    """A summary table of a results file (``python -m qnnlib show FILE``)."""
    record = results.read_results(Path(path))
    prov = record["provenance"]
    lines = [
        f"{record['experiment']}: {prov['dataset']['identity']}, seed {prov['seed']}, device {prov['device']}, "
        f"commit {prov['git_commit'][:12]}, {prov['wall_seconds'] / 60:.1f} min",
        f"{'epoch':>5} {'loss':>7} {'train':>6} {'test':>6} {'robust':>6} {'r-feat':>6} "
        f"{'Δx pix':>7} {'Δp pix':>8} {'Δx feat':>7} {'Δp feat':>8} {'s':>6}",
    ]
    for e in record["epochs"]:
        lines.append(
            f"{e['epoch']:5d} {e['train_loss']:7.4f} {e['train_acc']:6.4f} {e['test_acc']:6.4f} {e['robust_acc']:6.4f} "
            f"{e['robust_acc_feature']:6.4f} {e['pixel']['dx']:7.3f} {e['pixel']['dp']:8.3f} "
            f"{e['feature']['dx']:7.3f} {e['feature']['dp']:8.3f} {e['seconds']['total']:6.1f}"
        )
    return "\n".join(lines)
