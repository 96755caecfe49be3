"""The attack operator ∂/∂x and the two L∞ attacks built on it: FGSM and PGD (Chapter 2).

In the paper's analogy the input x is a position and the gradient of the loss with respect to
it, ∂l/∂x, is its conjugate variable — the attack operator. An attack moves x a distance ε (in
L∞) in the direction that raises the loss fastest to first order, which is ε·sign(∂l/∂x).

The semantics are exactly those of torchattacks' ``FGSM`` and ``PGD`` (mean cross-entropy over the
batch, sign step, projection onto the ε-ball, clamp to the box) (Kim, 2020), as
plain functions. They work on tensors of any shape (N, ...), so the same code attacks pixels
(``model`` = the network) and features (``model`` = its ``head``, box = the unit feature box).

``minimal_eps`` (Chapter 10) bisects the L∞ radius of PGD per image to estimate the smallest
ε at which the prediction changes, always witnessed by a real adversarial example; ``survives``
runs the same attack at one radius (robust accuracy under it).

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


def _pgd_batch_eps(model, x, y, eps, *, steps, restarts, rel_alpha, generator, box, rivals=None):
    """Per-sample-ε L∞ PGD: for each sample the smallest witnessed ‖x_adv − x‖∞ of a misclassified
    iterate over all runs and steps (inf where none was found). ``eps`` (N,) tensor ≥ 0.

    Runs: ``restarts`` untargeted ones (summed CE), then one targeted run per column t of
    ``rivals`` (N, T) maximising the logit difference z_t − z_y (Carlini–Wagner's margin, the
    direction that is exact for a linear classifier)."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)
    e = eps.to(x.dtype).reshape(shape)
    alpha = rel_alpha * e / steps
    best = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)

    def record(adv, logits):
        wrong = logits.argmax(1) != y
        dist = (adv - x).flatten(1).abs().amax(1).double()
        best.copy_(torch.where(wrong & (dist < best), dist, best))

    targets = [None] * restarts + ([] if rivals is None else list(rivals.T))
    for target in targets:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype).to(x.device) * 2 - 1
        adv = torch.clamp(x + noise * e, box[0], box[1]).detach()
        for _ in range(steps):
            adv.requires_grad_(True)
            logits = model(adv)
            record(adv.detach(), logits.detach())
            if target is None:
                loss = F.cross_entropy(logits, y, reduction="sum")
            else:
                loss = (logits.gather(1, target[:, None]) - logits.gather(1, y[:, None])).sum()
            (grad,) = torch.autograd.grad(loss, adv)
            adv = adv.detach() + alpha * grad.sign()
            adv = torch.clamp(x + torch.maximum(torch.minimum(adv - x, e), -e), box[0], box[1]).detach()
        with torch.no_grad():
            record(adv, model(adv))
    return best


def _rivals(logits: torch.Tensor, y: torch.Tensor, targets: int):
    """(N, T) the ``targets`` runner-up classes of each row of the clean logits, best first (None if 0)."""
    if not targets:
        return None
    ranked = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).argsort(1, descending=True)
    return ranked[:, :min(targets, logits.shape[1] - 1)]


