"""Controls for the claims the experiment chapters make about trained networks (Chapters 5–6).

Two explanations compete with "training did it" for what the measurements show:

* **Architecture alone.** An unpadded convolution sees a central pixel through more windows than
  a border pixel, so the input gradient, and with it Δx_iΔp_i, can be larger in the middle of the
  image for *any* weights. :func:`untrained_control` measures the same quantities on networks that
  were never trained (the configured initialisation, several seeds).
* **Logit scale alone.** Training grows the logits; a larger scale alone makes the cross-entropy
  steeper and Δp larger. :func:`temperature_sweep` scales the logits of one network by T
  (:class:`Tempered`) and measures Δp and the logit scale (:func:`~.measure.logit_scale`) for each
  T, so the Δp an epoch shows can be compared with what the final network gives at that epoch's
  logit scale.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import models, uncertainty
from .configs import ExperimentConfig, build_model
from .measure import logit_scale


class Tempered(nn.Module):
    """``net`` with its logits multiplied by ``temperature`` (T = 1: the network itself)."""

    def __init__(self, net: nn.Module, temperature: float):
        super().__init__()
        if not (isinstance(temperature, (int, float)) and temperature >= 0 and temperature == temperature):
            raise ValueError(f"temperature must be a finite number ≥ 0, got {temperature!r}")
        self.net, self.temperature = net, float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.temperature * self.net(x)


def centre_frame_ratio(values: torch.Tensor) -> float:
    """Mean of a 28 × 28 map over its central 14 × 14 pixels, over its mean on the outer 4-pixel frame.

    > 1: the map is larger in the middle of the image (Chapter 5's product map of a trained
    network; the controls ask whether an untrained one shows it too).
    """
    v = torch.as_tensor(values, dtype=torch.float64).reshape(28, 28)
    frame = torch.ones(28, 28, dtype=torch.bool)
    frame[4:-4, 4:-4] = False
    return float(v[7:21, 7:21].mean() / v[frame].mean())


def _estimate(net, label, input_shape, n_samples, generator, sampler="uniform") -> dict:
    m = uncertainty.neural_moments(net, label, input_shape, n_samples=n_samples, sampler=sampler, generator=generator)
    dx, dp = m.aggregate_jk("paper")
    dx_se, dp_se = m.aggregate_stderr("paper")
    return {"dx": dx, "dp": dp, "dx_stderr": dx_se, "dp_stderr": dp_se, "reliable": not m.unreliable,
            "moments": m}


def untrained_control(config: ExperimentConfig, seeds=(0, 1, 2), *, label: int | None = None,
                      n_samples: int = 4096, generator: torch.Generator | None = None) -> list[dict]:
    """Δx, Δp (paper form, jackknife-corrected, with standard errors) of the *untrained* network of
    ``config`` for each seed, plus its product map's centre/frame ratio (28 × 28 inputs only).

    The networks are built exactly as a run builds them (``build_model`` with that seed) and are
    measured in pixel space for ``label`` (default: the config's first label). Each entry also
    holds its :class:`~qnnlib.uncertainty.Moments` under ``"moments"`` and the ``logit_scale``.
    """
    label = config.labels[0] if label is None else label
    generator = generator or torch.Generator().manual_seed(0)
    shape = (1, 28, 28) if config.dataset == "mnist" else (3, 32, 32)
    out = []
    for seed in seeds:
        net = build_model(dataclasses.replace(config, seed=int(seed))).eval()
        entry = {"seed": int(seed), **_estimate(net, label, shape, n_samples, generator)}
        entry["logit_scale"] = logit_scale(net, shape, generator)
        if shape == (1, 28, 28):
            entry["centre_frame"] = centre_frame_ratio(entry["moments"].product)
        out.append(entry)
    return out


def temperature_sweep(net: nn.Module, label: int, input_shape, temperatures, *, n_samples: int = 4096,
                      generator: torch.Generator | None = None) -> list[dict]:
    """Δx, Δp of ``Tempered(net, T)`` and its logit scale, for each T in ``temperatures``.

    The logit scale is exactly T times the network's (same points); Δp is not simply proportional
    to T, because the cross-entropy is not linear in the logits: the sweep is the curve
    (logit scale, Δp) that the logit scale alone traces for this network.
    """
    generator = generator or torch.Generator().manual_seed(0)
    shape = tuple(input_shape)
    with models.evaluation(net):
        base = logit_scale(net, shape, torch.Generator().manual_seed(1))
        out = []
        for t in temperatures:
            entry = {"temperature": float(t), "logit_scale": float(t) * base,
                     **_estimate(Tempered(net, float(t)), label, shape, n_samples, generator)}
            out.append(entry)
    return out
