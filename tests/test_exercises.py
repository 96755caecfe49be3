"""Tests for qnnlib.exercises: right answers pass, the usual wrong answers get their own message.

The right answers are the book's own solutions (the code of the solution dropdowns, or their closed
forms); each wrong answer is one typical slip, and the test checks that the message names it.
"""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from qnnlib import attacks, exercises, quantum
from qnnlib.exercises import (
    CHECKS,
    ExerciseError,
    check_attack_field,
    check_boundary_term,
    check_flat_dx,
    check_fgsm,
    check_random_sign_attack,
    check_spreads,
    check_targeted_attack,
)
from qnnlib.toy import make_toy_data, toy_classifier, train_toy
from qnnlib.uncertainty import neural_amplitude

# --- Chapter 1: spreads ----------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_spreads_closed_form_of_the_gaussian_passes(sigma):
    assert "correct" in check_spreads(sigma, 1 / (2 * sigma), "gaussian", width=sigma)


def test_spreads_computed_on_a_grid_pass():
    # quantum.spreads on the chapter's fast grid: the tent is off by ~1e-3 (kinks cost O(h)),
    # inside the default rtol of 5e-3; the moving sech packet is exact to ~1e-6.
    x = np.linspace(-20, 20, 2001)
    a = 1.5
    tent = quantum.spreads(x, np.clip(1 - np.abs(x) / a, 0, None))
    assert "correct" in check_spreads(tent.dx, tent.dp, "tent", width=a)
    moving = quantum.spreads(x, quantum.sech_packet(x, width=1.0, k0=3.0))
    assert "correct" in check_spreads(moving.dx, moving.dp, "sech", width=1.0, k0=3.0, mean_p=moving.mean_p)


def test_spreads_variance_instead_of_spread_is_named():
    with pytest.raises(ExerciseError, match=r"Δx = 4 is the variance Δx²"):
        check_spreads(4.0, 0.25, "gaussian", width=2.0)


def test_spreads_factor_two_in_the_gaussian_exponent_is_named():
    with pytest.raises(ExerciseError, match=r"Δp = 0.5, but the closed form gives 0.25 \(yours is 2 times it.*exponent"):
        check_spreads(2.0, 0.5, "gaussian", width=2.0)


def test_spreads_mean_momentum_left_in_dp_is_named():
    with pytest.raises(ExerciseError, match=r"√⟨p²⟩: subtract ⟨p⟩² = k₀²"):
        check_spreads(1.0, math.hypot(math.pi / 6, 3.0), "sech", width=1.0, k0=3.0)


def test_spreads_wrong_sign_of_mean_momentum_is_named():
    with pytest.raises(ExerciseError, match=r"⟨p⟩ = -3 has the wrong sign"):
        check_spreads(1.0, math.pi / 6, "sech", width=1.0, k0=3.0, mean_p=-3.0)


def test_spreads_below_heisenberg_is_called_impossible():
    with pytest.raises(ExerciseError, match=r"below 1/2, which no wave function on the real line"):
        check_spreads(0.1, math.sqrt(3), "tent", width=1.0)


def test_spreads_reject_bad_arguments():
    with pytest.raises(ValueError, match="shape must be one of"):
        check_spreads(1.0, 0.5, "square", width=1.0)
    with pytest.raises(ExerciseError, match="positive number"):
        check_spreads(-1.0, 0.5, "gaussian", width=1.0)
    with pytest.raises(ExerciseError, match="must be a number"):
        check_spreads("one", 0.5, "gaussian", width=1.0)


# --- Chapter 2: FGSM and the targeted attack ---------------------------------------------------


def _fgsm(sign=1.0, clamp=True, use_sign=True, scale=1.0, loss="ce"):
    """An FGSM written as in Chapter 2, with one slip switched on by the arguments."""

    def attack(model, x, y, eps):
        x = x.clone().requires_grad_(True)
        objective = F.cross_entropy(model(x), y) if loss == "ce" else model(x).sum()
        (grad,) = torch.autograd.grad(objective, x)
        step = grad.sign() if use_sign else grad
        adv = x + sign * scale * eps * step
        return (adv.clamp(0, 1) if clamp else adv).detach()

    return attack


def test_fgsm_chapter_two_version_passes():
    assert "matches qnnlib.attacks.fgsm" in check_fgsm(_fgsm())


def test_fgsm_summed_loss_passes_because_the_sign_is_the_same():
    def summed(model, x, y, eps):
        x = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
        return (x + eps * grad.sign()).clamp(0, 1).detach()

    assert "correct" in check_fgsm(summed, eps=0.05)


