"""Checks for the exercises: run one on your answer and read what is wrong (Chapters 1–10).

Each check takes what a filled-in notebook computed (numbers, or the function an exercise asks
for), compares it with a closed form or with the library's own implementation, and either returns
a one-line confirmation or raises :class:`ExerciseError`, whose message says what is wrong and,
for the usual mistakes, which mistake it looks like.

==================================  ================================================================
check                               exercises
==================================  ================================================================
:func:`check_spreads`               ``ex-01-gaussian``, ``ex-01-tent``, ``ex-01-moving`` (Chapter 1)
:func:`check_fgsm`                  Chapter 2's ``my_fgsm``; any FGSM of your own
:func:`check_targeted_attack`       ``ex-02-targeted`` (Chapter 2)
:func:`check_random_sign_attack`    ``ex-02-random`` (Chapter 2)
:func:`check_attack_field`          ``ex-03-fgsm`` (Chapter 3)
:func:`check_boundary_term`         ``ex-04-linear``, ``ex-04-equality`` (Chapter 4)
:func:`check_flat_dx`               ``ex-06-flat`` (Chapter 6)
:func:`check_boundary_term`         ``ex-10-exponential`` (Chapter 10)
:func:`check_linear_min_eps`        ``ex-10-linear`` (Chapter 10)
:func:`check_rank_correlation`      ``ex-10-quotient`` (Chapter 10)
==================================  ================================================================

Example, in a chapter notebook::

    from qnnlib import exercises
    exercises.check_fgsm(my_fgsm)                     # 'FGSM correct: ...' or an ExerciseError
    exercises.check_spreads(1.0, 0.5, "gaussian", width=1.0)
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qnnlib import attacks
from qnnlib.uncertainty import grid_moments, quadrature_nodes

__all__ = [
    "CHECKS",
    "ExerciseError",
    "check_spreads",
    "check_fgsm",
    "check_targeted_attack",
    "check_random_sign_attack",
    "check_attack_field",
    "check_boundary_term",
    "check_flat_dx",
    "check_linear_min_eps",
    "check_rank_correlation",
]

#: The check for each exercise label (``tools/student_edition.py`` names it in the student's stub).
CHECKS = {
    "ex-01-gaussian": "check_spreads",
    "ex-01-tent": "check_spreads",
    "ex-01-moving": "check_spreads",
    "ex-02-random": "check_random_sign_attack",
    "ex-02-targeted": "check_targeted_attack",
    "ex-03-fgsm": "check_attack_field",
    "ex-04-equality": "check_boundary_term",
    "ex-04-linear": "check_boundary_term",
    "ex-06-flat": "check_flat_dx",
    "ex-10-exponential": "check_boundary_term",
    "ex-10-linear": "check_linear_min_eps",
    "ex-10-quotient": "check_rank_correlation",
}


class ExerciseError(AssertionError):
    """An answer that does not match the reference; the message says how it differs."""


def _near(value: float, target: float, rtol: float) -> bool:
    return abs(value - target) <= rtol * max(abs(target), 1e-12)


def _number(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ExerciseError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ExerciseError(f"{name} must be a finite number, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Chapter 1: spreads of packets with closed forms
# ---------------------------------------------------------------------------------------------

SHAPES = ("gaussian", "tent", "sech")


def _closed_form_spreads(shape: str, width: float) -> tuple[float, float]:
    if shape == "gaussian":   # ψ ∝ exp(−x²/(4σ²)), σ = width
        return width, 1 / (2 * width)
    if shape == "tent":       # ψ = max(0, 1 − |x|/a), a = width
        return width / math.sqrt(10), math.sqrt(3) / width
    return width, math.pi / (6 * width)   # sech packet of quantum.sech_packet: Δx = width


def check_spreads(dx, dp, shape: str, *, width: float, k0: float = 0.0, mean_p=None, rtol: float = 5e-3) -> str:
    """Check Δx, Δp (and optionally ⟨p⟩) of a Chapter 1 packet against its closed form.

    Closed forms (ħ = 1), for a packet multiplied by e^{ik₀x} (which shifts ⟨p⟩ to k₀ and changes
    neither spread):

    - ``"gaussian"``, ψ ∝ exp(−x²/(4σ²)) with σ = ``width``: Δx = σ, Δp = 1/(2σ) (``ex-01-gaussian``);
    - ``"tent"``, ``ψ = max(0, 1 − |x|/a)`` with a = ``width``: Δx = a/√10, Δp = √3/a (``ex-01-tent``);
    - ``"sech"``, :func:`qnnlib.quantum.sech_packet` with Δx = ``width``: Δp = π/(6Δx) (``ex-01-moving``).

    Arguments:
        dx, dp (float): your spreads.
        shape (str): ``"gaussian"``, ``"tent"`` or ``"sech"``.
        width (float): σ, a or Δx as above, > 0.
        k0 (float): the wave number of the phase factor. (Default: 0.0)
        mean_p (float or None): your ⟨p⟩, checked against k₀ if given. (Default: None)
        rtol (float): relative tolerance; the default 5e-3 accepts a grid of spacing 0.04 for the
            tent, whose kinks make the grid error O(h).

    Returns a confirmation; raises :class:`ExerciseError` naming the wrong quantity, e.g. a
    variance given for a spread, a Δp that still contains ⟨p⟩, or a factor of 2 in the exponent.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
    width = float(width)
    if not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive finite number, got {width}")
    dx, dp = _number("dx", dx), _number("dp", dp)
    true_dx, true_dp = _closed_form_spreads(shape, width)
    for name, value in (("Δx", dx), ("Δp", dp)):
        if value <= 0:
            raise ExerciseError(f"{name} = {value:g}: a spread is a standard deviation, a positive number")
    problems = []
    for name, value, true in (("Δx", dx, true_dx), ("Δp", dp, true_dp)):
        if _near(value, true, rtol):
            continue
        if _near(value, true**2, rtol):
            problems.append(f"{name} = {value:.6g} is the variance {name}² of the closed form; "
                            f"take its square root ({true:.6g})")
        elif name == "Δp" and k0 and _near(value, math.hypot(true, k0), rtol):
            problems.append(f"Δp = {value:.6g} is √⟨p²⟩: subtract ⟨p⟩² = k₀² = {k0**2:.6g} before the "
                            f"square root (Δp = {true:.6g}; a phase e^{{ik₀x}} does not change Δp)")
        elif name == "Δp" and k0 and _near(value * value, true * true + k0 * k0, rtol):
            problems.append(f"Δp² = {value**2:.6g} is ⟨p²⟩; subtract ⟨p⟩² = {k0**2:.6g}")
        else:
            ratio = value / true
            factor = next((f for f in (2.0, 0.5, math.sqrt(2), 1 / math.sqrt(2)) if _near(ratio, f, rtol)), None)
            detail = f"{name} = {value:.6g}, but the closed form gives {true:.6g}"
            if factor is not None:
                detail += (f" (yours is {ratio:.4g} times it: for ψ ∝ e^{{−x²/(4σ²)}}, |ψ|² has variance σ² "
                           "and ψ′ = −x ψ/(2σ²); a factor of 2 or √2 usually comes from the exponent, or from "
                           "the spread of ψ instead of |ψ|²)" if shape == "gaussian" else
                           f" (yours is {ratio:.4g} times it: check the normalisation ∫ψ² = 1 and "
                           "that you used |ψ|², not ψ, as the density)")
            else:
                detail += f" (off by {100 * (ratio - 1):+.2f}%)"
            problems.append(detail)
    if mean_p is not None:
        mean_p = _number("mean_p", mean_p)
        if not abs(mean_p - k0) <= rtol * max(abs(k0), 1.0):
            if k0 and _near(mean_p, -k0, rtol):
                problems.append(f"⟨p⟩ = {mean_p:.6g} has the wrong sign: with p̂ = −i d/dx the phase e^{{ik₀x}} "
                                f"gives ⟨p⟩ = +k₀ = {k0:g}")
            else:
                problems.append(f"⟨p⟩ = {mean_p:.6g}, but a real packet times e^{{ik₀x}} has ⟨p⟩ = k₀ = {k0:g}")
    if problems:
        product = dx * dp
        if product < 0.5 * (1 - rtol):
            problems.append(f"your Δx·Δp = {product:.4g} is below 1/2, which no wave function on the real line "
                            "can reach (Heisenberg–Kennard, Chapter 1)")
        raise ExerciseError(f"{shape} packet: " + "; ".join(problems))
    return (f"{shape} packet correct: Δx = {dx:.6g}, Δp = {dp:.6g}, Δx·Δp = {dx * dp:.6g} "
            f"(closed form {true_dx * true_dp:.6g})")


