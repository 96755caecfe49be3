"""The attack operator ∂/∂x and the two L∞ attacks built on it: FGSM and PGD (Chapter 2).

In the paper's analogy the input x is a position and the gradient of the loss with respect to
it, ∂l/∂x, is its conjugate variable — the attack operator. An attack moves x a distance ε (in
L∞) in the direction that raises the loss fastest to first order, which is ε·sign(∂l/∂x).

The semantics are exactly those of torchattacks' ``FGSM`` and ``PGD`` (mean cross-entropy over the
batch, sign step, projection onto the ε-ball, clamp to the box) (Kim, 2020), as
plain functions. They work on tensors of any shape (N, ...), so the same code attacks pixels
(``model`` = the network) and features (``model`` = its ``head``, box = the unit feature box).

Guarantees: the model is in eval mode during the attack and its mode is restored afterwards; only
the gradient with respect to the input is taken (``torch.autograd.grad``), so no parameter
``.grad`` is created or changed; the input tensor is never modified.

Bad input (``qnnlib._checks``): x must be a finite floating-point batch inside the box (uint8
images are a TypeError: divide by 255), y integer labels in 0..K−1 for the model's K outputs,
ε, α finite (Python or NumPy numbers), and a model whose loss turns NaN or inf during the attack
is an error rather than a silently unchanged input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks
from .models import evaluation


def _check_inputs(x, y, clamp):
    """x: finite float (N, ...) inside the box; y: int labels (N,) ≥ 0. Returns (box, (y_min, y_max))."""
    box = _checks.box(clamp)
    _checks.float_batch(x, "x", box=box)
    return box, _checks.labels(y, "y", n=x.shape[0])


def _check_output(logits, y_range):
    """The first forward pass: labels must fit the model's class count."""
    _checks.labels_below(y_range, logits.shape[-1], "y")


