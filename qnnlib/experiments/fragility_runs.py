"""Recorded fragility tables: what predicts how easily an image is attacked, per network (Chapter 10).

A fragility experiment ``fragility-NET`` reads the finished recorded network ``NET`` (its results
file and final weights), draws a fixed, seeded set of correctly classified test images — the same
number from every class, in a seeded random order — and computes
:func:`qnnlib.fragility.fragility_table` on them chunk by chunk: per image the minimal adversarial
ε, the local Δx, Δp, Δx·Δp, mean boundary term with their diagnostics, and the baselines (logit
margin, input-gradient norm, sampled Lipschitz constant). When the last chunk is done the record
gets the Spearman correlation of every predictor with the minimal ε
(:func:`qnnlib.fragility.correlation_table`).

Files of a run ``STEM`` (``fragility-NET``, or ``fragility-NET-fast`` in fast mode) in its folder,
with the lock, atomic writes, temporaries and ``--no-resume`` order of :mod:`.store`:

=================  ==========================================================================
``STEM.lock``      held by the one process writing the table
``STEM.ckpt.pt``   **the commit record**: ``config_hash``, ``record`` (JSON text; its chunks are those done)
                   and ``columns`` (one tensor per column, the finished chunks' images in order)
``STEM.npz``       the columns for readers, and ``index`` (their test-set indices)
``STEM.json``      the record for readers (:mod:`.fragility_record`)
=================  ==========================================================================

Per chunk the order is: checkpoint, npz, JSON. A chunk is finished exactly when its checkpoint is
on disk, so a kill loses at most the chunk in progress; a rerun takes the record and the columns
from the checkpoint (rewriting the copies if they lag) and continues with the next chunk. Chunk c
draws from generators seeded by (seed, c) alone, so the resumed table is the uninterrupted one,
bit for bit on the same machine. A checkpoint of another config, another source network (its
weights' SHA-256) or another dataset is refused before any work.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import fragility, results
from ..data import load_dataset
from ..manifest import sha256
from ..models import evaluation
from . import store
from .configs import MAX_SEED, RESULTS_DIR, RUNS_DIR, _coerce, _type_ok
from .fragility_record import KIND, SCHEMA, FragilityRun, load_fragility, read_fragility, validate_fragility
from .recorded import _recorded, final_model, locate_recorded, weights_path
from .runner import _device


@dataclass(frozen=True)
class FragilityConfig:
    """Every setting of a fragility table; stored in full in its results file.

    ``source`` is the recorded network; ``eps`` the radius of the local ψ (the chapter's attack
    radius); ``n_images`` correctly classified test images, ``n_images // 10`` per class, in
    chunks of ``chunk``; ``n_samples``, ``sampler``, ``pilot``, ``stages``, ``n_groups``, ``form``
    the local ψ (:func:`qnnlib.uncertainty.local_moments`); ``eps_max``, ``tol``, ``steps``,
    ``restarts``, ``targets``, ``rel_alpha`` the minimal-ε bisection
    (:func:`qnnlib.attacks.minimal_eps`); ``n_boot`` bootstrap resamples of the correlations;
    ``fab_images`` > 0: when the last chunk is done, cross-check the bisection on the first that many
    images with torchattacks' FAB (:func:`qnnlib.fragility.fab_cross_check`), stored as ``cross_check``.
    """

    name: str
    source: str
    eps: float
    n_images: int = 500
    chunk: int = 25
    seed: int = 0
    n_samples: int = 1024
    sampler: str = "tilted"
    pilot: int = 256
    stages: int = 2
    n_groups: int = 32
    form: str = "paper"
    eps_max: float = 0.5
    tol: float = 1e-3
    steps: int = 20
    restarts: int = 1
    targets: int = 3
    rel_alpha: float = 2.5
    n_boot: int = 2000
    fab_images: int = 0

    def as_dict(self) -> dict:
        """Every setting; ``fab_images`` only when set (tables recorded before it existed keep their hash)."""
        settings = dataclasses.asdict(self)
        if not settings["fab_images"]:
            del settings["fab_images"]
        return results._clean(settings)


# N per network, tilted points (measured on the recorded networks; benchmarks/bench_local.py prints the
# reliable fraction): MNIST CNN3 passed the reliability checks on 10 of 10 images spread over the margins
# from N = 512 (1,024 leaves room); ResNet-8 on 10 of 10 at 1,024; CIFAR CNN4 on 9 of 10 and 9 of 12 at
# 4,096 — its hardest images keep k̂ > 0.7 at 8,192 (8 of 10), so twice the time would buy about one image
# in ten. Uniform points pass on 1–2 of 10 on MNIST CNN3 and CNN4 at any of these N. CIFAR-10 bisects
# to 1e-4 (its ε* are a few /255) below 0.1.
FRAGILITY_CONFIGS = {
    "fragility-mnist-cnn3": FragilityConfig("fragility-mnist-cnn3", "mnist-cnn3", eps=0.1, n_samples=1024,
                                            fab_images=50),
    "fragility-cifar-cnn4": FragilityConfig("fragility-cifar-cnn4", "cifar-cnn4", eps=8 / 255, n_samples=4096,
                                            eps_max=0.1, tol=1e-4),
    "fragility-cifar-resnet8": FragilityConfig("fragility-cifar-resnet8", "cifar-resnet8", eps=8 / 255,
                                               n_samples=1024, eps_max=0.1, tol=1e-4),
    # The adversarially trained MNIST network: same settings as its naturally trained twin.
    "fragility-mnist-cnn3-at": FragilityConfig("fragility-mnist-cnn3-at", "mnist-cnn3-at", eps=0.1, n_samples=1024,
                                               fab_images=50),
}
FRAGILITY_FAST = dict(n_images=20, chunk=10, n_samples=256, pilot=64, stages=2, steps=5, targets=1, n_boot=200)
FRAGILITY_FAST_FAB = 4  # a fast table cross-checks at most this many images (when its config cross-checks any)
_SELECT_STREAM = 500_001  # the image selection's generator: seed·1,000,003 + this (chunk streams stay below)


def _rules() -> dict:
    """``{field: (allowed range in words, check(value, config) -> bool)}`` for every setting but the names."""
    def ints(lo, hi):
        return lambda v, c: lo <= v <= hi

    def reals(lo, hi, lo_open=True):
        return lambda v, c: math.isfinite(v) and (lo < v if lo_open else lo <= v) and v <= hi

    return {
        "eps": ("(0, 1]", reals(0, 1)),
        "n_images": ("1..10000", ints(1, 10_000)),
        "chunk": ("1..10000", ints(1, 10_000)),
        "seed": (f"0..{MAX_SEED}", ints(0, MAX_SEED)),
        "n_samples": ("2..1000000", ints(2, 1_000_000)),
        "sampler": ("uniform|tilted", lambda v, c: v in ("uniform", "tilted")),
        "pilot": ("2..100000", ints(2, 100_000)),
        "stages": ("1..20", ints(1, 20)),
        "n_groups": ("2..1024", ints(2, 1024)),
        "form": ("paper|rss", lambda v, c: v in ("paper", "rss")),
        "eps_max": ("(0, 1]", reals(0, 1)),
        "tol": ("(0, eps_max)", lambda v, c: math.isfinite(v) and 0 < v < c.eps_max),
        "steps": ("1..10000", ints(1, 10_000)),
        "restarts": ("0..100 (restarts + targets ≥ 1)", lambda v, c: 0 <= v <= 100 and v + c.targets >= 1),
        "targets": ("0..9 (restarts + targets ≥ 1)", lambda v, c: 0 <= v <= 9 and v + c.restarts >= 1),
        "rel_alpha": ("(0, 100]", reals(0, 100)),
        "n_boot": ("100..1000000", ints(100, 1_000_000)),
        "fab_images": ("0..n_images", lambda v, c: 0 <= v <= c.n_images),
    }


def describe_fragility() -> str:
    """One line per named fragility table (``python -m qnnlib list``)."""
    return "\n".join(f"{name:24s} fragility table of {c.source}: {c.n_images} test images, local ψ at ε = {c.eps:.4g} "
                     f"({c.n_samples} {c.sampler} points), minimal ε by PGD-{c.steps} bisection"
                     for name, c in FRAGILITY_CONFIGS.items())


def allowed_fragility() -> str:
    """The settable keys of a fragility table and their ranges, on one line."""
    return "; ".join(f"{key}: {words}" for key, (words, _) in _rules().items())


def configure_fragility(name: str, /, *, fast: bool = False, overrides: dict | None = None) -> FragilityConfig:
    """The named fragility config, shrunk in fast mode, with ``overrides`` (``{field: value}``, strings
    converted) applied; a bad key or value raises one ``ValueError`` naming it, before any work."""
    if not isinstance(name, str) or name not in FRAGILITY_CONFIGS:
        raise ValueError(f"unknown fragility experiment {name!r}; choose one of {sorted(FRAGILITY_CONFIGS)}")
    base = FRAGILITY_CONFIGS[name]
    rules = _rules()
    changes = dict(FRAGILITY_FAST, fab_images=min(base.fab_images, FRAGILITY_FAST_FAB)) if fast else {}
    for key, value in dict(overrides or {}).items():
        if key in ("name", "source"):
            raise ValueError(f"{key}: the experiment's {key} is not a setting (give another experiment instead). "
                             f"Allowed for {name}: {allowed_fragility()}")
        if key not in rules:
            raise ValueError(f"{key}: unknown override. Allowed for {name}: {allowed_fragility()}")
        changes[key] = _coerce(key, value, getattr(base, key))
    if "fab_images" not in (overrides or {}):  # a smaller table cross-checks at most all of its images
        changes["fab_images"] = min(changes.get("fab_images", base.fab_images), changes.get("n_images", base.n_images))
    config = dataclasses.replace(base, **changes)
    for key, (words, check) in rules.items():
        value, default = getattr(config, key), getattr(base, key)
        if not _type_ok(value, default) or not check(value, config):
            raise ValueError(f"{key}: {value!r} is out of range ({words}). Allowed for {name}: {allowed_fragility()}")
    return config


def select_images(labels: torch.Tensor, correct: torch.Tensor, n: int, seed: int, classes: int) -> torch.Tensor:
    """Test-set indices of ``n`` correctly classified images: ``n // classes`` per class (the first
    ``n % classes`` classes one more), chosen and then ordered at random from one generator seeded by
    ``seed`` alone, so that any prefix of the list is itself a random sample. ``labels``, ``correct``:
    (T,) tensors of the test set. ``ValueError`` if a class has too few correctly classified images."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + _SELECT_STREAM)
    picks = []
    for c in range(classes):
        members = torch.nonzero((labels == c) & correct).flatten()
        want = n // classes + (1 if c < n % classes else 0)
        if want > len(members):
            raise ValueError(f"n_images={n} asks for {want} correctly classified test images of class {c}; "
                             f"the network classifies {len(members)} of them correctly")
        picks.append(members[torch.randperm(len(members), generator=generator)[:want]])
    index = torch.cat(picks)
    return index[torch.randperm(len(index), generator=generator)]


