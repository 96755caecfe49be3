"""Running (and resuming) an experiment: epochs, checkpoints, results files (Chapters 6–8).

An experiment trains one of the book's networks for ``epochs`` epochs and, after every epoch,
measures what the paper plots (:mod:`.measure`). Results go to ``OUT/NAME.json``
(``NAME-fast.json`` in fast mode) after every epoch, with a checkpoint beside it.

Everything that can be checked before the first epoch is: the config (every key and range, see
:func:`.configs.configure`), the device, the results folder, the lock, and on resumption the
checkpoint's config and the dataset identity. Then a run killed at any point and started again
resumes after its last committed epoch and, on a CPU with the same seed, ends with the same
numbers as an uninterrupted run, because every random draw of epoch e comes from a generator
seeded by (seed, e). The files, the lock, the write order and the invariants that make this so
are in :mod:`.store`. A results file made with another config or another dataset is never
reused: resuming it is an error (``--no-resume`` starts again).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import results, train
from ..data import load_dataset, subset
from . import store
from .configs import RUNS_DIR, ExperimentConfig, _check_config, build_model, config_of, configure
from .measure import _generator, _snapshot, feature_space, final_evaluation, measure_epoch


def redo_final(results_json: Path | str, *, device=None) -> Path:
    """Recompute the final evaluation of a finished run from its final weights, with this qnnlib.

    For records made before the final evaluation used :func:`evaluation_subset` (their sweep
    used the first test images; on a class-sorted test set, only the first classes). The per-epoch
    record is untouched; ``provenance.final_redone`` says when and with which commit.
    """
    path = Path(results_json)
    device = _device(device)
    record = results.read_results(path)
    try:
        config = config_of(record)
        _check_config(config)
    except (TypeError, ValueError) as error:
        raise results.ResultsError(f"{path}: its config is not a valid qnnlib config ({error})") from None
    if len(record["epochs"]) != config.epochs:
        raise results.ResultsError(f"{path} is unfinished ({len(record['epochs'])} of {config.epochs} epochs)")
    with store.locked(store.RunFiles.of(path)):
        return _redo_final(path, record, config, device)


def _redo_final(path: Path, record: dict, config: ExperimentConfig, device) -> Path:
    from .recorded import _recorded, final_model  # recorded.py imports this module

    model = final_model(_recorded(path)).to(device)
    train_set, test = _datasets(config)
    clock = time.perf_counter()
    final = final_evaluation(model, train_set, test, config)
    final["seconds"] = time.perf_counter() - clock
    record["final"] = final
    here = results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now())
    record["provenance"]["final_redone"] = {"at": here["started"], "git_commit": here["git_commit"],
                                            "device": here["device"], "seconds": final["seconds"]}
    results.write_json(path, record)
    return path


def add_feature_scale(results_json: Path | str, *, device=None) -> Path:
    """Store the final network's feature box in a finished run recorded without it (``final["feature_scale"]``).

    The scale is the per-coordinate maximum of the final network's features over the run's
    training images: a function of the final weights and the data, recomputed here, so that pages
    rebuild the box with :func:`feature_space` (``scale=``) instead of passing the training set
    through the network again. Nothing else in the record changes; ``provenance.feature_scale_added``
    says when, with which commit and on which data. A record that has the scale is left as it is.
    """
    path = Path(results_json)
    device = _device(device)
    record = results.read_results(path)
    if "final" not in record:
        raise results.ResultsError(f"{path} is unfinished: it has no final evaluation to add the feature box to")
    if "feature_scale" in record["final"]:
        return path
    config = config_of(record)
    with store.locked(store.RunFiles.of(path)):
        from .recorded import _recorded, final_model  # recorded.py imports this module

        model = final_model(_recorded(path)).to(device)
        train_set, _ = _datasets(config)
        clock = time.perf_counter()
        scale = feature_space(model, train_set.x).scale  # _features evaluates in eval mode
        here = results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now())
        record["final"]["feature_scale"] = scale.tolist()
        record["provenance"]["feature_scale_added"] = {
            "at": here["started"], "git_commit": here["git_commit"], "device": here["device"],
            "dataset": here["dataset"], "seconds": time.perf_counter() - clock}
        results.write_json(path, record)
    return path


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _device(device) -> torch.device:
    """The device asked for (checked: cpu, cuda, cuda:N that exists), else CUDA when available, else the CPU."""
    if device is None or device == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if chosen.type == "cpu":
        return chosen
    if chosen.type != "cuda":
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine (use --device cpu)")
    if chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return chosen


def _datasets(config: ExperimentConfig):
    train_set = load_dataset(config.dataset, "train")
    test = load_dataset(config.dataset, "test")
    if config.train_size:
        train_set = subset(train_set, min(config.train_size, len(train_set)), seed=config.seed)
    if config.test_size:
        test = subset(test, min(config.test_size, len(test)), seed=config.seed + 1)
    return train_set, test


def run(name: str, /, *, fast: bool = False, epochs: int | None = None, device=None, out=None,
        resume: bool = True, progress: bool = True, overrides: dict | None = None, **more) -> Path:
    """Run (or resume) the experiment ``name``; return the path of its results JSON.

    Args:
        name: a key of ``CONFIGS`` (``python -m qnnlib list``).
        fast: the tiny configuration of fast mode (a few thousand images, 2 epochs).
        epochs: override the number of epochs.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``; default CUDA when available.
        out: results folder (default ``runs/``); created if absent.
        resume: continue after the last committed epoch of a matching run in ``out``; with False,
            delete its files (checkpoint first) and start again.
        overrides, **more: any other :class:`ExperimentConfig` field (strings are converted), as a
            dict (the CLI's ``--set``) or as keywords.

    Raises ``ValueError`` (bad config, device or folder; ``store.RunLocked`` when another
    process writes the same run) or ``results.ResultsError`` (a run there that cannot be
    resumed), all before the first epoch.
    """
    overrides = dict(overrides or {})
    for key, value in more.items():
        if key in overrides:
            raise ValueError(f"override {key} given twice")
        overrides[key] = value
    if epochs is not None:
        if "epochs" in overrides:
            raise ValueError("epochs given twice (as epochs= and as an override)")
        overrides["epochs"] = epochs
    config = configure(name, fast=fast, overrides=overrides)
    device = _device(device)
    files = store.RunFiles(store.prepare_folder(RUNS_DIR if out is None else out),
                           config.name + ("-fast" if fast else ""))
    with store.locked(files):
        store.clean_temporary(files)
        return _run(config, fast, device, files, resume, progress)


def _resume_state(files: store.RunFiles, config: ExperimentConfig, experiment: str, train_set):
    """``(record, checkpoint)`` to continue from, or ``(None, None)`` to start afresh (store invariants 3–4)."""
    want = store.config_hash(experiment, config.as_dict())
    written = results.read_results(files.json) if files.json.exists() else None
    state = results.load_checkpoint(files.ckpt) if files.ckpt.exists() else None
    another = "was made with another config; use --no-resume to overwrite it or --out for a new folder"
    if state is not None and "record" in state:
        if state.get("config_hash") != want:
            raise results.ResultsError(f"{files.ckpt} {another}")
        try:
            record = json.loads(state["record"])
        except (TypeError, ValueError):
            raise results.ResultsError(f"checkpoint {files.ckpt} is corrupt (its record is not JSON)") from None
        results.validate(record, where=str(files.ckpt))
        if len(record["epochs"]) != int(state["epoch"]):
            raise results.ResultsError(f"checkpoint {files.ckpt} is corrupt (epoch {state['epoch']}, "
                                       f"{len(record['epochs'])} epoch records)")
    elif written is not None:
        if written["config"] != config.as_dict() or written["experiment"] != experiment:
            raise results.ResultsError(f"{files.json} {another}")
        record = written
        if state is not None:  # a checkpoint of an older qnnlib: epoch, model, optimizer only
            done = int(state["epoch"])
            if len(record["epochs"]) < done:
                raise results.ResultsError(f"{files.ckpt} is ahead of {files.json}; use --no-resume to start again")
            if len(record["epochs"]) > done:  # that older qnnlib wrote the JSON first
                record["epochs"] = record["epochs"][:done]
                record.pop("final", None)
        elif "final" not in record:
            return None, None  # a JSON without its checkpoint (invariant 5): start afresh
    else:
        return None, None
    if record["schema"] != results.SCHEMA_VERSION and len(record["epochs"]) < config.epochs:
        raise results.ResultsError(
            f"{files.json} holds results schema {record['schema']} (an older qnnlib); its epochs cannot be "
            f"continued with schema {results.SCHEMA_VERSION} measurements: use --no-resume or another --out")
    if int(record["provenance"]["seed"]) != config.seed or record["config"]["epochs"] != config.epochs:
        raise results.ResultsError(f"{files.json} {another}")
    made_from = record["provenance"]["dataset"]["identity"]
    if made_from != train_set.identity:
        raise results.ResultsError(
            f"{files.json} was made from {made_from}, but the data found now is {train_set.identity} "
            f"({train_set.source}); point QNNLIB_DATA at the original data, or use --no-resume or another --out")
    return record, state


def _run(config: ExperimentConfig, fast: bool, device, files: store.RunFiles, resume: bool, progress: bool) -> Path:
    train_set, test = _datasets(config)
    experiment = config.name + (" (fast)" if fast else "")
    digest = store.config_hash(experiment, config.as_dict())
    if resume:
        record, state = _resume_state(files, config, experiment, train_set)
    else:
        store.discard(files)
        record, state = None, None

    model = build_model(config).to(device)
    if train_set.x.ndim == 4:
        model.to(memory_format=torch.channels_last)  # faster convolutions, same weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    snapshots = {}
    if record is None:
        record = {
            "schema": results.SCHEMA_VERSION,
            "experiment": experiment,
            "config": config.as_dict(),
            "provenance": results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now()),
            "epochs": [],
        }
    start_epoch = len(record["epochs"]) + 1
    if start_epoch > config.epochs:  # finished: bring the JSON and the weights up to its checkpoint
        if state is not None and (not files.json.exists() or _lags(results.read_results(files.json), record)):
            results.write_json(files.json, record)
        if state is not None and not _weights_current(files, digest):
            export_weights(files.ckpt)
        return files.json
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        # A run may be finished over several sessions (or machines): each resumption is recorded.
        here = results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now())
        record["provenance"].setdefault("resumed", []).append({
            "epoch": start_epoch, "at": here["started"], "git_commit": here["git_commit"],
            "device": here["device"], "torch_version": here["torch_version"],
        })
        if files.npz.exists():  # snapshot arrays of committed epochs only (invariant 3)
            with np.load(files.npz) as data:
                snapshots = {k: data[k] for k in data.files if int(k.split("_")[0][5:]) < start_epoch}
    snapshot_epochs = set(config.snapshot_epochs) | {config.epochs}
    wall_before = float(record["provenance"]["wall_seconds"])
    session_start = time.perf_counter()

    for epoch in range(start_epoch, config.epochs + 1):
        clock = time.perf_counter()
        stats = train.train_epoch(
            model, optimizer, train_set.x, train_set.y, batch_size=config.batch_size,
            generator=_generator(config, epoch, 0), device=device, augment=config.augment, progress=progress,
            desc=f"{config.name} epoch {epoch}/{config.epochs}",
            adv_eps=config.adv_eps, adv_alpha=config.adv_alpha, adv_steps=config.adv_steps,
        )
        seconds = {"train": time.perf_counter() - clock}
        metrics, _, phase_seconds = measure_epoch(model, train_set, test, config, epoch)
        seconds.update(phase_seconds)
        if epoch in snapshot_epochs:
            clock = time.perf_counter()
            snapshots.update(_snapshot(model, test, config, epoch))
            seconds["snapshot"] = time.perf_counter() - clock
            results.write_npz(files.npz, snapshots)
        seconds["total"] = sum(seconds.values())
        record["epochs"].append({
            "epoch": epoch, "train_loss": stats["train_loss"], "train_acc": stats["train_acc"], **metrics,
            "seconds": seconds,
        })
        if epoch == config.epochs:
            clock = time.perf_counter()
            record["final"] = final_evaluation(model, train_set, test, config)
            record["final"]["seconds"] = time.perf_counter() - clock
        record["provenance"]["wall_seconds"] = wall_before + time.perf_counter() - session_start
        record["provenance"]["finished"] = results.now() if epoch == config.epochs else None
        record = json.loads(json.dumps(results._clean(record), allow_nan=False))  # what a reader will see
        results.validate(record, where=f"{config.name} epoch {epoch}")  # e.g. a NaN loss: stop, say so
        # The commit of this epoch (store invariant 3): the checkpoint, then the JSON, then the weights.
        results.save_checkpoint(files.ckpt, {
            "epoch": epoch, "config_hash": digest, "record": json.dumps(record),
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        })
        results.write_json(files.json, record)
        if epoch == config.epochs:
            export_weights(files.ckpt)
        if progress:
            e = record["epochs"][-1]
            print(f"epoch {epoch}: loss {e['train_loss']:.4f} test {e['test_acc']:.4f} robust {e['robust_acc']:.4f} "
                  f"feature-robust {e['robust_acc_feature']:.4f} Δx {e['pixel']['dx']:.3f} Δp {e['pixel']['dp']:.3f} "
                  f"({seconds['total']:.1f} s)", flush=True)
    return files.json


def _lags(written: dict, record: dict) -> bool:
    """True if the JSON on disk is behind the checkpoint's record (a kill fell between the two writes)."""
    return len(written["epochs"]) != len(record["epochs"]) or ("final" in written) != ("final" in record)


def _weights_current(files: store.RunFiles, digest: str) -> bool:
    if not files.weights.exists():
        return False
    try:
        state = results.load_checkpoint(files.weights)
    except results.ResultsError:
        return False
    return state.get("config_hash", digest) == digest


def export_weights(ckpt_path: Path | str) -> Path:
    """Write the model weights of a checkpoint (without the optimizer state) beside it, atomically."""
    from .recorded import weights_path  # recorded.py imports this module

    ckpt_path = Path(ckpt_path)
    state = results.load_checkpoint(ckpt_path)
    weights = {k: v.contiguous() for k, v in state["model"].items()}
    out = weights_path(ckpt_path.with_name(ckpt_path.name.removesuffix(".ckpt.pt") + ".json"))
    saved = {"epoch": int(state["epoch"]), "model": weights}
    if "config_hash" in state:
        saved["config_hash"] = state["config_hash"]
    results._atomic_write(out, lambda f: torch.save(saved, f))
    return out