# ---------------------------------------------------------------------------------------------
# Chapter 2: attacks
# ---------------------------------------------------------------------------------------------


def _tiny_problem(seed: int, n: int = 32, classes: int = 3):
    """A small fixed classifier on 1×4×4 'images' in [0, 1], some pixels exactly on the walls."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, classes))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(4.0)   # steep enough that a small budget changes predictions
    x = torch.rand(n, 1, 4, 4, generator=generator)
    x[x < 0.15] = 0.0   # black and white pixels: the clamp matters there
    x[x > 0.85] = 1.0
    y = torch.randint(0, classes, (n,), generator=generator)
    return model.eval(), x, y


def _call(fn, *args, **kw):
    try:
        out = fn(*args, **kw)
    except NotImplementedError as error:   # the stub of the student edition and the assignments
        raise ExerciseError(f"not done yet: {error}") from error
    except Exception as error:  # noqa: BLE001 — any failure of the student's code is the answer
        raise ExerciseError(f"your function raised {type(error).__name__}: {error}") from error
    if not torch.is_tensor(out):
        raise ExerciseError(f"your function must return a tensor (the attacked inputs), got {type(out).__name__}")
    return out.detach()


def _attack(fn, model, x, y, **kw) -> torch.Tensor:
    """The student's attack ``fn(model, x, y, **kw)``, checked not to change x in place and to
    return a tensor of x's shape; returned in x's dtype."""
    original = x.clone()
    out = _call(fn, model, x, y, **kw)
    if not torch.equal(x, original):
        raise ExerciseError("your function changed its input x in place; attack a copy (x.clone())")
    if out.shape != x.shape:
        raise ExerciseError(f"x_adv has shape {tuple(out.shape)}, but it must have the shape of x, {tuple(x.shape)}")
    return out.to(x.dtype)


def check_fgsm(fn, *, eps: float = 0.1, seed: int = 0) -> str:
    """Run your FGSM ``fn(model, x, y, eps=eps)`` on a tiny model and compare with :func:`qnnlib.attacks.fgsm`.

    FGSM is x_adv = clip_[0,1](x + ε·sign ∇ₓL(x, y)) with L the cross-entropy (Chapter 2). The
    check reports the largest deviation from the library and names the usual mistakes: a step
    against the gradient, the raw gradient instead of its sign, a step of the wrong size, a
    missing clamp, the gradient of the wrong loss, or an input changed in place.
    """
    model, x, y = _tiny_problem(seed)
    out = _attack(fn, model, x, y, eps=eps)
    reference = attacks.fgsm(model, x, y, eps=eps)
    deviation = float((out - reference).abs().max())
    if deviation <= 1e-6:
        return f"FGSM correct: matches qnnlib.attacks.fgsm (max deviation {deviation:.1e}) at ε = {eps:g}"
    g = attacks.input_gradient(model, x, y)
    step = out - x
    moved = step.abs() > 1e-7
    found = f"max deviation from qnnlib.attacks.fgsm {deviation:.3g}"
    if float(out.min()) < -1e-6 or float(out.max()) > 1 + 1e-6:
        unclamped = float((out - (x + eps * g.sign())).abs().max()) < 1e-6
        raise ExerciseError(
            f"x_adv leaves the pixel box: values in [{float(out.min()):.3g}, {float(out.max()):.3g}]; clamp the "
            "result to [0, 1] after the step" + (" (the step itself is right)" if unclamped else "") + f"; {found}")
    if float((out - (x - eps * g.sign()).clamp(0, 1)).abs().max()) <= 1e-6:
        raise ExerciseError("your step goes down the loss: x − ε·sign(∇ₓL). FGSM adds ε·sign(∇ₓL), the direction "
                            f"in which the loss of the true label rises fastest; {found}")
    sizes = step.abs()[moved & (out > 0) & (out < 1)]
    if sizes.numel() and float(sizes.max() - sizes.min()) > 1e-6:
        raise ExerciseError(
            f"the pixels moved by different amounts (from {float(sizes.min()):.3g} to {float(sizes.max()):.3g}): "
            "FGSM moves every pixel by exactly ε in the direction of the *sign* of the gradient, "
            f"not by the gradient itself; {found}")
    if sizes.numel() and not _near(float(sizes.max()), eps, 1e-5):
        raise ExerciseError(f"every pixel moved by {float(sizes.max()):.4g} instead of ε = {eps:g}; {found}")
    agree = (step.sign() == g.sign())[moved & (g != 0)]
    share = float(agree.double().mean()) if agree.numel() else 0.0
    raise ExerciseError(
        f"x_adv − x has the sign of ∇ₓL in only {100 * share:.0f}% of the pixels that moved: take the gradient of "
        f"the cross-entropy of the true labels y with respect to the input x (not of the logits, nor of the "
        f"predicted labels); {found}")


def _targeted_reference(model, x, target, eps, alpha, steps):
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), target), adv)
        adv = adv.detach() - alpha * grad.sign()
        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)
    return adv


def check_targeted_attack(fn, *, eps: float = 0.2, alpha: float = 0.02, steps: int = 20, seed: int = 0) -> str:
    """Check your targeted PGD ``fn(model, x, target, eps=, alpha=, steps=)`` (``ex-02-targeted``).

    A targeted attack *descends* the loss of the target class t: x ← Π(x − α·sign ∇ₓ CE(f(x), t)),
    with Π the projection onto the ε-ball around x and the pixel box [0, 1]. The check runs it on a
    tiny model with target 0 and verifies that the result stays in the ε-ball and in the box, that
    the target's loss went down, and that it reaches the target about as often as the reference.
    """
    model, x, _ = _tiny_problem(seed)
    target = torch.zeros(len(x), dtype=torch.long)
    out = _attack(fn, model, x, target, eps=eps, alpha=alpha, steps=steps)
    distance = float((out - x).abs().max())
    if distance > eps + 1e-6:
        raise ExerciseError(f"x_adv leaves the ε-ball: max |x_adv − x| = {distance:.4g} > ε = {eps:g}; after every "
                            "step project with x + (adv − x).clamp(−ε, ε)")
    if float(out.min()) < -1e-6 or float(out.max()) > 1 + 1e-6:
        raise ExerciseError(f"x_adv leaves the pixel box: values in [{float(out.min()):.3g}, {float(out.max()):.3g}]; "
                            "clamp to [0, 1] after the projection")
    reference = _targeted_reference(model, x, target, eps, alpha, steps)
    with torch.no_grad():
        before = float(F.cross_entropy(model(x), target))
        after = float(F.cross_entropy(model(out), target))
        hit = float((model(out).argmax(1) == target).double().mean())
        hit_reference = float((model(reference).argmax(1) == target).double().mean())
    if after >= before:
        raise ExerciseError(
            f"the loss of the target class went up, from {before:.4g} to {after:.4g}: a targeted attack steps "
            "*against* the gradient of the target's loss (adv − α·sign ∇), the opposite of untargeted PGD")
    if hit < hit_reference - 0.1:
        raise ExerciseError(f"only {100 * hit:.0f}% of the inputs reach the target class, the reference reaches "
                            f"{100 * hit_reference:.0f}%: check the step size α, the number of steps and that you "
                            "recompute the gradient at every step")
    exact = float((out - reference).abs().max()) <= 1e-6
    return (f"targeted attack correct: {100 * hit:.0f}% reach the target (reference {100 * hit_reference:.0f}%), "
            f"target loss {before:.3g} → {after:.3g}" + (", identical to the reference" if exact else ""))


def check_random_sign_attack(fn, *, eps: float = 0.2, seed: int = 0) -> str:
    """Check the random-sign attack of ``ex-02-random``: ``fn(model, x, y, eps=eps)``.

    The attack is x + ε·s, clamped to [0, 1], with s_i = ±1 drawn at random, independently of the
    network (Chapter 2). The check runs it on a tiny model and verifies that every pixel that can
    move by ε does so, that the result stays in the pixel box, that the signs are balanced, and
    that they do not follow the gradient (which would make it FGSM). It names the usual mistakes:
    uniform noise instead of signs, a missing clamp, one sign for every pixel, the gradient's sign.
    """
    model, x, y = _tiny_problem(seed, n=64)
    out = _attack(fn, model, x, y, eps=eps)
    if float(out.min()) < -1e-6 or float(out.max()) > 1 + 1e-6:
        raise ExerciseError(f"x_adv leaves the pixel box: values in [{float(out.min()):.3g}, {float(out.max()):.3g}]; "
                            "clamp the result to [0, 1]")
    step = out - x
    if float(step.abs().max()) > eps + 1e-6:
        raise ExerciseError(f"a pixel moved by {float(step.abs().max()):.3g} > ε = {eps:g}: the step is ε·s with s_i = ±1")
    free = (x >= eps) & (x <= 1 - eps)   # pixels that can move by ε either way without clamping
    sizes = step.abs()[free]
    if float(sizes.min()) < eps - 1e-6:
        share = float((sizes < eps - 1e-6).double().mean())
        raise ExerciseError(
            f"{100 * share:.0f}% of the pixels that could move by ε moved less: the attack adds ε·s with every "
            "s_i = +1 or −1 (torch.randint(0, 2, ...) * 2 − 1), not uniform noise in [−ε, ε]")
    signs = step.sign()[free]
    plus = float((signs > 0).double().mean())
    if not 0.35 <= plus <= 0.65:
        raise ExerciseError(f"{100 * plus:.0f}% of the signs are +1: draw each s_i = ±1 with probability ½, "
                            "independently")
    g = attacks.input_gradient(model, x, y).sign()[free]
    agree = float((signs == g).double().mean())
    if agree > 0.65:
        raise ExerciseError(f"{100 * agree:.0f}% of the signs agree with the gradient's: that is FGSM. The random "
                            "attack draws its signs without looking at the network")
    return (f"random-sign attack correct: every free pixel moved by ±ε = {eps:g}, {100 * plus:.0f}% of the signs "
            f"are +1, and {100 * agree:.0f}% agree with the gradient's sign (about 50% for random signs)")


# ---------------------------------------------------------------------------------------------
# Chapter 3: the attack field
# ---------------------------------------------------------------------------------------------


def check_attack_field(grad, model, x, label: int) -> str:
    """Check ∇ψ_Y at the points ``x`` (``ex-03-fgsm``) against the gradient of the loss of ``label``.

    ψ_Y = l_Y/N_Y, so the attack field is ∇l_Y divided by a positive constant: any positive overall
    factor (1/N_Y, or 1/n from a mean loss) is accepted. ``grad`` has the shape of ``x`` (n, ...).
    The check names a reversed sign (the gradient of log p_Y instead of the loss), the field of
    another class, and gradients that mix samples.
    """
    grad = torch.as_tensor(grad).detach()
    if grad.shape != x.shape:
        raise ExerciseError(f"the attack field must have the shape of x, {tuple(x.shape)}, got {tuple(grad.shape)}")
    labels = torch.full((len(x),), int(label), dtype=torch.long)
    reference = attacks.input_gradient(model, x, labels).to(torch.float64)
    grad = grad.to(torch.float64)
    scale = float((grad * reference).sum() / (reference * reference).sum())
    residual = float((grad - scale * reference).norm() / max(float(grad.norm()), 1e-300))
    if residual < 1e-4 and scale > 0:
        return f"attack field correct: ∇l_{label} times the positive factor {scale:.4g}, the same direction"
    if residual < 1e-4 and scale < 0:
        raise ExerciseError(
            f"the field points the wrong way (it is {scale:.4g} × ∇l_{label}): ∇ψ_Y points where the loss of Y "
            "*rises*; did you differentiate log p_Y, or −l_Y?")
    with torch.no_grad():
        classes = model(x[:1]).shape[-1]
    for other in range(classes):
        if other == int(label):
            continue
        g_other = attacks.input_gradient(model, x, torch.full_like(labels, other)).to(torch.float64)
        c = float((grad * g_other).sum() / (g_other * g_other).sum())
        if c > 0 and float((grad - c * g_other).norm() / max(float(grad.norm()), 1e-300)) < 1e-4:
            raise ExerciseError(f"this is the attack field of class {other}, not of class {label}")
    per_sample = (grad.flatten(1) * reference.flatten(1)).sum(1) / (reference.flatten(1) ** 2).sum(1).clamp_min(1e-300)
    fitted = per_sample.view(-1, *[1] * (grad.dim() - 1)) * reference
    if float((grad - fitted).norm() / max(float(grad.norm()), 1e-300)) < 1e-4 and bool((per_sample > 0).all()):
        raise ExerciseError("each sample's gradient has the right direction but its own scale: ψ_Y divides the "
                            "loss by one constant N_Y for all points, so the field must be ∇l_Y times one factor")
    raise ExerciseError(f"the field differs from ∇l_{label} (relative residual {residual:.3g} after the best "
                        "overall factor): differentiate the per-sample loss CE(model(x), Y) with respect to x, "
                        "with the model in eval mode so that the samples do not interact")


# ---------------------------------------------------------------------------------------------
# Chapter 4: moments and the boundary term on a box
# ---------------------------------------------------------------------------------------------


def check_boundary_term(boundary, amplitude, *, low: float = 0.0, high: float = 1.0, mean_x=None, dx=None,
                        mean_p=None, dp=None, points: int = 400) -> str:
    """Check B (and optionally ⟨x⟩, Δx, ⟨p⟩, Δp) of a 1-D ψ ∝ ``amplitude`` on [low, high] (Chapter 4).

    B = (b − ⟨x⟩)ψ(b)² + (⟨x⟩ − a)ψ(a)² for the normalised ψ on [a, b], and ⟨p⟩ = ½(ψ(b)² − ψ(a)²)
    (``ex-04-linear``, ``ex-04-equality``). The reference is :func:`qnnlib.uncertainty.grid_moments`
    with ``points`` Gauss nodes. ``amplitude`` maps X of shape (n, 1) to (n,) values, as in
    ``grid_moments``; for ψ ∝ x, ``lambda X: X[:, 0]``.

    The messages name the usual slips: ψ² on the faces summed without the weights b − ⟨x⟩ and
    ⟨x⟩ − a, a minus sign on the lower face, the centre of the box used for ⟨x⟩, an unnormalised ψ,
    the bound ``|1 − B|/2`` given for B, and a Δp that still contains ⟨p⟩.
    """
    boundary = _number("boundary", boundary)
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"need low < high, got [{low}, {high}]")
    m = grid_moments(amplitude, (1,), points_per_dim=points, low=low, high=high)
    true = {"B": float(m.boundary), "⟨x⟩": float(m.mean_x), "Δx": float(m.dx), "⟨p⟩": float(m.mean_p),
            "Δp": float(m.dp)}
    nodes, weights = quadrature_nodes(points, low, high)
    with torch.no_grad():
        norm2 = float((weights * amplitude(nodes.unsqueeze(1)).double() ** 2).sum())
        face_low, face_high = (float(amplitude(torch.tensor([[v]], dtype=torch.float64)).double()[0]) ** 2 / norm2
                               for v in (low, high))
    mx, tol = true["⟨x⟩"], 1e-4
    problems = []

    def same(value, target):
        return abs(value - target) <= tol * max(1.0, abs(target))

    if not same(boundary, true["B"]):
        centre = (low + high) / 2
        candidates = [
            (face_low + face_high, "you summed ψ² on the two faces; each face is weighted by its distance to "
                                   "⟨x⟩: B = (b − ⟨x⟩)ψ(b)² + (⟨x⟩ − a)ψ(a)²"),
            ((high - mx) * face_high - (mx - low) * face_low,
             "the lower face has the wrong sign: its outward normal is −1 and x − ⟨x⟩ < 0 there, so it adds "
             "(⟨x⟩ − a)ψ(a)² ≥ 0; B is never negative"),
            ((high - centre) * face_high + (centre - low) * face_low,
             f"you centred at the middle of the box; B uses the mean ⟨x⟩ = {mx:.6g}"),
            (true["B"] * norm2, "ψ is not normalised: divide ψ² by ∫ψ² dx"),
            (abs(1 - true["B"]) / 2, "that is the bound |1 − B|/2, not B"),
            (1 - true["B"], "that is 1 − B, not B"),
        ]
        reason = next((text for value, text in candidates if same(boundary, value)), None)
        problems.append(f"B = {boundary:.6g}, but the reference gives {true['B']:.6g}" + (f": {reason}" if reason else ""))
    for name, value in (("⟨x⟩", mean_x), ("Δx", dx), ("⟨p⟩", mean_p), ("Δp", dp)):
        if value is None:
            continue
        value = _number(name, value)
        if same(value, true[name]):
            continue
        text = f"{name} = {value:.6g}, but the reference gives {true[name]:.6g}"
        if name == "⟨p⟩" and same(value, -true[name]):
            text += ": wrong sign, ⟨p⟩ = ½(ψ(b)² − ψ(a)²) is positive when ψ is larger on the upper face"
        elif name == "Δp" and same(value, math.hypot(true["Δp"], true["⟨p⟩"])):
            text += ": that is √⟨p²⟩; on a box ⟨p⟩ ≠ 0, subtract ⟨p⟩² before the square root"
        elif name in ("Δx", "Δp") and same(value, true[name] ** 2):
            text += f": that is the variance {name}²; take its square root"
        problems.append(text)
    if problems:
        raise ExerciseError("; ".join(problems))
    return (f"boundary term correct: B = {boundary:.6g}, bound |1 − B|/2 = {abs(1 - boundary) / 2:.6g}, "
            f"Δx·Δp = {true['Δx'] * true['Δp']:.6g}")


# ---------------------------------------------------------------------------------------------
# Chapter 6: the flat-ψ value of the aggregate Δx
# ---------------------------------------------------------------------------------------------


def check_flat_dx(dx, *, dims: int = 784, form: str = "paper", rtol: float = 1e-3) -> str:
    """Check the aggregate Δx of a constant ψ on [0, 1]^M (``ex-06-flat``).

    Every coordinate has Δx_i = 1/√12, so the paper's form is Δx = (Σ_i Δx_i)^{1/2} = (M/√12)^{1/2}
    and the root-sum-square form (Σ_i Δx_i²)^{1/2} = (M/12)^{1/2}. ``dims`` is M (784 for MNIST).
    The messages recognise one coordinate's value, a missing square root and the other form.
    """
    if form not in ("paper", "rss"):
        raise ValueError(f"form must be 'paper' or 'rss', got {form!r}")
    if isinstance(dims, bool) or not isinstance(dims, int) or dims < 1:
        raise ValueError(f"dims must be an integer ≥ 1, got {dims!r}")
    dx = _number("dx", dx)
    paper, rss = math.sqrt(dims / math.sqrt(12)), math.sqrt(dims / 12)
    true, other = (paper, rss) if form == "paper" else (rss, paper)
    if _near(dx, true, rtol):
        return f"flat-ψ Δx correct ({form} form, M = {dims}): {dx:.6g}"
    candidates = [
        (1 / math.sqrt(12), "that is Δx_i of a single coordinate, 1/√12; the aggregate combines all M of them"),
        (dims / math.sqrt(12) if form == "paper" else dims / 12,
         "the square root is missing: the aggregate is the square root of the sum"),
        (other, f"that is the {'root-sum-square' if form == 'paper' else 'paper'} form; the "
                f"{'paper' if form == 'paper' else 'root-sum-square'} form is "
                + ("(Σ_i Δx_i)^{1/2}" if form == "paper" else "(Σ_i Δx_i²)^{1/2}")),
        (1 / 12, "that is the variance of one coordinate, 1/12; Δx_i is its square root"),
    ]
    reason = next((text for value, text in candidates if _near(dx, value, rtol)), None)
    raise ExerciseError(f"Δx = {dx:.6g}, but a constant ψ on [0, 1]^{dims} gives {true:.6g} ({form} form)"
                        + (f": {reason}" if reason else ""))


# ---------------------------------------------------------------------------------------------
# Chapter 10: the minimal adversarial ε of a linear classifier, rank correlations
# ---------------------------------------------------------------------------------------------


def _linear_min_eps(w: np.ndarray, b: float, x0: np.ndarray) -> float:
    """Exact minimal L∞ radius that moves s(x) = w·x + b to 0 without leaving [0, 1]^M.

    Coordinate i can lower |s| by |w_i|·min(ε, room_i), room_i being its distance to the face it
    must move towards; the total is piecewise linear and increasing in ε, so the root is found
    between consecutive sorted rooms. inf when even the whole cube cannot reach s = 0.
    """
    score = float(w @ x0 + b)
    direction = -np.sign(score) * np.sign(w)                  # which way each coordinate must move
    room = np.where(direction > 0, 1.0 - x0, x0)
    weight = np.abs(w) * (direction != 0)
    need = abs(score)
    if need == 0:
        return 0.0
    order = np.argsort(room)
    room, weight = room[order], weight[order]
    done, slope, last = 0.0, weight.sum(), 0.0               # Σ|w_i|min(ε, room_i) at ε = last, its slope
    for r, wi in zip(room, weight):
        if done + slope * (r - last) >= need:
            break
        done, slope, last = done + slope * (r - last), slope - wi, r
    else:
        return math.inf
    return last + (need - done) / slope


def check_linear_min_eps(eps, w, b, x0, *, rtol: float = 1e-6) -> str:
    """Check the minimal L∞ adversarial radius of the linear classifier s(x) = w·x + b at ``x0`` (``ex-10-linear``).

    The classifier predicts class 1 where s > 0 and class 0 elsewhere; ε* is the smallest ε such
    that some x in the L∞ ball of radius ε around x₀, inside the pixel cube [0, 1]^M, has s(x) = 0.
    Inside the cube (no face reached) ε* is the absolute score over ‖w‖₁, the dual norm of L∞; near a face the
    coordinates that hit it stop helping, and ε* is larger. The messages recognise the formula
    without the cube, the L2 and L∞ norms in place of L1, and a signed score.
    """
    w = np.asarray(w, dtype=np.float64).ravel()
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    if w.shape != x0.shape:
        raise ValueError(f"w and x0 must have the same number of entries, got {w.size} and {x0.size}")
    if x0.min() < 0 or x0.max() > 1:
        raise ValueError("x0 must lie in the pixel cube [0, 1]^M")
    eps = float(eps) if eps == math.inf else _number("eps", eps)
    score = float(w @ x0 + b)
    true = _linear_min_eps(w, float(b), x0)
    if math.isinf(true) or math.isinf(eps):
        if math.isinf(true) and math.isinf(eps):
            return "minimal ε correct: no point of the cube changes the class (ε* = inf)"
        raise ExerciseError(f"ε* = {eps:.6g}, but the reference gives {true:.6g}" + (
            ": even the farthest point of the cube keeps the class, so no radius succeeds" if math.isinf(true) else ""))
    if _near(eps, true, rtol):
        return f"minimal ε correct: {eps:.6g}" + (" (the cube's faces matter here)" if not _near(
            true, abs(score) / np.abs(w).sum(), rtol) else "")
    candidates = [
        (abs(score) / np.abs(w).sum(), "that is |s(x₀)|/‖w‖₁ without the cube: coordinates already at the face "
                                       "they must move towards cannot move, so ε* is larger here"),
        (abs(score) / np.linalg.norm(w),
         "you divided by the L2 norm of w; an L∞ ball is measured by the dual, L1, norm"),
        (abs(score) / np.abs(w).max(), "you divided by max|w_i|; an L∞ ball is measured by the dual, L1, norm"),
        (score / np.abs(w).sum(), "the score s(x₀) is negative here: ε* uses its absolute value"),
    ]
    reason = next((text for value, text in candidates if _near(eps, value, rtol)), None)
    raise ExerciseError(f"ε* = {eps:.6g}, but the reference gives {true:.6g}" + (f": {reason}" if reason else ""))


def check_rank_correlation(rho, x, y, *, rtol: float = 1e-6) -> str:
    """Check a Spearman rank correlation ρ of paired samples ``x``, ``y`` (``ex-10-quotient``).

    The reference is ``scipy.stats.spearmanr`` on the pairs without NaN (an infinite value
    is a valid, largest rank). The messages recognise Pearson's r in place of Spearman's ρ (of
    the values or of their logarithms) and a flipped sign.
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if x.size < 3:
        raise ValueError(f"need at least 3 pairs without NaN, got {x.size}")
    rho = _number("rho", rho)
    true = float(stats.spearmanr(x, y).statistic)
    if abs(rho - true) <= rtol * max(1.0, abs(true)):
        return f"rank correlation correct: ρ = {rho:+.4f} over {x.size} pairs"
    finite = np.isfinite(x) & np.isfinite(y)
    candidates = [(-true, "the sign is flipped: check which quantity is x and which is y, and the order of the ranks")]
    if finite.sum() >= 3:
        candidates.append((float(np.corrcoef(x[finite], y[finite])[0, 1]),
                           "that is Pearson's r of the values; Spearman's ρ correlates their ranks"))
        positive = finite & (x > 0) & (y > 0)
        if positive.sum() >= 3:
            candidates.append((float(np.corrcoef(np.log(x[positive]), np.log(y[positive]))[0, 1]),
                               "that is Pearson's r of the logarithms; Spearman's ρ correlates the ranks"))
    reason = next((text for value, text in candidates if abs(rho - value) <= 1e-6 * max(1.0, abs(value))), None)
    raise ExerciseError(f"ρ = {rho:+.6g}, but the reference gives {true:+.6g}" + (f": {reason}" if reason else ""))
