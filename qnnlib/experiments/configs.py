"""Named experiment configurations and their checks (Chapters 6–8).

An :class:`ExperimentConfig` holds every setting of a run and is stored in full in its results
file; ``CONFIGS`` are the book's three named runs, ``FAST`` the changes of fast mode.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import models, results, uncertainty

ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = ROOT / "book" / "results"
RUNS_DIR = Path("runs")
LOCAL_SAMPLES = 1024  # points per image of the per-epoch local ψ (mnist-cnn3-at)

@dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a run; stored in full in its results file.

    Defaults follow the paper's experiments (Chapter 6): Adam 1e-3, batch 128, 50 epochs, PGD
    ε = 8/255, α = 2/255, 4 steps for the per-epoch curves of Fig. 2; PGD ε = 0.1, α = 0.025,
    4 steps for the Fig. 1 snapshots.
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
    # PGD adversarial training (Madry et al., 2018; SPEC §8): every training batch is
    # replaced by PGD(ε = adv_eps, α = adv_alpha, adv_steps steps, random start). adv_eps = 0 is
    # natural training (then adv_alpha and adv_steps must stay 0).
    adv_eps: float = 0.0
    adv_alpha: float = 0.0
    adv_steps: int = 0
    # The local wave function after every epoch (Chapter 10): ψ on the L∞ ball of radius local_eps
    # around each of local_images test images (a seeded set, the same every epoch; true labels),
    # local_samples uniform points each. local_images = 0: not measured (then the other two stay 0).
    local_images: int = 0
    local_eps: float = 0.0
    local_samples: int = 0

    def as_dict(self) -> dict:
        """Every setting as plain JSON values — except the fields of ``ADDED_FIELDS`` at their default.

        The book reuses a recorded run only when ``record["config"] == make_config(name).as_dict()``
        (and the run's hash is of this dict), so a field added after runs were recorded must not
        appear in the dict of configs that leave it off: the files recorded before it existed keep
        matching, and ``config_of`` restores the default for them.
        """
        values = results._clean(dataclasses.asdict(self))
        for key, default in ADDED_FIELDS.items():
            if values[key] == default:
                del values[key]
        return values


# Fields added after the first runs were recorded, with their "off" defaults (see ``as_dict``).
ADDED_FIELDS = {"adv_eps": 0.0, "adv_alpha": 0.0, "adv_steps": 0, "local_images": 0, "local_eps": 0.0, "local_samples": 0}


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
# Chapter 6's spread across seeds: the same run from two more seeds (SPEC §7: a trend needs ≥ 3).
for _seed in (1, 2):
    CONFIGS[f"mnist-cnn3-seed{_seed}"] = dataclasses.replace(
        CONFIGS["mnist-cnn3"], name=f"mnist-cnn3-seed{_seed}", seed=_seed)
# Chapter 10's intervention: mnist-cnn3 trained adversarially with PGD at the paper's Fig. 1 radius
# ε = 0.1 (SPEC §8), α = 0.025 = ε/4, 7 steps: α·steps = 1.75ε lets every start reach any corner of the ball
# (Madry et al. used 40 steps of 0.01 at ε = 0.3 on MNIST, α·steps = 1.33ε).
# Its local ψ is followed over training on 64 fixed test images at that radius.
CONFIGS["mnist-cnn3-at"] = dataclasses.replace(
    CONFIGS["mnist-cnn3"], name="mnist-cnn3-at", adv_eps=0.1, adv_alpha=0.025, adv_steps=7,
    local_images=64, local_eps=0.1, local_samples=LOCAL_SAMPLES)
FAST = dict(epochs=2, train_size=2000, test_size=500, mc_samples=512, snapshot_epochs=(1,), snapshot_size=200,
            strong_steps=5, strong_restarts=2, final_size=200)
FAST_LOCAL = dict(local_images=8, local_samples=128)  # fast mode of a config that measures the local ψ
MODELS = {"MnistCNN3": models.MnistCNN3, "CifarCNN4": models.CifarCNN4, "ResNet8": models.ResNet8}


def describe() -> str:
    """One line per named experiment (``python -m qnnlib list``)."""
    lines = []
    for name, config in CONFIGS.items():
        width = f" width {config.width}" if config.width else ""
        seed = f", seed {config.seed}" if config.seed else ""
        lines.append(f"{name:16s} {config.model}{width} on {config.dataset}, {config.epochs} epochs{seed}")
    return "\n".join(lines)


def _coerce(name: str, value, default):
    """Convert a CLI string override to the type of the default value."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            if value.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.strip().lower() in ("true", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, tuple):
            kind = float if any(isinstance(v, float) for v in default) or name == "sweep_eps" else int
            return tuple(kind(v) for v in value.split(",") if v.strip())
    except ValueError:
        kind = "true/false" if isinstance(default, bool) else (
            "comma-separated list" if isinstance(default, tuple) else type(default).__name__)
        raise ValueError(f"override {name}={value!r} is not a valid {kind}") from None
    return value


# The datasets each network is built for (its input shape and its normalisation constants).
MODEL_DATASETS = {"MnistCNN3": "mnist", "CifarCNN4": "cifar10", "ResNet8": "cifar10"}
MAX_SEED = 2**31 - 1


def _finite(v) -> bool:
    return math.isfinite(v)


def _rules(model: str) -> dict:
    """``{field: (allowed range in words, check(value, config) -> bool)}`` for a network ``model``.

    Every field of :class:`ExperimentConfig` except ``name`` has a rule; ``width`` depends on the
    network (MnistCNN3 has fixed channels, so only its default 0 is allowed).
    """
    def ints(lo, hi=None):
        return lambda v, c: lo <= v and (hi is None or v <= hi)

    def unit(low_open=False):
        return lambda v, c: _finite(v) and (0 < v if low_open else 0 <= v) and v <= 1

    dataset = MODEL_DATASETS.get(model)
    return {
        "dataset": (f"{dataset} (the dataset of {model})" if dataset else "the model's dataset",
                    lambda v, c: v == MODEL_DATASETS.get(c.model)),
        "model": ("|".join(MODELS), lambda v, c: v in MODELS),
        "width": (("0 (MnistCNN3 has fixed channels, no width)", lambda v, c: v == 0) if model == "MnistCNN3"
                  else ("0..1024 (0: the network's default)", ints(0, 1024))),
        "augment": ("true|false", lambda v, c: True),
        "epochs": ("1..10000", ints(1, 10_000)),
        "batch_size": ("1..65536", ints(1, 65_536)),
        "lr": ("> 0, finite", lambda v, c: _finite(v) and v > 0),
        "seed": (f"0..{MAX_SEED}", ints(0, MAX_SEED)),
        "train_size": ("≥ 0 (0: the whole split)", ints(0)),
        "test_size": ("≥ 0 (0: the whole split)", ints(0)),
        "pgd_eps": ("[0, 1]", unit()),
        "pgd_alpha": ("(0, 1]", unit(low_open=True)),
        "pgd_steps": ("1..10000", ints(1, 10_000)),
        "labels": ("distinct classes in 0..9, at least one",
                   lambda v, c: len(v) > 0 and len(set(v)) == len(v) and all(0 <= x <= 9 for x in v)),
        "mc_samples": ("2..1000000", ints(2, 1_000_000)),
        "mc_sampler": ("|".join(uncertainty.SAMPLERS), lambda v, c: v in uncertainty.SAMPLERS),
        "aggregate_form": ("paper|rss", lambda v, c: v in ("paper", "rss")),
        "snapshot_epochs": ("epochs in 1..epochs (the last epoch is always added)",
                            lambda v, c: all(1 <= e <= c.epochs for e in v)),
        "snapshot_size": ("≥ 0 (0: the whole test split)", ints(0)),
        "snapshot_eps": ("[0, 1]", unit()),
        "snapshot_alpha": ("(0, 1]", unit(low_open=True)),
        "snapshot_steps": ("1..10000", ints(1, 10_000)),
        "sweep_eps": ("values in [0, 1], at least one", lambda v, c: len(v) > 0 and all(_finite(e) and 0 <= e <= 1 for e in v)),
        "strong_steps": ("1..10000", ints(1, 10_000)),
        "strong_restarts": ("1..100", ints(1, 100)),
        "final_size": ("≥ 0 (0: the whole test split)", ints(0)),
        "adv_eps": ("[0, 1] (0: natural training)", unit()),
        "adv_alpha": ("(0, 1] with adv_eps > 0, else 0", lambda v, c: _finite(v) and (0 < v <= 1 if c.adv_eps > 0 else v == 0)),
        "adv_steps": ("1..10000 with adv_eps > 0, else 0", lambda v, c: 1 <= v <= 10_000 if c.adv_eps > 0 else v == 0),
        "local_images": ("0..10000 (0: no local ψ)", ints(0, 10_000)),
        "local_eps": ("(0, 1] with local_images > 0, else 0",
                      lambda v, c: _finite(v) and (0 < v <= 1 if c.local_images > 0 else v == 0)),
        "local_samples": ("2..1000000 with local_images > 0, else 0",
                          lambda v, c: 2 <= v <= 1_000_000 if c.local_images > 0 else v == 0),
    }


def allowed(model: str) -> str:
    """The settable keys of a run of network ``model`` and their ranges, on one line."""
    return "; ".join(f"{key}: {words}" for key, (words, _) in _rules(model).items())


def _refuse(key: str, problem: str, config) -> ValueError:
    return ValueError(f"{key}: {problem}. Allowed for {config.name} ({config.model}): {allowed(config.model)}")


def configure(name: str, /, *, fast: bool = False, overrides: dict | None = None) -> ExperimentConfig:
    """The named config, shrunk in fast mode, with ``overrides`` (``{field: value}``) applied.

    Values may be strings (the CLI's ``--set KEY=VALUE``; converted to the field's type). Every
    override is checked, and so is the result: a bad key or value raises one ``ValueError`` naming
    it and listing the allowed keys and ranges for the config's network, before any work is done.
    """
    if not isinstance(name, str) or name not in CONFIGS:
        raise ValueError(f"unknown experiment {name!r}; choose one of {sorted(CONFIGS)}")
    base = CONFIGS[name]
    changes = dict(FAST, **(FAST_LOCAL if base.local_images else {})) if fast else {}
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        if key == "name":
            raise _refuse(key, "the experiment's name is not a setting (give another experiment instead)", base)
        if key not in _rules(base.model):
            raise _refuse(key, "unknown override", base)
        changes[key] = _coerce(key, value, getattr(base, key))
    config = dataclasses.replace(base, **changes)
    _check_config(config, explicit=set(overrides))
    return config


def make_config(name: str, /, *, fast: bool = False, epochs: int | None = None, **overrides) -> ExperimentConfig:
    """The named config, shrunk in fast mode, with ``epochs`` and other overrides applied (see ``configure``)."""
    if epochs is not None:
        overrides["epochs"] = epochs
    return configure(name, fast=fast, overrides=overrides)


def _type_ok(value, default) -> bool:
    if isinstance(default, bool) or isinstance(default, int) or isinstance(default, str):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, tuple):
        return isinstance(value, tuple) and all(_type_ok(v, 0.0 if any(isinstance(d, float) for d in default) else 0)
                                                for v in value)
    return isinstance(value, type(default))