@pytest.mark.parametrize("slip, message", [
    (dict(sign=-1.0), r"goes down the loss: x − ε·sign"),
    (dict(clamp=False), r"leaves the pixel box.*\(the step itself is right\)"),
    (dict(use_sign=False), r"moved by different amounts.*not by the gradient itself"),
    (dict(scale=0.5), r"every pixel moved by 0.05 instead of ε = 0.1"),
    (dict(loss="logits"), r"sign of ∇ₓL in only \d+% of the pixels"),
])
def test_fgsm_typical_slips_get_their_own_message(slip, message):
    with pytest.raises(ExerciseError, match=message) as error:
        check_fgsm(_fgsm(**slip), eps=0.1)
    assert "max deviation from qnnlib.attacks.fgsm" in str(error.value)


def test_fgsm_that_changes_its_input_in_place_is_caught():
    def in_place(model, x, y, eps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
        x.requires_grad_(False)
        return x.add_(eps * grad.sign()).clamp_(0, 1)

    with pytest.raises(ExerciseError, match="changed its input x in place"):
        check_fgsm(in_place)


def test_fgsm_errors_and_wrong_returns_are_reported():
    def unanswered(model, x, y, eps):
        raise NotImplementedError("Exercise ex-02: ...")   # a stub of the student edition

    with pytest.raises(ExerciseError, match="not done yet: Exercise ex-02"):
        check_fgsm(unanswered)
    with pytest.raises(ExerciseError, match="must return a tensor"):
        check_fgsm(lambda model, x, y, eps: None)
    with pytest.raises(ExerciseError, match="must have the shape of x"):
        check_fgsm(lambda model, x, y, eps: x.flatten(1))


def _random_sign(kind="signs", clamp=True):
    """The solution of ex-02-random, with one slip switched on by the arguments."""

    def random_sign_attack(model, x, y, *, eps, generator=None):
        generator = generator or torch.Generator().manual_seed(1)
        if kind == "signs":
            s = torch.randint(0, 2, x.shape, generator=generator) * 2.0 - 1
        elif kind == "uniform":
            s = torch.rand(x.shape, generator=generator) * 2 - 1
        elif kind == "plus":
            s = torch.ones_like(x)
        else:   # the gradient's sign: FGSM
            x_var = x.clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x_var), y), x_var)
            s = grad.sign()
        adv = x + eps * s
        return adv.clamp(0, 1) if clamp else adv

    return random_sign_attack


def test_random_sign_attack_solution_passes():
    assert "random-sign attack correct" in check_random_sign_attack(_random_sign())


@pytest.mark.parametrize("slip, message", [
    (dict(kind="uniform"), r"moved less: .* not uniform noise"),
    (dict(clamp=False), r"leaves the pixel box"),
    (dict(kind="plus"), r"100% of the signs are \+1"),
    (dict(kind="gradient"), r"agree with the gradient's: that is FGSM"),
])
def test_random_sign_attack_typical_slips_get_their_own_message(slip, message):
    with pytest.raises(ExerciseError, match=message):
        check_random_sign_attack(_random_sign(**slip))


def _targeted(sign=-1.0, project=True):
    """The solution of ex-02-targeted, with one slip switched on by the arguments."""

    def targeted_pgd(model, x, target, eps, alpha, steps):
        adv = x.clone()
        for _ in range(steps):
            adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), target), adv)
            adv = adv.detach() + sign * alpha * grad.sign()
            adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1) if project else adv.clamp(0, 1)
        return adv

    return targeted_pgd


def test_targeted_attack_solution_passes():
    assert "identical to the reference" in check_targeted_attack(_targeted())


def test_targeted_attack_climbing_the_target_loss_is_named():
    with pytest.raises(ExerciseError, match=r"loss of the target class went up.*\*against\*"):
        check_targeted_attack(_targeted(sign=+1.0))


def test_targeted_attack_without_projection_is_named():
    with pytest.raises(ExerciseError, match=r"leaves the ε-ball: max \|x_adv − x\| = 0.4 > ε = 0.2"):
        check_targeted_attack(_targeted(project=False))


def test_targeted_attack_that_barely_moves_is_named():
    with pytest.raises(ExerciseError, match=r"reach the target class, the reference reaches"):
        check_targeted_attack(lambda model, x, target, eps, alpha, steps: _targeted()(model, x, target, eps, alpha, 1))


# --- Chapter 3: the attack field ------------------------------------------------------------


@pytest.fixture(scope="module")
def toy():
    x, y = make_toy_data(30)
    x = x.double()
    model = toy_classifier().double()
    train_toy(model, x, y, steps=100)
    x0 = x[y == 0]
    points = x0.clone().requires_grad_(True)
    (g0,) = torch.autograd.grad(neural_amplitude(model, 0)(points).sum(), points)
    return model, x0, g0