def chunk_seed(seed: int, chunk: int) -> int:
    """The seed of chunk ``chunk`` (its local ψ draws from it, its attacks from it + 1)."""
    return seed * 1_000_003 + 2 * chunk + 2


def _test_set(dataset: str):
    return load_dataset(dataset, "test")


def _source(path: Path):
    """(record, model, identity) of the finished recorded network at ``path``; one-line errors otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"the recorded network {path} does not exist: record it first "
                                f"(`python -m qnnlib run {path.stem} --out {path.parent}`), or point --source at its folder")
    run = _recorded(path)
    record = run.record
    if "final" not in record:
        raise results.ResultsError(f"the recorded network {path} is unfinished ({len(record['epochs'])} of "
                                   f"{record['config']['epochs']} epochs); finish it first")
    weights = weights_path(path)
    if not weights.exists():
        raise FileNotFoundError(f"no weights for {path.name}: expected {weights}")
    identity = {"name": path.stem, "experiment": record["experiment"],
                "config_hash": store.config_hash(record["experiment"], record["config"]),
                "git_commit": record["provenance"]["git_commit"], "finished": record["provenance"]["finished"],
                "dataset": record["provenance"]["dataset"]["identity"], "weights_sha256": sha256(weights)}
    return record, final_model(run), identity


def run_fragility(name: str, /, *, fast: bool = False, device=None, out=None, resume: bool = True,
                  progress: bool = True, overrides: dict | None = None, source_dir=None) -> Path:
    """Compute (or resume) the fragility table ``name``; return the path of its results JSON.

    Args:
        name: a key of ``FRAGILITY_CONFIGS`` (``python -m qnnlib list``).
        fast: the tiny configuration (20 images, 256 points each, weaker attacks).
        device: ``"cpu"`` (the default; the local ψ's draws come from CPU generators).
        out: results folder (default ``runs/``; ``book/results`` to record); created if absent.
        resume: continue after the last finished chunk of a matching table in ``out``; with False,
            delete its files (checkpoint first) and start again.
        overrides: ``{field: value}`` of :class:`FragilityConfig` (the CLI's ``--set``).
        source_dir: the folder holding the recorded network (default ``book/results``).

    Raises ``ValueError`` (bad config, device or folder; ``store.RunLocked``), ``FileNotFoundError``
    or ``results.ResultsError`` (the network absent or unfinished, a table there of another config),
    all before the first chunk.
    """
    config = configure_fragility(name, fast=fast, overrides=overrides)
    device = _device(device or "cpu")
    if device.type != "cpu":
        raise ValueError(f"fragility tables run on the CPU (their local ψ draws from CPU generators), "
                         f"got device {device}")
    source = _source(Path(RESULTS_DIR if source_dir is None else source_dir) / f"{config.source}.json")
    files = store.RunFiles(store.prepare_folder(RUNS_DIR if out is None else out),
                           config.name + ("-fast" if fast else ""))
    with store.locked(files):
        store.clean_temporary(files)
        return _run(config, fast, device, files, resume, progress, source)


def recorded_fragility(name: str) -> FragilityRun:
    """The recorded fragility table ``name`` (``book/results/NAME.json`` and ``.npz``), never computing it.

    Like :func:`qnnlib.experiments.recorded` for training runs: a checkout reads ``book/results/``;
    a pip-installed qnnlib (Colab) downloads the two files, checked against the published
    ``SHA256SUMS``. ``FileNotFoundError`` (in a checkout) or ``RecordedRunUnavailable`` (elsewhere)
    says how to compute a missing table; ``ResultsError`` if it is unfinished.
    """
    if name not in FRAGILITY_CONFIGS:
        raise ValueError(f"unknown fragility experiment {name!r}; choose one of {sorted(FRAGILITY_CONFIGS)}")
    path = locate_recorded(name, "fragility table",
                           f" (runs/{name}.json); QNNLIB_FAST=1 computes a tiny one in a minute")
    table = load_fragility(path)
    if not table.finished:
        done = (table.record["summary"] or {}).get("n_images", 0)
        raise results.ResultsError(f"{path} is unfinished ({done} of {table.record['config']['n_images']} images)")
    return table


def _resume_state(files: store.RunFiles, digest: str, identity: dict, test):
    """``(record, columns)`` to continue from, or ``(None, None)`` to start afresh (:func:`store.resume_derived`,
    and the checkpoint's columns as long as its chunks)."""
    record, columns = store.resume_derived(files, digest, identity, test.identity, validate=validate_fragility,
                                           arrays="columns")
    if columns is not None:
        done = sum(c["n"] for c in record["chunks"])
        if any(len(v) != done for v in columns.values()):
            raise results.ResultsError(f"checkpoint {files.ckpt} is corrupt ({len(record['chunks'])} chunk records "
                                       f"of {done} images, columns of other lengths)")
    return record, columns


def _summary(columns: dict) -> dict:
    """Counts and medians of the finished images (the reliability of their local ψ included)."""
    n = len(columns["min_eps"])
    eps = columns["min_eps"][np.isfinite(columns["min_eps"]) & ~columns["clean_wrong"]]
    return {"n_images": n, "reliable": int(columns["reliable"].sum()),
            "reliable_fraction": float(columns["reliable"].mean()), "unbroken": int(columns["unbroken"].sum()),
            "clean_wrong": int(columns["clean_wrong"].sum()),
            "median_min_eps": float(np.median(eps)) if eps.size else None,
            "median_ess": float(np.median(columns["ess"])), "median_khat": float(np.median(columns["khat_w"]))}


def table_images(config: FragilityConfig, model, test) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, correct)``: the test-set indices of the table's images (:func:`select_images` among
    the images ``model`` classifies correctly) and the (T,) mask of those correct classifications."""
    with evaluation(model), torch.no_grad():
        predicted = torch.cat([model(test.x[i:i + 1000]).argmax(1) for i in range(0, len(test), 1000)])
    correct = predicted == test.y
    return select_images(test.y, correct, config.n_images, config.seed, len(test.classes)), correct


def _new_record(config: FragilityConfig, experiment: str, device, test, model, identity) -> dict:
    index, correct = table_images(config, model, test)
    return {
        "kind": KIND, "schema": SCHEMA, "experiment": experiment, "config": config.as_dict(),
        "provenance": results.provenance(device=device, dataset=test, seed=config.seed, started=results.now()),
        "source": identity,
        "images": {"index": index.tolist(), "n_test": len(test), "test_accuracy": float(correct.double().mean()),
                   "selection": f"{config.n_images // len(test.classes)} or more correctly classified test images per "
                                "class, in a seeded random order"},
        "chunks": [], "summary": None, "correlation": None,
    }


def _run(config, fast, device, files, resume, progress, source) -> Path:
    source_record, model, identity = source
    test = _test_set(source_record["config"]["dataset"])
    experiment = config.name + (" (fast)" if fast else "")
    digest = store.config_hash(experiment, config.as_dict())
    if resume:
        record, columns = _resume_state(files, digest, identity, test)
    else:
        store.discard(files)
        record, columns = None, None
    if record is not None and columns is None:  # a finished JSON without its checkpoint: nothing to do
        return files.json
    if record is None:
        record, columns = _new_record(config, experiment, device, test, model, identity), {}
    index = torch.tensor(record["images"]["index"], dtype=torch.long)
    n_chunks = math.ceil(len(index) / config.chunk)
    start = len(record["chunks"])
    if start == n_chunks:  # finished: bring the copies up to the checkpoint where a kill left them behind
        if _lags(files, record, columns):
            _write_copies(files, record, columns, index)
        return files.json
    if start:
        here = results.provenance(device=device, dataset=test, seed=config.seed, started=results.now())
        record["provenance"].setdefault("resumed", []).append({
            "chunk": start, "at": here["started"], "git_commit": here["git_commit"], "device": here["device"],
            "torch_version": here["torch_version"]})
    wall_before = float(record["provenance"]["wall_seconds"])
    session = time.perf_counter()
    for c in range(start, n_chunks):
        rows = index[c * config.chunk:(c + 1) * config.chunk]
        clock = time.perf_counter()
        table = fragility.fragility_table(
            model, test.x[rows], test.y[rows], eps=config.eps, n_samples=config.n_samples,
            seed=chunk_seed(config.seed, c), eps_max=config.eps_max, tol=config.tol, steps=config.steps, restarts=config.restarts,
            targets=config.targets, rel_alpha=config.rel_alpha, form=config.form, sampler=config.sampler,
            pilot=config.pilot, stages=config.stages, n_groups=config.n_groups)
        seconds = time.perf_counter() - clock
        columns = {k: np.concatenate([columns[k], v]) if k in columns else np.asarray(v) for k, v in table.items()}
        record["chunks"].append({"chunk": c, "first": c * config.chunk, "n": len(rows),
                                 "seed": chunk_seed(config.seed, c), "seconds": seconds,
                                 "reliable": int(table["reliable"].sum()), "unbroken": int(table["unbroken"].sum())})
        record["summary"] = _summary(columns)
        last = c == n_chunks - 1
        if last:
            record["correlation"] = fragility.correlation_table(columns, n_boot=config.n_boot, seed=config.seed)
            if config.fab_images:
                k = config.fab_images
                record["cross_check"] = fragility.fab_cross_check(
                    model, test.x[index[:k]], test.y[index[:k]], columns["min_eps"][:k], eps_max=config.eps_max,
                    seed=config.seed)
        record["provenance"]["wall_seconds"] = wall_before + time.perf_counter() - session
        record["provenance"]["finished"] = results.now() if last else None
        record = json.loads(json.dumps(results._clean(record), allow_nan=False))
        validate_fragility(record, where=f"{config.name} chunk {c}")
        # The commit of this chunk: the checkpoint, then the copies for readers.
        results.save_checkpoint(files.ckpt, {"config_hash": digest, "record": json.dumps(record),
                                             "columns": {k: torch.from_numpy(np.ascontiguousarray(v))
                                                         for k, v in columns.items()}})
        _write_copies(files, record, columns, index)
        if progress:
            s = record["summary"]
            print(f"{config.name} chunk {c + 1}/{n_chunks}: {s['n_images']} images, reliable local ψ "
                  f"{s['reliable']}/{s['n_images']}, unbroken {s['unbroken']} ({seconds:.1f} s)", flush=True)
    return files.json


def _lags(files: store.RunFiles, record: dict, columns: dict) -> bool:
    """True unless the JSON is the checkpoint's record and the npz holds as many images."""
    try:
        if read_fragility(files.json) != record:
            return True
        with np.load(files.npz) as data:
            return len(data["min_eps"]) != len(columns["min_eps"])
    except (results.ResultsError, OSError, KeyError, ValueError):
        return True


def _write_copies(files: store.RunFiles, record: dict, columns: dict, index: torch.Tensor) -> None:
    """The reader's copies of a commit: the columns (with their indices), then the record."""
    results.write_npz(files.npz, {**columns, "index": index[:len(columns["min_eps"])].numpy()})
    results.write_json(files.json, record)
