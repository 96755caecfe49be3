"""Named experiments, the per-epoch measurement loop, and recorded results (Chapters 6–8).

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

import dataclasses
import functools
import os
import time
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import attacks, models, results, train, uncertainty
from .data import load_dataset, subset

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "book" / "results"
RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a run; stored in full in its results file.

    Defaults follow SPEC §4 (Adam 1e-3, batch 128, 50 epochs, PGD ε = 8/255, α = 2/255, 4 steps
    for the per-epoch curves of Fig. 2; PGD ε = 0.1, α = 0.025, 4 steps for the Fig. 1 snapshots).
    """

    name: str
    dataset: str
    model: str
    width: int = 0  # model width where the architecture has one (0: the model's default)
    augment: bool = False  # random crop (4-pixel reflection padding) and horizontal flip while training
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    train_size: int = 0  # 0: the whole split
    test_size: int = 0
    pgd_eps: float = 8 / 255
    pgd_alpha: float = 2 / 255
    pgd_steps: int = 4
    labels: tuple = (8,)  # labels whose ψ is measured; several → mean of class-wise aggregates
    mc_samples: int = 8192
    mc_sampler: str = "uniform"
    aggregate_form: str = "paper"
    snapshot_epochs: tuple = (1, 21, 41)  # Fig. 1 panels; the last epoch is always added
    snapshot_size: int = 2000
    snapshot_eps: float = 0.1
    snapshot_alpha: float = 0.025
    snapshot_steps: int = 4
    # The final model under a stronger attack (SPEC §4): PGD with `strong_steps` steps of size
    # 2.5·ε/steps and `strong_restarts` random starts (a sample counts as robust only if it survives
    # all of them), at every ε of `sweep_eps`, on the first `final_size` test images, in both spaces.
    sweep_eps: tuple = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    strong_steps: int = 20
    strong_restarts: int = 3
    final_size: int = 2000

    def as_dict(self) -> dict:
        return results._clean(dataclasses.asdict(self))


CONFIGS = {
    "mnist-cnn3": ExperimentConfig(
        name="mnist-cnn3", dataset="mnist", model="MnistCNN3", mc_samples=16384,
        sweep_eps=(0.0, 8 / 255, 0.05, 0.1, 0.15, 0.2, 0.3),
    ),
    "cifar-cnn4": ExperimentConfig(
        name="cifar-cnn4", dataset="cifar10", model="CifarCNN4", labels=tuple(range(10)), mc_samples=2048,
        snapshot_eps=8 / 255, snapshot_alpha=2 / 255,
    ),
    "cifar-resnet8": ExperimentConfig(
        name="cifar-resnet8", dataset="cifar10", model="ResNet8", width=16, augment=True,
        labels=tuple(range(10)), mc_samples=2048, snapshot_eps=8 / 255, snapshot_alpha=2 / 255,
    ),
}
FAST = dict(epochs=2, train_size=2000, test_size=500, mc_samples=512, snapshot_epochs=(1,), snapshot_size=200,
            strong_steps=5, strong_restarts=2, final_size=200)
MODELS = {"MnistCNN3": models.MnistCNN3, "CifarCNN4": models.CifarCNN4, "ResNet8": models.ResNet8}


def describe() -> str:
    """One line per named experiment (``python -m qnnlib list``)."""
    lines = []
    for name, config in CONFIGS.items():
        width = f" width {config.width}" if config.width else ""
        lines.append(f"{name:16s} {config.model}{width} on {config.dataset}, {config.epochs} epochs")
    return "\n".join(lines)