def input_gradient(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per-sample gradient of the per-sample loss: the attack operator applied to the loss.

    .. math:: g_n = \frac{\partial}{\partial x_n} \mathrm{CE}(f(x_n), y_n)

    One backward pass of the *summed* loss gives every g_n at once, because in eval mode sample n's
    loss depends only on x_n. (FGSM/PGD use the *mean* loss, i.e. g/N; the sign is the same.)

    Arguments:
        model (nn.Module): returns logits (N, K); put in eval mode, mode restored.
        x (Tensor): inputs (N, ...), any shape and range (no box check).
        y (Tensor): int labels (N,) in 0..K-1.

    Returns:
        Tensor shaped like ``x``: the conjugate variable p = ∂l/∂x of each sample (Chapter 2).

    Example:
        >>> g = input_gradient(model, images, labels)   # doctest: +SKIP
    """
    _, y_range = _check_inputs(x, y, None)
    with evaluation(model):
        x_var = x.detach().clone().requires_grad_(True)
        logits = model(x_var)
        _check_output(logits, y_range)
        loss = F.cross_entropy(logits, y.to(logits.device).long(), reduction="sum")
        _checks.finite_loss(torch.isfinite(loss), "input_gradient")
        (grad,) = torch.autograd.grad(loss, x_var)
    return grad


def fgsm(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, clamp=(0.0, 1.0)) -> torch.Tensor:
    r"""FGSM (Goodfellow, Shlens & Szegedy, 2015): one signed-gradient step of size ε, then clamp.

    Distance measure: L∞.

    .. math:: x_\mathrm{adv} = \mathrm{clip}_{[a,b]}\bigl(x + \varepsilon\,\mathrm{sign}\,\nabla_x L(x, y)\bigr),
              \quad L = \tfrac1N \sum_n \mathrm{CE}(f(x_n), y_n)

    Arguments:
        model (nn.Module): returns logits (N, K); put in eval mode, mode restored.
        x (Tensor): inputs (N, ...) inside the box ``clamp`` (pixels: [0, 1]).
        y (Tensor): int labels (N,) in 0..K-1.
        eps (float): maximum perturbation, ≥ 0 (no default; the paper's MNIST value is 0.1).
        clamp (tuple or None): the box [a, b] the inputs live in. (Default: (0.0, 1.0))

    Shape:
        - x: (N, ...) — images (N, C, H, W) or features (N, F); output: same as x.

    Example:
        >>> x_adv = fgsm(model, images, labels, eps=8/255)   # doctest: +SKIP

    Same output as ``torchattacks.FGSM(model, eps)(images, labels)``. Chapter 2.
    """
    eps = _checks.real(eps, "eps", low=0)
    box, y_range = _check_inputs(x, y, clamp)
    with evaluation(model):
        images = x.detach().clone().requires_grad_(True)
        logits = model(images)
        _check_output(logits, y_range)
        loss = F.cross_entropy(logits, y.to(logits.device).long())
        _checks.finite_loss(torch.isfinite(loss), "fgsm")
        (grad,) = torch.autograd.grad(loss, images)
    adv = images.detach() + eps * grad.sign()
    if box is not None:
        adv = torch.clamp(adv, min=box[0], max=box[1])
    return adv.detach()


def pgd(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float, steps: int,
        random_start: bool = True, generator: torch.Generator | None = None,
        clamp=(0.0, 1.0)) -> torch.Tensor:
    r"""PGD (Madry et al., 2018): repeated FGSM steps of size α, projected back to the ε-ball around x.

    Distance measure: L∞.

    .. math::

        x^{0} &= \mathrm{clip}_{[a,b]}(x + u),\quad u \sim U[-\varepsilon, \varepsilon]^{\dim x}
        \ \text{(random start; else } x^{0} = x\text{)},\\
        x^{t+1} &= \mathrm{clip}_{[a,b]}\Bigl(x + \mathrm{clip}_{[-\varepsilon,\varepsilon]}
        \bigl(x^{t} + \alpha\,\mathrm{sign}\,\nabla_x L(x^{t}, y) - x\bigr)\Bigr)

    with L the mean cross-entropy over the batch.

    Arguments:
        model (nn.Module): returns logits (N, K); put in eval mode, mode restored.
        x (Tensor): inputs (N, ...) inside the box ``clamp`` (pixels: [0, 1]).
        y (Tensor): int labels (N,) in 0..K-1.
        eps (float): maximum perturbation, ≥ 0. Paper: 0.1 (MNIST, Fig. 1), 8/255 (Fig. 2).
        alpha (float): step size, > 0. Paper: ε/4 (MNIST), 2/255 (Fig. 2).
        steps (int): number of steps, ≥ 1. Paper: 4.
        random_start (bool): start from a uniform random point of the ε-ball. (Default: True)
        generator (torch.Generator or None): random source for the start; None uses torch's
            global generator, exactly like torchattacks. (Default: None)
        clamp (tuple or None): the box [a, b] the inputs live in. (Default: (0.0, 1.0))

    Shape:
        - x: (N, ...) — images (N, C, H, W) or features (N, F); output: same as x.

    Example:
        >>> x_adv = pgd(model, images, labels, eps=8/255, alpha=2/255, steps=10)   # doctest: +SKIP

    Same output as ``torchattacks.PGD(model, eps, alpha, steps, random_start)(images, labels)``
    under the same random state. Chapter 2.
    """
    eps = _checks.real(eps, "eps", low=0)
    alpha = _checks.real(alpha, "alpha", low=0, low_open=True)
    steps = _checks.integer(steps, "steps", low=1)
    box, y_range = _check_inputs(x, y, clamp)
    images = x.detach().clone()
    labels = y.long()

    def into_box(t):
        return torch.clamp(t, min=box[0], max=box[1]) if box is not None else t

    adv = images.clone()
    if random_start:
        adv = into_box(adv + torch.empty_like(adv).uniform_(-eps, eps, generator=generator)).detach()
    finite = None  # all steps' losses finite; a device flag, read once after the loop (no sync per step)
    with evaluation(model):
        for step in range(steps):
            adv.requires_grad_(True)
            logits = model(adv)
            if step == 0:
                _check_output(logits, y_range)
                labels = labels.to(logits.device)
            loss = F.cross_entropy(logits, labels)
            finite = torch.isfinite(loss) if finite is None else finite & torch.isfinite(loss)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            delta = torch.clamp(adv - images, min=-eps, max=eps)
            adv = into_box(images + delta).detach()
    _checks.finite_loss(finite, "pgd")
    return adv