def _clean_batches(model, x, y, batch_size, y_range):
    """(x_batch, y_batch, clean logits) on the model's device, batch by batch; the first checks the labels."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    for first in range(0, x.shape[0], batch_size):
        xb = x[first:first + batch_size].detach().to(device)
        yb = y[first:first + batch_size].to(device).long()
        with torch.no_grad():
            logits = model(xb)
        if first == 0:
            _check_output(logits, y_range)
        yield xb, yb, logits


def _attack_settings(steps, restarts, targets, rel_alpha, batch_size):
    steps = _checks.integer(steps, "steps", low=1)
    restarts = _checks.integer(restarts, "restarts", low=0)
    targets = _checks.integer(targets, "targets", low=0)
    if restarts + targets < 1:
        raise ValueError(f"restarts + targets must be ≥ 1, got restarts={restarts}, targets={targets}")
    rel_alpha = _checks.real(rel_alpha, "rel_alpha", low=0, low_open=True)
    batch_size = _checks.integer(batch_size, "batch_size", low=1)
    return steps, restarts, targets, rel_alpha, batch_size


def survives(model, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20, restarts: int = 1,
             targets: int = 3, rel_alpha: float = 2.5, generator: torch.Generator | None = None,
             batch_size: int = 256, clamp=(0.0, 1.0)) -> dict:
    """Per image: is it classified correctly, and does it stay so under the attack of :func:`minimal_eps` at ε?

    The attack is one step of the bisection of :func:`minimal_eps` at a fixed radius: ``restarts``
    untargeted PGD-``steps`` runs on the summed CE from random starts, then one targeted run per
    runner-up class (``targets`` of them) maximising z_t − z_y, step α = ``rel_alpha``·ε/steps. An
    image survives only if no iterate of any run is misclassified (the worst case per image).

    Returns a dict of (N,) bool NumPy arrays: ``clean`` (classified correctly) and ``robust``
    (classified correctly and never broken; robust ⊆ clean). Eval mode inside, mode restored.
    """
    eps = _checks.real(eps, "eps", low=0, low_open=True)
    steps, restarts, targets, rel_alpha, batch_size = _attack_settings(steps, restarts, targets, rel_alpha,
                                                                       batch_size)
    box, y_range = _check_inputs(x, y, clamp)
    if box is None:
        raise ValueError("clamp must be a box (low, high) for survives, got None")
    clean, robust = [], []
    with evaluation(model):
        for xb, yb, logits in _clean_batches(model, x, y, batch_size, y_range):
            device = xb.device
            right = logits.argmax(1) == yb
            found = _pgd_batch_eps(model, xb, yb, torch.full((xb.shape[0],), eps, dtype=torch.float64, device=device),
                                   steps=steps, restarts=restarts, rel_alpha=rel_alpha, generator=generator, box=box,
                                   rivals=_rivals(logits, yb, targets))
            clean.append(right.cpu())
            robust.append((right & torch.isinf(found)).cpu())
    return {"clean": torch.cat(clean).numpy(), "robust": torch.cat(robust).numpy()}


def minimal_eps(model, x: torch.Tensor, y: torch.Tensor, *, eps_max: float = 0.5, tol: float = 1e-3,
                steps: int = 20, restarts: int = 1, targets: int = 3, rel_alpha: float = 2.5,
                generator: torch.Generator | None = None, batch_size: int = 256,
                clamp=(0.0, 1.0)) -> dict:
    r"""Minimal adversarial L∞ radius per image by bisection over PGD (Chapter 10).

    .. math:: \varepsilon^*(x_0) = \min\{\varepsilon : \exists\, x \in B_\varepsilon(x_0) \cap [a,b]^M,\
              \arg\max f(x) \ne y\}

    estimated from above: for each image the interval [lower, upper] is bisected until
    upper − lower ≤ ``tol``; at each midpoint ε, PGD (``steps`` sign steps of α = ``rel_alpha``·ε/steps
    from a uniform random start, the projection and clamp of :func:`pgd`) runs on all images at once:
    ``restarts`` untargeted runs on the summed CE, then ``targets`` targeted runs, one per runner-up
    class of the clean logits, each maximising z_t − z_y. The targeted runs matter: on a multiclass
    linear classifier the CE gradient mixes the rivals' directions and untargeted PGD alone
    overestimates ε* by up to 70 % (tests/test_attacks.py), whereas the run aimed at the nearest
    rival is exact. Every misclassified iterate is a *witness*: upper becomes
    its actual distance ‖x_adv − x‖∞ (≤ ε), so ``eps`` is always achieved by a real adversarial
    example and can never lie below the true ε*. A failed attack at ε sets lower = ε; this assumes
    the attack is as strong as the truth at ε (its weakness shows as an overestimate, never as an
    underestimate). Images misclassified clean get ε = 0 (``clean_wrong``); images PGD cannot break
    within ``eps_max`` get ε = inf (``unbroken``).

    Arguments:
        model (nn.Module): returns logits (N, K); eval mode inside, mode restored.
        x (Tensor): images (N, ...) inside the box ``clamp``; y (Tensor): int labels (N,).
        eps_max (float): largest radius tried, in (0, b − a]. (Default: 0.5)
        tol (float): bisection tolerance on ε, > 0. (Default: 1e-3)
        steps (int): PGD steps per attack, ≥ 1; at least 20 for a strong attack. (Default: 20)
        restarts (int): untargeted (CE) runs per attack, ≥ 0. (Default: 1)
        targets (int): targeted runs per attack, one per top runner-up class, ≥ 0 (capped at the
            K − 1 rival classes); restarts + targets ≥ 1. (Default: 3)
        rel_alpha (float): step size relative to ε/steps, > 0. (Default: 2.5)
        generator (torch.Generator or None): for the random starts (CPU).
        batch_size (int): images per batch. (Default: 256)

    Returns:
        dict of (N,) NumPy arrays: ``eps`` (float64; 0, the witnessed upper bound, or inf),
        ``lower`` (largest ε at which the attack failed), ``clean_wrong``, ``unbroken`` (bool).

    Cost: about (1 + log₂(eps_max/tol)) · (restarts + targets) · (steps + 1) forward–backward passes
    per image.
    """
    eps_max = _checks.real(eps_max, "eps_max", low=0, low_open=True)
    tol = _checks.real(tol, "tol", low=0, low_open=True)
    steps, restarts, targets, rel_alpha, batch_size = _attack_settings(steps, restarts, targets, rel_alpha,
                                                                       batch_size)
    box, y_range = _check_inputs(x, y, clamp)
    if box is None:
        raise ValueError("clamp must be a box (low, high) for minimal_eps, got None")
    if eps_max > box[1] - box[0]:
        raise ValueError(f"eps_max must be in (0, {box[1] - box[0]:g}] (the box width), got {eps_max}")
    out = {k: [] for k in ("eps", "lower", "clean_wrong", "unbroken")}
    with evaluation(model):
        for xb, yb, logits in _clean_batches(model, x, y, batch_size, y_range):
            device = xb.device
            wrong = logits.argmax(1) != yb
            n = xb.shape[0]
            rivals = _rivals(logits, yb, targets)
            lower = torch.zeros(n, dtype=torch.float64, device=device)
            upper = _pgd_batch_eps(model, xb, yb, torch.full((n,), eps_max, dtype=torch.float64, device=device),
                                   steps=steps, restarts=restarts, rel_alpha=rel_alpha, generator=generator, box=box,
                                   rivals=rivals)
            unbroken = ~wrong & torch.isinf(upper)
            upper = torch.where(wrong, torch.zeros_like(upper), upper)
            lower = torch.where(unbroken, torch.full_like(lower, eps_max), lower)
            while True:
                active = ~wrong & ~unbroken & (upper - lower > tol)
                if not bool(active.any()):
                    break
                idx = active.nonzero().flatten()
                mid = (lower[idx] + upper[idx]) / 2
                found = _pgd_batch_eps(model, xb[idx], yb[idx], mid, steps=steps, restarts=restarts,
                                       rel_alpha=rel_alpha, generator=generator, box=box,
                                       rivals=None if rivals is None else rivals[idx])
                hit = torch.isfinite(found)
                upper[idx] = torch.where(hit, torch.minimum(found, upper[idx]), upper[idx])
                lower[idx] = torch.where(hit, lower[idx], mid)
            eps = torch.where(unbroken, torch.full_like(upper, float("inf")), upper)
            lower = torch.minimum(lower, eps)  # a lucky witness below an earlier failure: keep lower ≤ eps
            for key, value in (("eps", eps), ("lower", lower), ("clean_wrong", wrong), ("unbroken", unbroken)):
                out[key].append(value.cpu())
    return {k: torch.cat(v).numpy() for k, v in out.items()}