def _coerce(name: str, value, default):
    """Convert a CLI string override to the type of the default value."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            kind = float if any(isinstance(v, float) for v in default) else int
            return tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"override {name}={value!r} is not a valid {type(default).__name__}") from None
    return value


def make_config(name: str, *, fast: bool = False, epochs: int | None = None, **overrides) -> ExperimentConfig:
    """The named config, shrunk in fast mode, with ``epochs`` and other overrides applied."""
    if name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(CONFIGS)}")
    config = CONFIGS[name]
    changes = dict(FAST) if fast else {}
    known = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    for key, value in overrides.items():
        if key not in known or key == "name":
            raise ValueError(f"unknown override {key!r}; allowed: {sorted(set(known) - {'name'})}")
        changes[key] = _coerce(key, value, getattr(config, key))
    if epochs is not None:
        changes["epochs"] = _coerce("epochs", epochs, config.epochs)
    config = dataclasses.replace(config, **changes)
    _check_config(config)
    return config


def _check_config(c: ExperimentConfig) -> None:
    for f in dataclasses.fields(c):
        value, default = getattr(c, f.name), getattr(CONFIGS.get(c.name, c), f.name)
        if isinstance(default, bool) or isinstance(default, int):
            ok = type(value) is type(default)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{f.name} must be a {type(default).__name__}, got {value!r}")
    if c.epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {c.epochs}")
    if c.batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {c.batch_size}")
    if not c.lr > 0:
        raise ValueError(f"lr must be > 0, got {c.lr}")
    if c.train_size < 0 or c.test_size < 0 or c.snapshot_size < 0:
        raise ValueError("train_size, test_size and snapshot_size must be ≥ 0 (0 means the whole split)")
    if c.pgd_eps < 0 or c.pgd_alpha <= 0 or c.pgd_steps < 1:
        raise ValueError("PGD needs pgd_eps ≥ 0, pgd_alpha > 0 and pgd_steps ≥ 1")
    if c.mc_samples < 2:
        raise ValueError(f"mc_samples must be ≥ 2, got {c.mc_samples}")
    if c.aggregate_form not in ("paper", "rss"):
        raise ValueError(f"aggregate_form must be 'paper' or 'rss', got {c.aggregate_form!r}")
    if c.model not in MODELS:
        raise ValueError(f"model must be one of {sorted(MODELS)}, got {c.model!r}")
    if not c.labels or any(not 0 <= label < 10 for label in c.labels):
        raise ValueError(f"labels must be a non-empty tuple of classes in 0..9, got {c.labels}")
    if any(not 0 <= eps <= 1 for eps in c.sweep_eps) or c.strong_steps < 1 or c.strong_restarts < 1:
        raise ValueError("the final evaluation needs sweep_eps in [0, 1], strong_steps ≥ 1 and strong_restarts ≥ 1")


def build_model(config: ExperimentConfig) -> nn.Module:
    """The config's network, initialised from ``torch.manual_seed(config.seed)``."""
    torch.manual_seed(config.seed)
    cls = MODELS[config.model]
    return cls(width=config.width) if config.width else cls()


def _generator(config: ExperimentConfig, epoch: int, stream: int) -> torch.Generator:
    """Independent, reproducible random streams per (seed, epoch, purpose)."""
    return torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 101 + stream)


# ---------------------------------------------------------------------------------------------
# Feature space (SPEC §5)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class FeatureSpace:
    """Unit-normalised features u = f(x)/max_train f, on the coordinates that are ever non-zero.

    ``head`` maps u (N, F_active) to logits, so attacks and ψ live in the box [0, 1]^F_active.
    """

    scale: torch.Tensor  # (F,) max over the training set
    active: torch.Tensor  # (F,) bool: coordinates with scale > 0
    head: nn.Module

    @property
    def dropped(self) -> int:
        """Number of feature coordinates that are 0 on the whole training set."""
        return int((~self.active).sum())

    def normalise(self, features: torch.Tensor) -> torch.Tensor:
        """Features (N, F) → u (N, F_active) in [0, 1] (test values above the training max are clipped)."""
        return (features[:, self.active] / self.scale[self.active]).clamp(0.0, 1.0)


def feature_space(model: nn.Module, x_train: torch.Tensor, *, batch_size: int | None = None) -> FeatureSpace:
    """Build the unit feature box of ``model`` from the training images (SPEC §5)."""
    features = _features(model, x_train, batch_size=batch_size)
    scale = features.max(dim=0).values
    active = scale > 0
    linear = nn.Linear(int(active.sum()), model.fc.out_features)
    with torch.no_grad():
        # head(u) = W (u · scale) + b on the active coordinates: the same logits as the network.
        linear.weight.copy_(model.fc.weight[:, active] * scale[active])
        linear.bias.copy_(model.fc.bias)
    return FeatureSpace(scale=scale, active=active, head=linear.eval())