def test_attack_field_any_positive_factor_passes(toy):
    model, x0, g0 = toy
    assert "correct" in check_attack_field(g0, model, x0, 0)
    assert "positive factor 0.05" in check_attack_field(g0 / 20, model, x0, 0)   # ψ = l/N: same direction


def test_attack_field_reversed_sign_is_named(toy):
    model, x0, g0 = toy
    with pytest.raises(ExerciseError, match="points the wrong way"):
        check_attack_field(-g0, model, x0, 0)


def test_attack_field_of_another_class_is_named(toy):
    model, x0, g0 = toy
    with pytest.raises(ExerciseError, match="attack field of class 0, not of class 2"):
        check_attack_field(g0, model, x0, 2)


def test_attack_field_with_per_sample_scales_is_named(toy):
    model, x0, g0 = toy
    with pytest.raises(ExerciseError, match="its own scale"):
        check_attack_field(g0 / g0.norm(dim=1, keepdim=True), model, x0, 0)


def test_attack_field_of_the_wrong_shape_is_rejected(toy):
    model, x0, g0 = toy
    with pytest.raises(ExerciseError, match="must have the shape of x"):
        check_attack_field(g0[:, :1], model, x0, 0)


# --- Chapter 4: the boundary term -------------------------------------------------------------

def test_boundary_term_of_the_linear_loss_passes_with_every_moment():
    # The closed forms of the solution of ex-04-linear.
    message = check_boundary_term(0.75, lambda X: X[:, 0], mean_x=0.75, dx=math.sqrt(3 / 80), mean_p=1.5,
                                  dp=math.sqrt(3) / 2)
    assert "B = 0.75" in message and "0.125" in message


def test_boundary_term_of_an_equality_profile_passes():
    # ex-04-equality: the constant has B = 1 exactly.
    assert "correct" in check_boundary_term(1.0, lambda X: torch.ones_like(X[:, 0]), dp=0.0)


# ψ ∝ x on [0, 1] (ex-04-linear): ψ = √3 x, ⟨x⟩ = ¾, B = ¾.
@pytest.mark.parametrize("wrong, message", [
    (3.0, r"summed ψ² on the two faces"),                 # ψ(1)² + ψ(0)² = 3 + 0
    (0.25, r"ψ is not normalised"),                       # (1 − ¾)·1² with ψ = x, ∫ψ² = 1/3
    (0.125, r"that is the bound \|1 − B\|/2, not B"),
    (1.5, r"centred at the middle of the box"),           # (1 − ½)·3
])
def test_boundary_term_typical_slips_get_their_own_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_boundary_term(wrong, lambda X: X[:, 0])


def test_boundary_term_lower_face_sign_is_named():
    # ψ ∝ 1 + x on [0, 1] is non-zero on both faces, so the sign of the lower-face term matters.
    amplitude = lambda X: 1 + X[:, 0]   # noqa: E731
    n2 = 7 / 3                           # ∫(1 + x)² dx
    mean_x = (1 / 2 + 2 / 3 + 1 / 4) / n2   # ∫x(1 + x)² dx / n2
    wrong = (1 - mean_x) * 4 / n2 - mean_x * 1 / n2
    with pytest.raises(ExerciseError, match="lower face has the wrong sign"):
        check_boundary_term(wrong, amplitude)


def test_boundary_term_dp_with_mean_momentum_left_in_is_named():
    with pytest.raises(ExerciseError, match=r"Δp = 1.73205.*that is √⟨p²⟩"):
        check_boundary_term(0.75, lambda X: X[:, 0], dp=math.sqrt(3))


def test_boundary_term_wrong_sign_of_mean_momentum_is_named():
    with pytest.raises(ExerciseError, match=r"⟨p⟩ = -1.5.*wrong sign"):
        check_boundary_term(0.75, lambda X: X[:, 0], mean_p=-1.5)


# --- Chapter 6: the flat-ψ value ------------------------------------------------------------


def test_flat_dx_both_forms_pass():
    assert "correct" in check_flat_dx(math.sqrt(784 / math.sqrt(12)))
    assert "correct" in check_flat_dx(math.sqrt(784 / 12), form="rss")
    assert "correct" in check_flat_dx(15.04, rtol=1e-3)   # the solution's rounded value


@pytest.mark.parametrize("wrong, message", [
    (1 / math.sqrt(12), r"Δx_i of a single coordinate"),
    (784 / math.sqrt(12), r"square root is missing"),
    (math.sqrt(784 / 12), r"that is the root-sum-square form"),
    (1 / 12, r"variance of one coordinate"),
])
def test_flat_dx_typical_slips_get_their_own_message(wrong, message):
    with pytest.raises(ExerciseError, match=message):
        check_flat_dx(wrong, dims=784)


def test_flat_dx_unrecognised_answer_still_says_what_was_expected():
    with pytest.raises(ExerciseError, match=r"Δx = 3, but a constant ψ on \[0, 1\]\^784 gives 15.044"):
        check_flat_dx(3.0)


