"""A defence without adversarial training? Masking the inputs with the largest coupling (Chapter 10).

The authors' follow-up (arXiv:2603.19562) proposes that the input components with the strongest
input–gradient coupling — the covariance, under ψ², of a pixel's value with its momentum ∂_i log l,
which in this book is the boundary term B_i − 1 = 2∫(x_i − ⟨x_i⟩)ψ∂_iψ of the local wave function —
are the channels an attack uses, so that masking them should make a network more robust without
adversarial training. This module builds the pieces to test that claim against an adaptive attack:

* :func:`coupling_scores`: per input component, the mean over calibration images of
  ``|B_i − 1|`` of the local ψ on B_ε(x₀) ∩ [0,1]^M (jackknife-corrected,
  :func:`qnnlib.uncertainty.local_moments`), and, as the control a reviewer would ask for, the
  mean ``|∂ log CE / ∂x_i|`` at the images themselves (a saliency map; Simonyan et al., 2014);
* :func:`top_mask` and :func:`random_mask`: the k components of largest score, or k at random;
* :class:`MaskedInput`: the network behind a fixed mask, which replaces the masked components by a
  fill value (the calibration images' mean) before the first layer. The mask is part of the model,
  so an attack that differentiates the masked model sees it: gradients are exact (zero on the
  masked components), nothing is obfuscated, and :func:`qnnlib.attacks.survives` is an adaptive
  attack on it;
* :func:`finetune`: a short natural fine-tune of the masked network from the recorded weights, so
  that the comparison does not only measure a network that was never shown the mask.

The recorded experiment (``python -m qnnlib run defence-mnist-cnn3``) lives in
``qnnlib.experiments.defence_run`` (:func:`qnnlib.experiments.run_defence`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from . import _checks
from .models import evaluation
from .train import train_epoch
from .uncertainty.local import _log_ce_rows, local_moments

MASK_KINDS = ("coupling", "saliency", "random")


def coupling_scores(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, n_samples: int, seed: int = 0,
                    sampler: str = "tilted", pilot: int = 256, stages: int = 2, n_groups: int = 32) -> dict:
    """Per input component, how strongly the loss couples to it near the images ``x`` (N, ...) with labels ``y``.

    Returns a dict: ``coupling`` (M,) float64, the mean over images of ``|B_i − 1|`` of each image's
    local ψ on B_ε(x₀) ∩ [0,1]^M (``n_samples`` points from a generator seeded by ``seed``; ``sampler``,
    ``pilot``, ``stages``, ``n_groups`` as in :func:`qnnlib.uncertainty.local_moments`);
    ``saliency`` (M,) float64, the mean ``|∂ log CE / ∂x_i|`` at the images
    (:func:`log_loss_gradient`: every image counts alike, where ∂CE itself would be dominated by
    the least confident few);
    ``reliable`` (int), how many of the N local estimates pass the reliability checks (ESS ≥ 100,
    k̂ ≤ 0.7).
    """
    seed = _checks.integer(seed, "seed", low=0)
    _checks.labels(y, "y", n=x.shape[0])
    local = local_moments(model, x, y, eps=eps, n_samples=n_samples, generator=torch.Generator().manual_seed(seed),
                          warn=False, sampler=sampler, pilot=pilot, stages=stages, n_groups=n_groups)
    boundary = torch.stack([m.boundary_jk.flatten() for m in local.moments])
    saliency = log_loss_gradient(model, x, y).flatten(1).abs().double().mean(0)
    return {"coupling": (boundary - 1).abs().mean(0).numpy(), "saliency": saliency.cpu().numpy(),
            "reliable": sum(1 for m in local.moments if not m.unreliable)}


def log_loss_gradient(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per image, ∂ log CE(f(x_n), y_n) / ∂x_n, shaped like ``x`` — the momentum of Chapter 3 at x_n.

    The log is taken stably (exact where CE underflows), so confidently classified images, whose
    CE gradient is of order e^(−margin), contribute a gradient of order one: for them
    log CE ≈ −margin, and this is minus the gradient of the margin. Eval mode inside, restored.
    """
    _checks.float_batch(x, "x")
    _checks.labels(y, "y", n=x.shape[0])
    with evaluation(model):
        x_var = x.detach().clone().requires_grad_(True)
        log_loss = _log_ce_rows(model(x_var), y.long())
        _checks.finite_loss(torch.isfinite(log_loss).all(), "log_loss_gradient")
        (grad,) = torch.autograd.grad(log_loss.sum(), x_var)
    return grad


def _check_k(k, m: int) -> int:
    return _checks.integer(k, "k", low=0, high=m)


def top_mask(scores, k: int) -> torch.Tensor:
    """(M,) bool: True on the ``k`` components of largest ``scores`` (ties broken by the lower index)."""
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float64))
    if scores.dim() != 1 or not bool(torch.isfinite(scores).all()):
        raise ValueError(f"scores must be a finite 1-D array, got shape {tuple(scores.shape)}")
    k = _check_k(k, scores.numel())
    order = torch.from_numpy(np.argsort(-scores.numpy(), kind="stable"))
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[order[:k]] = True
    return mask


def random_mask(m: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(M,) bool: True on ``k`` of the ``m`` components, drawn without replacement from ``generator``."""
    m = _checks.integer(m, "m", low=1)
    k = _check_k(k, m)
    mask = torch.zeros(m, dtype=torch.bool)
    mask[torch.randperm(m, generator=generator)[:k]] = True
    return mask


class MaskedInput(nn.Module):
    """``model`` behind a fixed input mask: x ↦ model(where(mask, fill, x)).

    ``mask`` (bool) has the M elements of one input, in any shape (it is reshaped to each batch's
    input shape); ``fill`` is a number or has M elements too. Both are buffers, so they move with
    the model and are saved with its state. The masked components can take any value
    without changing the output, so an L∞ attack on the masked model spends its budget on the rest.
    """

    def __init__(self, model: nn.Module, mask: torch.Tensor, fill: torch.Tensor):
        super().__init__()
        mask = torch.as_tensor(mask)
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
        fill = torch.as_tensor(fill, dtype=torch.float32)
        if fill.numel() != 1 and fill.numel() != mask.numel():
            raise ValueError(f"fill must be a number or have the mask's {mask.numel()} elements, got {fill.numel()}")
        self.model = model
        self.register_buffer("mask", mask.clone())
        self.register_buffer("fill", fill.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, *x.shape[1:])
        mask = self.mask.reshape(shape)
        fill = self.fill.reshape(shape) if self.fill.numel() > 1 else self.fill
        return self.model(torch.where(mask, fill.to(x.dtype), x))


def finetune(model: nn.Module, mask: torch.Tensor, fill: torch.Tensor, x: torch.Tensor, y: torch.Tensor, *,
             epochs: int, lr: float, seed: int, batch_size: int = 128) -> MaskedInput:
    """A copy of ``model`` behind the mask, trained naturally (Adam, mean CE, no attack) for ``epochs``
    passes over ``(x, y)`` at rate ``lr``; the batches' order from a generator seeded by ``seed``.
    ``model`` itself is not changed. Returns the :class:`MaskedInput`, in eval mode."""
    epochs = _checks.integer(epochs, "epochs", low=1)
    lr = _checks.real(lr, "lr", low=0, low_open=True)
    seed = _checks.integer(seed, "seed", low=0)
    masked = MaskedInput(copy.deepcopy(model), mask, fill)
    optimizer = torch.optim.Adam(masked.model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        train_epoch(masked, optimizer, x, y, batch_size=batch_size, generator=generator, progress=False)
    return masked.eval()