def _check_config(c: ExperimentConfig, explicit=()) -> None:
    """Raise ``ValueError`` for the first field of ``c`` outside its rule (overridden fields first).

    The default snapshot epochs (1, 21, 41) may lie beyond a shortened run's last epoch (those
    snapshots are then not taken); snapshot epochs asked for explicitly must lie in 1..epochs.
    """
    rules = _rules(c.model)
    base = CONFIGS.get(c.name, c)
    fields = [f.name for f in dataclasses.fields(c) if f.name != "name"]
    for key in sorted(fields, key=lambda k: k not in explicit):
        value, default = getattr(c, key), getattr(base, key)
        if not _type_ok(value, default):
            raise _refuse(key, f"must be a {type(default).__name__}, got {value!r}", c)
        words, check = rules[key]
        if key == "snapshot_epochs" and key not in explicit:
            check = lambda v, c: all(e >= 1 for e in v)  # noqa: E731
        if key == "model" or key == "dataset" or check(value, c):
            continue
        raise _refuse(key, f"{value!r} is out of range ({words})", c)
    if c.model not in MODELS:
        raise _refuse("model", f"{c.model!r} is not one of {'|'.join(MODELS)}", c)
    if c.dataset != MODEL_DATASETS[c.model]:
        key = "dataset" if "dataset" in explicit else "model"
        raise _refuse(key, f"{c.model} is built for {MODEL_DATASETS[c.model]}, not for {c.dataset!r}", c)


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