def _features(model, x, *, batch_size=None):
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    batch_size = batch_size or train.eval_batch_size(device, attack=False)
    try:
        with torch.no_grad():
            return torch.cat([model.features(train.channels_last(x[i:i + batch_size].to(device))).cpu()
                              for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------
# Per-epoch measurements
# ---------------------------------------------------------------------------------------------


def space_summary(net: nn.Module, input_shape: tuple, config: ExperimentConfig, generator) -> dict:
    """Δx, Δp (config's aggregate form) with standard errors and diagnostics, mean over labels."""
    per_label = []
    for label in config.labels:
        m = uncertainty.neural_moments(
            net, label, input_shape, n_samples=config.mc_samples, sampler=config.mc_sampler, generator=generator
        )
        dx, dp = m.aggregate(config.aggregate_form)
        dx_se, dp_se = m.aggregate_stderr(config.aggregate_form)
        summary = m.summary()
        per_label.append({
            "dx": float(dx), "dp": float(dp), "dx_stderr": float(dx_se), "dp_stderr": float(dp_se),
            "frac_below_half": summary["frac_below_half"], "min_product": summary["min_product"],
            "mean_boundary": summary["mean_boundary"], "frac_meeting_bound": summary["frac_meeting_bound"],
            "ess": float(m.ess),
        })
    mean = {key: float(np.mean([p[key] for p in per_label])) for key in per_label[0]}
    # Standard error of a mean of independent estimates.
    for key in ("dx_stderr", "dp_stderr"):
        mean[key] = float(np.sqrt(np.sum([p[key] ** 2 for p in per_label]))) / len(per_label)
    mean["min_product"] = float(min(p["min_product"] for p in per_label))
    mean.update(aggregate_form=config.aggregate_form, labels=list(config.labels), dims=int(np.prod(input_shape)))
    return mean


def evaluation_subset(total: int, n: int, config: ExperimentConfig) -> torch.Tensor:
    """The ``n`` test images of the snapshots and the final evaluation: a seeded random subset.

    Not the first ``n``: a test set stored class by class (the CIFAR-10 JPEG copy, and any
    ``subset`` of it) would give only the first classes. The same seed gives the same images in
    every run and on resumption.
    """
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 99_991)
    return torch.randperm(total, generator=generator)[:n].sort().values


def _snapshot(model, test, config: ExperimentConfig, epoch: int) -> dict:
    """t-SNE of clean and PGD-attacked test features, embedded together (Fig. 1)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    n = min(config.snapshot_size or len(test), len(test))
    index = evaluation_subset(len(test), n, config)
    x, y = test.x[index], test.y[index]
    attack = functools.partial(
        attacks.pgd, eps=config.snapshot_eps, alpha=config.snapshot_alpha, steps=config.snapshot_steps,
        generator=_generator(config, epoch, 7),
    )
    device = next(model.parameters()).device
    x_adv = torch.cat([attack(model, x[i:i + 500].to(device), y[i:i + 500].to(device)).cpu() for i in range(0, n, 500)])
    clean, adv = _features(model, x), _features(model, x_adv)
    with torch.no_grad():
        pred_clean = model.head(clean.to(device)).argmax(1).cpu()
        pred_adv = model.head(adv.to(device)).argmax(1).cpu()
    both = torch.cat([clean, adv]).numpy().astype(np.float64)
    reduced = PCA(n_components=min(50, both.shape[1], both.shape[0]), random_state=config.seed).fit_transform(both)
    perplexity = min(30.0, (2 * n - 1) / 3)
    embedding = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=config.seed).fit_transform(reduced)
    return {
        f"epoch{epoch}_embedding": embedding.astype(np.float32),
        f"epoch{epoch}_labels": y.numpy().astype(np.int8),
        f"epoch{epoch}_pred_clean": pred_clean.numpy().astype(np.int8),
        f"epoch{epoch}_pred_adv": pred_adv.numpy().astype(np.int8),
    }


def measure_epoch(model, train_set, test, config: ExperimentConfig, epoch: int) -> tuple[dict, dict, dict]:
    """Everything recorded after one epoch: (metrics, feature-space info, seconds per phase)."""
    seconds = {}
    clock = time.perf_counter()
    # One pass over the test set gives both the clean accuracy (head of the features is the
    # network's output) and the test points of the feature space.
    test_features = _features(model, test.x)
    with torch.no_grad():
        device = next(model.parameters()).device
        logits = model.head(test_features.to(device)).cpu()
    metrics = {"test_acc": float((logits.argmax(1) == test.y).double().mean())}
    seconds["eval_clean"] = time.perf_counter() - clock

    clock = time.perf_counter()
    attack = functools.partial(
        attacks.pgd, eps=config.pgd_eps, alpha=config.pgd_alpha, steps=config.pgd_steps,
        generator=_generator(config, epoch, 1),
    )
    metrics["robust_acc"] = train.robust_accuracy(model, test.x, test.y, attack)
    seconds["pgd_pixel"] = time.perf_counter() - clock

    clock = time.perf_counter()
    space = feature_space(model, train_set.x)
    u_test = space.normalise(test_features)
    feature_attack = functools.partial(
        attacks.pgd, eps=config.pgd_eps, alpha=config.pgd_alpha, steps=config.pgd_steps,
        generator=_generator(config, epoch, 2),
    )
    metrics["robust_acc_feature"] = train.robust_accuracy(space.head, u_test, test.y, feature_attack)
    seconds["pgd_feature"] = time.perf_counter() - clock

    was_training = model.training
    model.eval()
    try:
        clock = time.perf_counter()
        metrics["pixel"] = space_summary(model, tuple(train_set.x.shape[1:]), config, _generator(config, epoch, 3))
        seconds["moments_pixel"] = time.perf_counter() - clock
        clock = time.perf_counter()
        metrics["feature"] = space_summary(space.head, (int(space.active.sum()),), config, _generator(config, epoch, 4))
        metrics["feature"]["dropped"] = space.dropped
        seconds["moments_feature"] = time.perf_counter() - clock
    finally:
        model.train(was_training)
    return metrics, space, seconds


def strong_robust_accuracy(model, x, y, *, eps: float, steps: int, restarts: int, generator,
                           clamp=(0.0, 1.0), batch_size: int | None = None) -> float:
    """Accuracy under PGD-``steps`` (α = 2.5·ε/steps) with ``restarts`` random starts: a sample
    counts as robust only if no restart fools the model (the worst case per sample)."""
    if eps == 0:
        return train.accuracy(model, x, y)
    device = next(model.parameters()).device
    batch_size = batch_size or train.eval_batch_size(device, attack=True)
    correct = 0
    for first in range(0, len(x), batch_size):
        xb = train.channels_last(x[first:first + batch_size].to(device))
        yb = y[first:first + batch_size].to(device)
        survived = torch.ones(len(xb), dtype=torch.bool, device=device)
        for _ in range(restarts):
            adv = attacks.pgd(model, xb, yb, eps=eps, alpha=2.5 * eps / steps, steps=steps,
                              generator=generator, clamp=clamp)
            with torch.no_grad():
                survived &= model(adv).argmax(1) == yb
        correct += int(survived.sum())
    return correct / len(x)


def final_evaluation(model, train_set, test, config: ExperimentConfig) -> dict:
    """The final model under the stronger attack over the ε sweep, in pixel and feature space."""
    n = min(config.final_size or len(test), len(test))
    index = evaluation_subset(len(test), n, config)
    x, y = test.x[index], test.y[index]
    was_training = model.training
    model.eval()
    try:
        space = feature_space(model, train_set.x)
        u = space.normalise(_features(model, x))
        sweep = {"eps": list(config.sweep_eps), "pixel": [], "feature": []}
        for i, eps in enumerate(config.sweep_eps):
            kw = dict(eps=eps, steps=config.strong_steps, restarts=config.strong_restarts)
            sweep["pixel"].append(strong_robust_accuracy(model, x, y, generator=_generator(config, 10_000, 2 * i), **kw))
            sweep["feature"].append(
                strong_robust_accuracy(space.head, u, y, generator=_generator(config, 10_000, 2 * i + 1), **kw)
            )
    finally:
        model.train(was_training)
    return {"attack": f"PGD-{config.strong_steps}, alpha = 2.5 eps/steps, {config.strong_restarts} restarts",
            "n_test": n, "test_subset": "seeded random subset (evaluation_subset)",
            "classes": int(torch.unique(y).numel()), "sweep": sweep}


def config_of(record: dict) -> ExperimentConfig:
    """The :class:`ExperimentConfig` stored in a results record."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    values = {k: tuple(v) if isinstance(fields[k].default, tuple) else v
              for k, v in record["config"].items() if k in fields}
    return ExperimentConfig(**values)


def redo_final(results_json: Path | str, *, device=None) -> Path:
    """Recompute the final evaluation of a finished run from its final weights, with this qnnlib.

    For records made before the final evaluation used :func:`evaluation_subset` (their sweep
    used the first test images; on a class-sorted test set, only the first classes). The per-epoch
    record is untouched; ``provenance.final_redone`` says when and with which commit.
    """
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
    from .data import cache_dir

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


def export_weights(ckpt_path: Path | str) -> Path:
    """Write the model weights of a checkpoint (without the optimizer state) beside it, atomically."""
    ckpt_path = Path(ckpt_path)
    state = results.load_checkpoint(ckpt_path)
    weights = {k: v.contiguous() for k, v in state["model"].items()}
    out = weights_path(ckpt_path.with_name(ckpt_path.name.removesuffix(".ckpt.pt") + ".json"))
    results._atomic_write(out, lambda f: torch.save({"epoch": int(state["epoch"]), "model": weights}, f))
    return out


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
