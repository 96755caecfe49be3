"""Named experiment configurations and their checks (Chapters 6–8).

An :class:`ExperimentConfig` holds every setting of a run and is stored in full in its results
file; ``CONFIGS`` are the book's three named runs, ``FAST`` the changes of fast mode.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import models, results

ROOT = Path(__file__).resolve().parents[2]
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

def config_of(record: dict) -> ExperimentConfig:
    """The :class:`ExperimentConfig` stored in a results record."""
    fields = {f.name: f for f in dataclasses.fields(ExperimentConfig)}
    values = {k: tuple(v) if isinstance(fields[k].default, tuple) else v
              for k, v in record["config"].items() if k in fields}
    return ExperimentConfig(**values)

