"""What a run measures: after every epoch, and once more on the final model (Chapters 6–8).

After every epoch (:func:`measure_epoch`): clean test accuracy, PGD robust accuracy in pixel and in
feature space, and Δx, Δp (with standard errors and Chapter 4's per-coordinate diagnostics) in both spaces; at the
configured snapshot epochs a t-SNE embedding of clean and attacked test features (Fig. 1). Once the
last epoch is done (:func:`final_evaluation`): the stronger attack over the ε sweep. Every random
draw of epoch e comes from a generator seeded by (seed, e, purpose), so an epoch measured again
(after a resumption) gives the same numbers.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .. import attacks, models, train, uncertainty
from ..uncertainty.local import local_moments
from .configs import ExperimentConfig

def _generator(config: ExperimentConfig, epoch: int, stream: int) -> torch.Generator:
    """Independent, reproducible random streams per (seed, epoch, purpose)."""
    return torch.Generator().manual_seed(config.seed * 1_000_003 + epoch * 101 + stream)


# ---------------------------------------------------------------------------------------------
# Feature space (Chapter 8)
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


def feature_space(model: nn.Module, x_train: torch.Tensor | None = None, *, scale=None,
                  batch_size: int | None = None) -> FeatureSpace:
    """Build the unit feature box of ``model`` (Chapter 8).

    Either from the training images ``x_train`` (the per-coordinate maximum of their features is
    the box's scale), or from that ``scale`` itself, as the final block of a results file keeps it
    (``final["feature_scale"]``), which spares passing the training set through the network again.
    """
    if (x_train is None) == (scale is None):
        raise ValueError("feature_space needs exactly one of x_train (training images) and scale "
                         "(the stored per-coordinate maximum of their features)")
    if scale is None:
        scale = _features(model, x_train, batch_size=batch_size).max(dim=0).values
    else:
        scale = torch.as_tensor(scale, dtype=model.fc.weight.dtype).flatten()
        if scale.numel() != model.fc.in_features or not bool(torch.isfinite(scale).all() and (scale >= 0).all()):
            raise ValueError(f"scale must hold {model.fc.in_features} finite values ≥ 0 (one per feature "
                             f"of the network), got {scale.numel()} values")
    active = scale > 0
    linear = nn.Linear(int(active.sum()), model.fc.out_features)
    with torch.no_grad():
        # head(u) = W (u · scale) + b on the active coordinates: the same logits as the network.
        linear.weight.copy_(model.fc.weight[:, active] * scale[active])
        linear.bias.copy_(model.fc.bias)
    return FeatureSpace(scale=scale, active=active, head=linear.eval())


def _features(model, x, *, batch_size=None):
    device = next(model.parameters()).device
    batch_size = batch_size or train.eval_batch_size(device, attack=False)
    with models.evaluation(model), torch.no_grad():
        return torch.cat([model.features(train.channels_last(x[i:i + batch_size].to(device))).cpu()
                          for i in range(0, len(x), batch_size)])


# ---------------------------------------------------------------------------------------------
# Per-epoch measurements
# ---------------------------------------------------------------------------------------------


# An estimate that fails a reliability check (ESS < 100 or k̂ > 0.7) is drawn again with
# RESAMPLE_FACTOR times the points, at most RESAMPLE_TRIES times (N = 16,384 → 65,536 → 262,144
# on MNIST), instead of being recorded as is.
RESAMPLE_FACTOR = 4
RESAMPLE_TRIES = 2


def label_summary(net: nn.Module, label: int, input_shape: tuple, config: ExperimentConfig, generator) -> dict:
    """Δx, Δp of one label (config's aggregate form): plain, jackknife-corrected, error bars, diagnostics.

    Keys: ``dx``, ``dp`` (plain ratio estimates), ``dx_jk``, ``dp_jk`` (jackknife bias-corrected),
    ``dx_stderr``, ``dp_stderr`` (jackknife standard errors, the error bar of both), the
    delete-one-group replicates ``dx_replicates``, ``dp_replicates`` (enough to recompute the
    jackknife), the bound diagnostics of Chapter 4, ``ess`` (of w = l²), ``ess_p`` (of Σ_i g_i²),
    ``khat_w``, ``khat_p`` (Pareto k̂), ``tail_w``, ``tail_p`` (log tail excess of both, which
    decides whether a large k̂ counts), ``reliable``, ``warnings`` (the failed checks of the
    estimate kept), ``n_samples`` (points of the estimate kept) and ``resampled`` (the earlier,
    unreliable tries: their N and failed checks). An unreliable estimate is drawn again with
    ``RESAMPLE_FACTOR`` times the points, up to ``RESAMPLE_TRIES`` times.
    """
    form = config.aggregate_form
    n, resampled = config.mc_samples, []
    for attempt in range(RESAMPLE_TRIES + 1):
        with warnings.catch_warnings():  # the reasons are recorded below, not printed per try
            warnings.simplefilter("ignore", uncertainty.UnreliableEstimateWarning)
            m = uncertainty.neural_moments(net, label, input_shape, n_samples=n, sampler=config.mc_sampler,
                                           generator=generator)
        reasons = m.unreliable
        if not reasons or attempt == RESAMPLE_TRIES:
            break
        resampled.append({"n_samples": n, "warnings": reasons})
        n *= RESAMPLE_FACTOR
    summary = m.summary()
    rx, rp = m.aggregate_replicates(form)
    return {
        "dx": summary[f"dx_{form}"], "dp": summary[f"dp_{form}"],
        "dx_jk": summary[f"dx_{form}_jk"], "dp_jk": summary[f"dp_{form}_jk"],
        "dx_stderr": summary[f"dx_{form}_stderr"], "dp_stderr": summary[f"dp_{form}_stderr"],
        "dx_replicates": rx.tolist(), "dp_replicates": rp.tolist(),
        "frac_below_half": summary["frac_below_half"], "min_product": summary["min_product"],
        "mean_boundary": summary["mean_boundary"], "frac_meeting_bound": summary["frac_meeting_bound"],
        "ess": float(m.ess), "ess_p": float(m.ess_p), "khat_w": float(m.khat_w), "khat_p": float(m.khat_p),
        "tail_w": float(m.tail_w), "tail_p": float(m.tail_p),
        "reliable": not reasons, "warnings": list(reasons), "n_samples": int(m.n_samples), "resampled": resampled,
    }


def space_summary(net: nn.Module, input_shape: tuple, config: ExperimentConfig, generator) -> dict:
    """Δx, Δp (config's aggregate form) with error bars and diagnostics: the mean over the labels.

    Each label's estimate is ``label_summary`` (kept under ``per_label``). The class mean of
    ``dx``, ``dp``, ``dx_jk``, ``dp_jk`` and of the bound diagnostics is the mean over labels, its
    standard errors combine the labels' (independent points); ``ess``, ``ess_p`` are the smallest,
    ``khat_w``, ``khat_p`` the largest over labels, ``reliable`` is true when every label is, and
    ``warnings`` lists every label's failed checks. Unreliable estimates are not written as if they
    were fine: the warning is raised (``UnreliableEstimateWarning``) and recorded.
    """
    per_label = [label_summary(net, label, input_shape, config, generator) for label in config.labels]
    mean = {key: float(np.mean([p[key] for p in per_label]))
            for key in ("dx", "dp", "dx_jk", "dp_jk", "frac_below_half", "mean_boundary", "frac_meeting_bound")}
    for key in ("dx_stderr", "dp_stderr"):
        mean[key] = uncertainty.combine_stderr([p[key] for p in per_label])
    mean["dx_jk_stderr"], mean["dp_jk_stderr"] = mean["dx_stderr"], mean["dp_stderr"]
    mean["min_product"] = float(min(p["min_product"] for p in per_label))
    mean.update({key: float(min(p[key] for p in per_label)) for key in ("ess", "ess_p")})
    mean.update({key: float(max(p[key] for p in per_label)) for key in ("khat_w", "khat_p")})
    mean["reliable"] = all(p["reliable"] for p in per_label)
    mean["warnings"] = [f"label {label}: {w}" for label, p in zip(config.labels, per_label) for w in p["warnings"]]
    for message in mean["warnings"]:
        warnings.warn(f"{config.name}: unreliable estimate after resampling, {message}",
                      uncertainty.UnreliableEstimateWarning, stacklevel=2)
    mean.update(aggregate_form=config.aggregate_form, labels=list(config.labels), dims=int(np.prod(input_shape)),
                per_label=per_label)
    return mean


def evaluation_subset(total: int, n: int, config: ExperimentConfig) -> torch.Tensor:
    """The ``n`` test images of the snapshots and the final evaluation: a seeded random subset.

    Not the first ``n``: a test set stored class by class (the CIFAR-10 JPEG copy, and any
    ``subset`` of it) would give only the first classes. The same seed gives the same images in
    every run and on resumption.
    """
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 99_991)
    return torch.randperm(total, generator=generator)[:n].sort().values


def local_subset(total: int, config: ExperimentConfig) -> torch.Tensor:
    """The ``config.local_images`` test images of the per-epoch local ψ: seeded, the same every epoch."""
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + 77_777)
    return torch.randperm(total, generator=generator)[:config.local_images].sort().values


def local_summary(model: nn.Module, test, config: ExperimentConfig, epoch: int) -> dict:
    """The local ψ (Chapter 10) of the fixed test images of :func:`local_subset`, at radius ``local_eps``.

    Per image (true label, ``local_samples`` points drawn by the tilted importance sampler, after
    its pilot rounds: uniform points leave a few effective samples around a confident image): the
    jackknife-corrected Δx and Δp in the run's
    aggregate form, their standard errors, the mean boundary term and whether the estimate passes
    the reliability checks. The means over the images come with two uncertainties: ``*_stderr``,
    the Monte Carlo error of the mean of this fixed set (√Σ se² / n), and ``*_sd``, the spread
    across images.
    """
    index = local_subset(len(test), config)
    table = local_moments(model, test.x[index], test.y[index], eps=config.local_eps, n_samples=config.local_samples,
                          sampler="tilted", generator=_generator(config, epoch, 6),
                          warn=False).table(config.aggregate_form)
    n = len(index)
    out = {"n_images": n, "eps": config.local_eps, "n_samples": config.local_samples,
           "reliable_frac": float(np.mean(table["reliable"]))}
    for key in ("dx", "dp"):
        values = table[key]
        out[key] = float(values.mean())
        out[f"{key}_stderr"] = float(np.sqrt(np.sum(table[f"{key}_stderr"] ** 2)) / n)
        out[f"{key}_sd"] = float(values.std(ddof=1)) if n > 1 else 0.0
    out["product"] = float(table["product"].mean())
    out["mean_boundary"] = float(table["mean_boundary"].mean())
    out["images"] = {"index": index.tolist(), **{key: table[key].tolist() for key in (
        "dx", "dp", "dx_stderr", "dp_stderr", "mean_boundary")}, "reliable": table["reliable"].tolist()}
    return out


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


def logit_scale(net: nn.Module, input_shape: tuple, generator, n: int = 1024) -> float:
    """The network's logit scale where ψ lives: RMS over ``n`` uniform points of [0, 1]^M of the
    standard deviation of the logits across classes.

    Scaling the logits by T (a temperature) scales this number by T: the temperature control of
    Chapter 6 compares the growth of Δp over training with what the growth of this scale alone
    gives.
    """
    x = torch.rand(n, *input_shape, generator=generator)
    device = next(net.parameters()).device
    with models.evaluation(net), torch.no_grad():
        logits = torch.cat([net(train.channels_last(x[i:i + 256].to(device))).cpu() for i in range(0, n, 256)])
    return float(logits.double().std(dim=1).pow(2).mean().sqrt())


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

    with models.evaluation(model):
        clock = time.perf_counter()
        metrics["logit_scale"] = logit_scale(model, tuple(train_set.x.shape[1:]), _generator(config, epoch, 5))
        metrics["pixel"] = space_summary(model, tuple(train_set.x.shape[1:]), config, _generator(config, epoch, 3))
        seconds["moments_pixel"] = time.perf_counter() - clock
        clock = time.perf_counter()
        metrics["feature"] = space_summary(space.head, (int(space.active.sum()),), config, _generator(config, epoch, 4))
        metrics["feature"]["dropped"] = space.dropped
        seconds["moments_feature"] = time.perf_counter() - clock
        if config.local_images:
            clock = time.perf_counter()
            metrics["local"] = local_summary(model, test, config, epoch)
            seconds["local"] = time.perf_counter() - clock
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
    with models.evaluation(model):
        space = feature_space(model, train_set.x)
        u = space.normalise(_features(model, x))
        sweep = {"eps": list(config.sweep_eps), "pixel": [], "feature": []}
        for i, eps in enumerate(config.sweep_eps):
            kw = dict(eps=eps, steps=config.strong_steps, restarts=config.strong_restarts)
            sweep["pixel"].append(strong_robust_accuracy(model, x, y, generator=_generator(config, 10_000, 2 * i), **kw))
            sweep["feature"].append(
                strong_robust_accuracy(space.head, u, y, generator=_generator(config, 10_000, 2 * i + 1), **kw)
            )
    return {"attack": f"PGD-{config.strong_steps}, alpha = 2.5 eps/steps, {config.strong_restarts} restarts",
            "n_test": n, "test_subset": "seeded random subset (evaluation_subset)",
            "classes": int(torch.unique(y).numel()), "sweep": sweep,
            # the final network's feature box (feature_space(model, scale=...) rebuilds it)
            "feature_scale": space.scale.tolist()}


