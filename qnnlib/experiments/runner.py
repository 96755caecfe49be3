"""Running (and resuming) an experiment: epochs, checkpoints, results files (Chapters 6–8).

An experiment trains one of the book's networks for ``epochs`` epochs and, after every epoch,
measures what the paper plots (SPEC §6): clean test accuracy, PGD robust accuracy in pixel and in
feature space, and Δx, Δp (with standard errors and the SPEC §2 diagnostics) in both spaces. At the
configured snapshot epochs it also embeds test features (clean and attacked) with t-SNE for Fig. 1.

Results go to ``OUT/NAME.json`` (``NAME-fast.json`` in fast mode) after every epoch, with a
checkpoint beside it, both written atomically: a run killed at any point and started again resumes
from the last finished epoch and, on a CPU with the same seed, ends with the same numbers as an
uninterrupted run, because every random draw of epoch e comes from a generator seeded by
(seed, e). A results file made with another config is never reused: resuming it is an error.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .. import results, train
from ..data import load_dataset, subset
from .configs import RUNS_DIR, ExperimentConfig, build_model, config_of, make_config
from .measure import _generator, _snapshot, final_evaluation, measure_epoch


def redo_final(results_json: Path | str, *, device=None) -> Path:
    """Recompute the final evaluation of a finished run from its final weights, with this qnnlib.

    For records made before the final evaluation used :func:`evaluation_subset` (their sweep
    used the first test images; on a class-sorted test set, only the first classes). The per-epoch
    record is untouched; ``provenance.final_redone`` says when and with which commit.
    """
    from .recorded import _recorded, final_model  # recorded.py imports this module

    path = Path(results_json)
    record = results.read_results(path)
    config = config_of(record)
    if len(record["epochs"]) != config.epochs:
        raise results.ResultsError(f"{path} is unfinished ({len(record['epochs'])} of {config.epochs} epochs)")
    device = _device(device)
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


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def _device(device) -> torch.device:
    """The device asked for, else CUDA when available, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _paths(config: ExperimentConfig, out: Path, fast: bool) -> tuple[Path, Path, Path]:
    stem = config.name + ("-fast" if fast else "")
    return out / f"{stem}.json", out / f"{stem}.npz", out / f"{stem}.ckpt.pt"


def _datasets(config: ExperimentConfig):
    train_set = load_dataset(config.dataset, "train")
    test = load_dataset(config.dataset, "test")
    if config.train_size:
        train_set = subset(train_set, min(config.train_size, len(train_set)), seed=config.seed)
    if config.test_size:
        test = subset(test, min(config.test_size, len(test)), seed=config.seed + 1)
    return train_set, test


def run(name: str, *, fast: bool = False, epochs: int | None = None, device=None, out=None,
        resume: bool = True, progress: bool = True, **overrides) -> Path:
    """Run (or resume) the experiment ``name``; return the path of its results JSON.

    Args:
        name: a key of ``CONFIGS`` (``python -m qnnlib list``).
        fast: the tiny configuration of fast mode (a few thousand images, 2 epochs).
        epochs: override the number of epochs.
        device: ``"cpu"``, ``"cuda"``…; default CUDA when available.
        out: results folder (default ``runs/``).
        resume: continue from the last finished epoch of a matching results file; with False,
            start again and overwrite.
        **overrides: any other :class:`ExperimentConfig` field (strings are converted).
    """
    config = make_config(name, fast=fast, epochs=epochs, **overrides)
    device = _device(device)
    out = Path(out) if out is not None else RUNS_DIR
    json_path, npz_path, ckpt_path = _paths(config, out, fast)
    train_set, test = _datasets(config)

    model = build_model(config).to(device)
    if train_set.x.ndim == 4:
        model.to(memory_format=torch.channels_last)  # faster convolutions, same weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    record, snapshots, start_epoch = None, {}, 1
    if resume and json_path.exists():
        record = results.read_results(json_path)
        if record["config"] != config.as_dict():
            raise results.ResultsError(
                f"{json_path} was made with another config; use --no-resume to overwrite it or --out for a new folder"
            )
        if ckpt_path.exists():
            state = results.load_checkpoint(ckpt_path)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            start_epoch = int(state["epoch"]) + 1
        else:
            start_epoch = 1
        # The JSON may be one epoch ahead of the checkpoint if a kill fell between the two writes;
        # that epoch is recomputed (identically, since its random streams are seeded).
        record["epochs"] = record["epochs"][: start_epoch - 1]
        if start_epoch <= config.epochs:
            # A run may be finished over several sessions (or machines): each resumption is recorded.
            here = results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now())
            record["provenance"].setdefault("resumed", []).append({
                "epoch": start_epoch, "at": here["started"], "git_commit": here["git_commit"],
                "device": here["device"], "torch_version": here["torch_version"],
            })
        if npz_path.exists():
            with np.load(npz_path) as data:
                snapshots = {k: data[k] for k in data.files if int(k.split("_")[0][5:]) < start_epoch}
    if record is None:
        record = {
            "schema": results.SCHEMA_VERSION,
            "experiment": config.name + (" (fast)" if fast else ""),
            "config": config.as_dict(),
            "provenance": results.provenance(device=device, dataset=train_set, seed=config.seed, started=results.now()),
            "epochs": [],
        }
    snapshot_epochs = set(config.snapshot_epochs) | {config.epochs}
    wall_before = float(record["provenance"]["wall_seconds"])
    session_start = time.perf_counter()

    for epoch in range(start_epoch, config.epochs + 1):
        clock = time.perf_counter()
        stats = train.train_epoch(
            model, optimizer, train_set.x, train_set.y, batch_size=config.batch_size,
            generator=_generator(config, epoch, 0), device=device, augment=config.augment, progress=progress,
            desc=f"{config.name} epoch {epoch}/{config.epochs}",
        )
        seconds = {"train": time.perf_counter() - clock}
        metrics, _, phase_seconds = measure_epoch(model, train_set, test, config, epoch)
        seconds.update(phase_seconds)
        if epoch in snapshot_epochs:
            clock = time.perf_counter()
            snapshots.update(_snapshot(model, test, config, epoch))
            seconds["snapshot"] = time.perf_counter() - clock
            results.write_npz(npz_path, snapshots)
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
        results.write_json(json_path, record)
        results.save_checkpoint(ckpt_path, {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict()})
        if epoch == config.epochs:
            export_weights(ckpt_path)
        if progress:
            e = record["epochs"][-1]
            print(f"epoch {epoch}: loss {e['train_loss']:.4f} test {e['test_acc']:.4f} robust {e['robust_acc']:.4f} "
                  f"feature-robust {e['robust_acc_feature']:.4f} Δx {e['pixel']['dx']:.3f} Δp {e['pixel']['dp']:.3f} "
                  f"({seconds['total']:.1f} s)", flush=True)
    return json_path

def export_weights(ckpt_path: Path | str) -> Path:
    """Write the model weights of a checkpoint (without the optimizer state) beside it, atomically."""
    from .recorded import weights_path  # recorded.py imports this module

    ckpt_path = Path(ckpt_path)
    state = results.load_checkpoint(ckpt_path)
    weights = {k: v.contiguous() for k, v in state["model"].items()}
    out = weights_path(ckpt_path.with_name(ckpt_path.name.removesuffix(".ckpt.pt") + ".json"))
    results._atomic_write(out, lambda f: torch.save({"epoch": int(state["epoch"]), "model": weights}, f))
    return out