# --- the table of checks --------------------------------------------------------------------


def test_every_check_in_the_table_exists_and_belongs_to_a_real_exercise():
    book = Path(__file__).resolve().parents[1] / "book"
    labels = {label for path in book.glob("[0-9][0-9]_*.ipynb")
              for label in re.findall(r":label: (ex-[\w-]+)", path.read_text())}
    for label, name in CHECKS.items():
        assert callable(getattr(exercises, name, None)), name
        assert label in labels, f"{label} is not an exercise of the book"


# --- Chapter 10 -----------------------------------------------------------------------------


def test_linear_min_eps_inside_the_cube_is_the_score_over_the_l1_norm_and_attacks_agree():
    w, b, x0 = np.array([0.5, -1.0, 2.0]), 0.3, np.full(3, 0.5)
    exact = abs(w @ x0 + b) / np.abs(w).sum()
    assert "correct" in exercises.check_linear_min_eps(exact, w, b, x0)
    # the library's bisection over PGD on the same classifier agrees (an independent route)
    model = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        model.weight[:] = torch.tensor(np.stack([np.zeros(3), w]))
        model.bias[:] = torch.tensor([0.0, b])
    x = torch.tensor(x0)[None]
    y = model(x).argmax(1)
    found = attacks.minimal_eps(model, x, y, eps_max=0.5, tol=1e-6, steps=50)["eps"][0]
    assert found == pytest.approx(exact, rel=1e-3)


def test_linear_min_eps_near_a_face_is_larger_than_the_formula_and_matches_a_brute_force():
    w, b = np.array([1.0, 1.0, 0.2]), -0.2
    x0 = np.array([0.02, 0.9, 0.5])                        # s = 0.82; the first coordinate hits 0 at ε = 0.02
    true = exercises._linear_min_eps(w, b, x0)
    naive = abs(w @ x0 + b) / np.abs(w).sum()
    assert true > naive * 1.01
    # brute force: the best point of the box at radius ε is a vertex, moved against the gradient
    for eps in (true * 0.999, true * 1.001):
        best = np.clip(x0 - eps * np.sign(w), 0, 1)
        assert (w @ best + b > 0) == (eps < true)
    assert "correct" in exercises.check_linear_min_eps(true, w, b, x0)
    with pytest.raises(ExerciseError, match="without the cube"):
        exercises.check_linear_min_eps(naive, w, b, x0)


@pytest.mark.parametrize("wrong, message", [
    (lambda s, w: abs(s) / np.linalg.norm(w), "L2 norm"),
    (lambda s, w: abs(s) / np.abs(w).max(), r"max\|w_i\|"),
    (lambda s, w: s / np.abs(w).sum(), "absolute value"),
])
def test_linear_min_eps_typical_slips_get_their_own_message(wrong, message):
    w, b, x0 = np.array([0.5, -1.0, 2.0]), -2.0, np.full(3, 0.5)     # s = −1.25 < 0
    with pytest.raises(ExerciseError, match=message):
        exercises.check_linear_min_eps(wrong(w @ x0 + b, w), w, b, x0)


def test_linear_min_eps_out_of_reach_is_infinite():
    w, b, x0 = np.array([1.0, 1.0]), 5.0, np.array([0.5, 0.5])      # s ≥ 5 on the whole cube
    assert "correct" in exercises.check_linear_min_eps(math.inf, w, b, x0)
    with pytest.raises(ExerciseError):
        exercises.check_linear_min_eps(3.0, w, b, x0)


def test_rank_correlation_passes_spearman_and_names_pearson_and_the_sign():
    rng = np.random.default_rng(1)
    x = rng.lognormal(size=50)
    y = x**3 + rng.normal(scale=0.5, size=50)
    rho = scipy.stats.spearmanr(x, y).statistic
    assert "correct" in exercises.check_rank_correlation(rho, x, y)
    with pytest.raises(ExerciseError, match="Pearson's r of the values"):
        exercises.check_rank_correlation(np.corrcoef(x, y)[0, 1], x, y)
    with pytest.raises(ExerciseError, match="sign is flipped"):
        exercises.check_rank_correlation(-rho, x, y)


def test_exponential_profile_has_no_momentum_spread_and_a_unit_boundary_term():
    """ex-10-exponential: ψ ∝ e^{−a x} on [0, h] has ∂ψ = −aψ, so Δp = 0, ⟨p⟩ = −a and B = 1 exactly."""
    a, h = 3.0, 0.2
    assert "correct" in exercises.check_boundary_term(1.0, lambda X: torch.exp(-a * X[:, 0]), low=0.0, high=h,
                                                      mean_p=-a, dp=0.0)
