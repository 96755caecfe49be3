"""Recorded results as the book reads them: local, downloaded, or run on demand (Chapters 6–9)."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import results
from .. import manifest, source
from ..uncertainty import diagnostics
from ..data import cache_dir
from .configs import CONFIGS, MODELS, RESULTS_DIR, RUNS_DIR, make_config
from .measure import FeatureSpace, feature_space
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


RESULTS_URL_ENV = source.RESULTS_URL_ENV
RECORDED_SUFFIXES = (".json", ".npz", ".weights.pt")
# Printed (stderr) whenever the book starts training: `make colab-check` fails a chapter that shows it.
TRAINING_MARKER = "qnnlib: training"
# Wall time of each recorded run, in minutes, and where it was measured (tests/test_recorded.py
# checks them against book/results): what a reader is told before computing a run themselves.
RECORDED_MINUTES = {"mnist-cnn3": 131, "mnist-cnn3-seed1": 96, "mnist-cnn3-seed2": 200, "cifar-cnn4": 206,
                    "cifar-resnet8": 204, "mnist-cnn3-at": 150}
# The seed runs differ from mnist-cnn3 in their seed only: as long, until they are recorded.
RECORDED_MINUTES.update({name: RECORDED_MINUTES["mnist-cnn3"] for name in CONFIGS
                         if name.startswith("mnist-cnn3-seed") and name not in RECORDED_MINUTES})
RECORDED_ON = "a CPU with 1–2 threads"
# Why a recorded run could not be read (name → reason), for the one-line error.
_unavailable: dict[str, str] = {}


class RecordedRunUnavailable(RuntimeError):
    """A chapter needs a recorded run that cannot be read, and will not train it unasked.

    Its message is one line saying what to run and how long that takes; Jupyter shows that line
    alone, without a traceback.
    """

    def _render_traceback_(self):
        return [f"{type(self).__name__}: {self}"]


def in_checkout() -> bool:
    """True when qnnlib runs from a clone of the repository (``book/results/`` beside it)."""
    return RESULTS_DIR.is_dir()


def _recorded_path(name: str) -> Path:
    """Where the recorded run ``name`` is: ``book/results/`` of a repository checkout, else a
    verified downloaded copy, else ``runs/NAME.json`` of the working folder (a run the reader made).

    A pip-installed qnnlib (Colab) has no ``book/results/``; it downloads the recorded files from
    :func:`qnnlib.source.results_url` (``$QNNLIB_RESULTS_URL``, else the repository at the commit
    qnnlib was installed from) into ``~/.cache/qnnlib/results/``, and uses them only if they match
    the ``SHA256SUMS`` published with them (:mod:`qnnlib.manifest`). When nothing is found, the
    local path is returned (absent: the caller reports, or in a checkout runs).
    """
    local = RESULTS_DIR / f"{name}.json"
    if local.exists() or in_checkout():
        return local
    base = source.results_url()
    if base:
        folder = cache_dir() / "results" / hashlib.sha256(base.encode()).hexdigest()[:16]
        got = manifest.fetch(base, [name + suffix for suffix in RECORDED_SUFFIXES], folder)
        if f"{name}.json" in got:
            return got[f"{name}.json"]
        _unavailable[name] = f"not available from {base}"
    else:
        _unavailable[name] = f"no results URL: set {RESULTS_URL_ENV}, or install qnnlib from its GitHub repository"
    mine = RUNS_DIR / f"{name}.json"
    return mine if mine.exists() else local


def locate_recorded(name: str, what: str, hint: str = "") -> Path:
    """The path of the recorded file ``name`` (:func:`_recorded_path`), which exists; if it does not,
    ``FileNotFoundError`` in a checkout (record it) or ``RecordedRunUnavailable`` elsewhere, both
    naming the command that computes it. ``what`` names the kind of file ("fragility table", …)."""
    path = _recorded_path(name)
    if not path.exists():
        command = f"`python -m qnnlib run {name}`"
        if in_checkout():
            raise FileNotFoundError(f"{path} not found: record it with {command} --out book/results")
        raise RecordedRunUnavailable(f"the {what} {name} is not available: {command} computes it{hint}")
    return path


def how_to_compute(name: str) -> str:
    """The command that computes the run ``name`` and how long it took when it was recorded."""
    minutes = RECORDED_MINUTES.get(name)
    took = f"the recorded run took {minutes} min on {RECORDED_ON}, less on a GPU" if minutes else "50 epochs"
    return (f"`python -m qnnlib run {name}` writes runs/{name}.json, which the chapter then reads ({took}); "
            f"QNNLIB_FAST=1 runs a tiny version in seconds instead")


def _refuse(name: str, why: str, reason: str | None = None) -> None:
    reason = reason or _unavailable.get(name, "")
    raise RecordedRunUnavailable(f"the recorded run {name} is {why}{f' ({reason})' if reason else ''}, and a "
                                 f"pip-installed qnnlib does not train it unasked: {how_to_compute(name)}")


def _train(name: str, **kwargs) -> Path:
    fast = kwargs.get("fast", False)
    print(f"{TRAINING_MARKER} {name}{' (fast configuration)' if fast else ''}", file=sys.stderr, flush=True)
    return run(name, **kwargs)


def data_check(run: RecordedRun, dataset) -> tuple[bool, str]:
    """Whether ``dataset`` holds the images the recorded ``run`` was made with, and one sentence.

    Compares ``dataset.identity`` (e.g. "CIFAR-10 (official)" or "CIFAR-10 (JPEG copy)",
    :mod:`qnnlib.data`) with the identity stored in the run's provenance. A chapter that checks a
    recorded measurement on the same images (Chapter 8) runs that check only when this is True,
    and shows the sentence otherwise, so that the page names the data it used.
    """
    recorded_as = run.record["provenance"]["dataset"]["identity"]
    here = dataset.identity
    experiment = run.record["experiment"]
    if here == recorded_as:
        return True, f"The {here} images here are those of the recorded run `{experiment}`."
    return False, (f"The recorded run `{experiment}` was made on {recorded_as}, but the images here are {here}: "
                   f"what this page computes from images uses {here}, and the checks that need the run's own "
                   f"images are skipped.")


def load_or_run(name: str, fast: bool, *, device=None, progress: bool = True) -> RecordedRun:
    """Results for the book: the recorded run in full mode, a tiny real run of the fast config in fast mode.

    In full mode a recorded run that is absent, unfinished or made with another config is run (or
    resumed) in a checkout of the repository, whose author asked for it by building the book. A
    pip-installed qnnlib (Colab) never trains it unasked: it raises ``RecordedRunUnavailable``,
    one line saying what to run and how long it takes. Every training started here prints
    ``TRAINING_MARKER`` first (stderr).
    """
    if fast:
        out = Path(tempfile.mkdtemp(prefix="qnnlib-fast-"))
        return _recorded(_train(name, fast=True, device=device, out=out, resume=False, progress=progress))
    config = make_config(name)
    path = _recorded_path(name)
    if path.exists():
        recorded = _recorded(path)
        if recorded.record["config"] != config.as_dict():
            # Recorded with another config (an older qnnlib?): never reuse it, never overwrite it.
            if not in_checkout():
                _refuse(name, "recorded with another configuration", f"{path} differs from qnnlib's config")
            return _recorded(_train(name, device=device, out=RUNS_DIR, progress=progress))
        if "final" in recorded.record:
            return recorded
        if not in_checkout():
            _refuse(name, "unfinished", f"{len(recorded.epochs)} of {config.epochs} epochs in {path}")
    elif not in_checkout():
        _refuse(name, "not available")
    # Absent or unfinished, in a checkout: run, or resume, the recorded run in book/results/.
    return _recorded(_train(name, device=device, out=RESULTS_DIR, progress=progress))


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


def feature_space_of(run: RecordedRun, x_train: torch.Tensor | None = None) -> FeatureSpace:
    """The feature box of a recorded run's final network (Chapter 8), from its stored scale.

    Uses ``final["feature_scale"]`` when the record has it (no image is needed); otherwise
    builds the box from ``x_train``, the run's training images, and raises ``ValueError`` naming
    that argument if it is not given (``add_feature_scale`` stores the scale once).
    """
    model = final_model(run)
    scale = run.record.get("final", {}).get("feature_scale")
    if scale is not None:
        return feature_space(model, scale=scale)
    if x_train is None:
        raise ValueError(f"{run.path.name} stores no feature_scale: pass x_train (the run's training images), "
                         f"or store the scale once with experiments.add_feature_scale")
    return feature_space(model, x_train)


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
        if in_checkout():
            raise FileNotFoundError(f"{path} not found: record it with `python -m qnnlib run {name} --out book/results`")
        _refuse(name, "not available")
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
    """A summary table of a results file (``python -m qnnlib show FILE``).

    Per epoch: loss, accuracies, and in pixel and feature space Δx and Δp with their standard
    errors — jackknife bias-corrected in schema-2 files (plain ratios in schema 1, which has no
    correction) — the smallest ESS and the largest Pareto k̂ over w = l² and Σ_i g_i², and a ``!``
    on an estimate that failed a check (ESS < 100 or k̂ > 0.7, after resampling).
    """
    record = results.read_results(Path(path))
    prov = record["provenance"]
    corrected = record["schema"] >= 2
    lines = [
        f"{record['experiment']}: {prov['dataset']['identity']}, seed {prov['seed']}, device {prov['device']}, "
        f"commit {prov['git_commit'][:12]}, {prov['wall_seconds'] / 60:.1f} min, results schema {record['schema']}",
        ("Δx, Δp: jackknife bias-corrected ± standard error; ESS: min over w and Σg², k̂: max; "
         "! = unreliable estimate" if corrected else
         "Δx, Δp: plain ratio estimates ± standard error (schema 1: no bias correction, no k̂); ! = ESS < 100"),
        f"{'epoch':>5} {'loss':>7} {'test':>6} {'robust':>6} {'r-feat':>6}  "
        + "  ".join(f"{'Δx ' + s:>15} {'Δp ' + s:>15} {'ESS':>6} {'k̂':>5}" for s in ("pixel", "feature"))
        + f" {'s':>6}",
    ]

    def space(m):
        key = "_jk" if corrected else ""
        ess = min(m["ess"], m["ess_p"]) if corrected else m.get("ess")
        khat = max(m["khat_w"], m["khat_p"], key=lambda v: -np.inf if v is None else v) if corrected else None
        reliable = m["reliable"] if corrected else not (ess is not None and ess < diagnostics.ESS_MIN)
        text = (f"{m['dx' + key]:7.3f}±{m['dx_stderr'] or 0:<7.3f} {m['dp' + key]:7.3f}±{m['dp_stderr'] or 0:<7.3f} "
                f"{'' if ess is None else f'{ess:.0f}':>6} {'' if khat is None else f'{khat:.2f}':>5}")
        return text + ("!" if not reliable else " ")

    for e in record["epochs"]:
        lines.append(
            f"{e['epoch']:5d} {e['train_loss']:7.4f} {e['test_acc']:6.4f} {e['robust_acc']:6.4f} "
            f"{e['robust_acc_feature']:6.4f}  {space(e['pixel'])} {space(e['feature'])} {e['seconds']['total']:6.1f}"
        )
    return "\n".join(lines)


def reliable_epochs(run: RecordedRun, space: str) -> np.ndarray:
    """Per epoch, whether the recorded Δx/Δp estimate in ``space`` can be trusted (Chapters 5–8).

    Schema-2 records store the verdict of the estimator's diagnostics as ``reliable`` (both
    effective sample sizes ≥ ``ESS_MIN`` and both Pareto k̂ ≤ ``KHAT_MAX``). Schema-1 records
    (made before those diagnostics existed) hold only ``ess``, the effective sample size of the
    weights w = l² (for a class mean, the mean over the classes): an epoch is unreliable there
    when ``ess < ESS_MIN`` (100). Returns a boolean array, one entry per recorded epoch; figures
    mark the False ones, and the prose says how many there are.
    """
    from ..uncertainty.diagnostics import ESS_MIN

    if space not in ("pixel", "feature"):
        raise ValueError(f"space must be 'pixel' or 'feature', got {space!r}")
    epochs = [e[space] for e in run.record["epochs"]]
    return np.array([bool(e["reliable"]) if "reliable" in e else e["ess"] >= ESS_MIN for e in epochs], dtype=bool)
