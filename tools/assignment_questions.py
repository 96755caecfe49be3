"""The auto-graded questions of the chapter assignments: what to define, solutions, tests, points.

Read by ``tools/assignments.py``, which turns each chapter's exercises into an otter-grader
assignment. The exercise statements come from the chapter notebooks (the ``exercise`` directive
named by ``label``); this file adds only what a grader needs and a chapter does not have: the
function the student defines (so that hidden tests can call it with arguments the student never
saw), a reference solution, a plausible wrong answer (used by tests/test_assignments.py and quoted
in book/teaching.md), and the tests.

Public tests run in the student's notebook (``grader.check``) and call the checks of
:mod:`qnnlib.exercises`, whose messages say what is wrong. Hidden tests run only when the teacher
grades; they call the same checks at other arguments, so a hard-coded answer fails them. Every
test case is worth ``points`` (one by default). Tests are one statement each with no output
(``_ = ...`` or ``assert ...``): otter compares printed output otherwise, and NumPy 2 prints
scalars as ``np.float64(...)``.

Hidden tests are not secret from anyone who reads this public repository: a teacher who needs
secrecy changes the arguments of the hidden tests in a private copy (book/teaching.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Imports every assignment notebook runs first (the Colab install cell comes before them).
SETUP = """\
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qnnlib import attacks, exercises, quantum
from qnnlib.uncertainty import grid_moments"""


@dataclass(frozen=True)
class Question:
    label: str            # the chapter's exercise label; also the question's name and CSV column
    signature: str        # "name(args)": the function the student writes
    doc: str              # its docstring: what it returns
    task: str             # markdown: what to write, below the exercise statement
    solution: str         # the body of the reference solution (indented 4 spaces)
    wrong: str            # the body of a plausible wrong answer (same indentation)
    public: list[str]     # statements of the public test
    hidden: list[list[str]] = field(default_factory=list)   # hidden test cases, one point each
    setup: str = ""       # extra code run before the question (fixtures it refers to)

    @property
    def name(self) -> str:
        return self.signature.split("(")[0]

    @property
    def points(self) -> int:
        return 1 + len(self.hidden)

    def function(self, body: str) -> str:
        return f'def {self.signature}:\n    """{self.doc}"""\n{body}'


QUESTIONS: dict[str, list[Question]] = {
    "01_heisenberg": [
        Question(
            "ex-01-gaussian", "gaussian_spreads(sigma)",
            "Return (Δx, Δp) of ψ(x) ∝ exp(−x²/(4σ²)) for σ = sigma.",
            "Write `gaussian_spreads(sigma)`: the closed forms you derived, or a grid computation "
            "with `quantum.spreads`.",
            "    return sigma, 1 / (2 * sigma)\n",
            "    return sigma ** 2, 1 / (2 * sigma)   # the variance, not the spread\n",
            ['_ = exercises.check_spreads(*gaussian_spreads(1.0), "gaussian", width=1.0)'],
            [['_ = exercises.check_spreads(*gaussian_spreads(0.3), "gaussian", width=0.3)'],
             ['_ = exercises.check_spreads(*gaussian_spreads(2.5), "gaussian", width=2.5)']],
        ),
        Question(
            "ex-01-tent", "tent_spreads(a)",
            "Return (Δx, Δp) of the tent ψ(x) = max(0, 1 − |x|/a).",
            "Write `tent_spreads(a)` from your closed forms.",
            "    return a / math.sqrt(10), math.sqrt(3) / a\n",
            "    return a ** 2 / 10, math.sqrt(3) / a   # the variance a²/10 instead of its root\n",
            ['_ = exercises.check_spreads(*tent_spreads(1.0), "tent", width=1.0)'],
            [['_ = exercises.check_spreads(*tent_spreads(0.5), "tent", width=0.5)'],
             ['_ = exercises.check_spreads(*tent_spreads(3.0), "tent", width=3.0)']],
        ),
        Question(
            "ex-01-moving", "moving_spreads(k0)",
            "Return (⟨p⟩, Δx, Δp) of the sech packet of width 1 multiplied by exp(i·k0·x), "
            "computed with quantum.spreads on a grid.",
            "Write `moving_spreads(k0)`: build the packet with `quantum.sech_packet` on a grid "
            "(for instance `np.linspace(-20, 20, 4001)`) and measure it with `quantum.spreads`.",
            "    x = np.linspace(-20, 20, 4001)\n"
            "    s = quantum.spreads(x, quantum.sech_packet(x, width=1.0, k0=k0))\n"
            "    return s.mean_p.real, s.dx, s.dp\n",
            "    x = np.linspace(-20, 20, 4001)\n"
            "    s = quantum.spreads(x, quantum.sech_packet(x, width=1.0, k0=k0))\n"
            "    return s.mean_p.real, s.dx, math.hypot(s.dp, s.mean_p.real)   # √⟨p²⟩, ⟨p⟩ not removed\n",
            ['mean_p, dx, dp = moving_spreads(3.0)',
             '_ = exercises.check_spreads(dx, dp, "sech", width=1.0, k0=3.0, mean_p=mean_p)'],
            [['mean_p, dx, dp = moving_spreads(-2.0)',
              '_ = exercises.check_spreads(dx, dp, "sech", width=1.0, k0=-2.0, mean_p=mean_p)']],
        ),
    ],
    "02_conjugate_attacks": [
        Question(
            "ex-02-targeted", "targeted_pgd(model, x, target, eps, alpha, steps)",
            "Return the targeted PGD attack of x toward the classes `target` (same shape as x).",
            "Write `targeted_pgd(model, x, target, eps, alpha, steps)` (no random start). The check "
            "runs it on a small fixed network; you do not need MNIST here.",
            "    adv = x.clone()\n"
            "    for _ in range(steps):\n"
            "        adv.requires_grad_(True)\n"
            "        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), target), adv)\n"
            "        adv = adv.detach() - alpha * grad.sign()\n"
            "        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)\n"
            "    return adv\n",
            "    adv = x.clone()\n"
            "    for _ in range(steps):\n"
            "        adv.requires_grad_(True)\n"
            "        (grad,) = torch.autograd.grad(F.cross_entropy(model(adv), target), adv)\n"
            "        adv = adv.detach() + alpha * grad.sign()   # the untargeted sign\n"
            "        adv = (x + (adv - x).clamp(-eps, eps)).clamp(0, 1)\n"
            "    return adv\n",
            ['_ = exercises.check_targeted_attack(targeted_pgd)'],
            [['_ = exercises.check_targeted_attack(targeted_pgd, eps=0.1, alpha=0.01, steps=15, seed=3)'],
             ['_ = exercises.check_targeted_attack(targeted_pgd, eps=0.3, alpha=0.05, steps=10, seed=7)']],
        ),
    ],
    "03_neural_wave_function": [
        Question(
            "ex-03-fgsm", "attack_field(model, x, label)",
            "Return ∇ψ_label at the points x (n, 2): any positive multiple of the gradient of the "
            "loss of class `label`.",
            "Write `attack_field(model, x, label)`, the attack field whose sign FGSM follows. The "
            "cell above defines a small network `model` on the plane and points `x` to try it on.",
            "    X = x.clone().requires_grad_(True)\n"
            "    labels = torch.full((len(x),), label, dtype=torch.long)\n"
            "    loss = F.cross_entropy(model(X), labels, reduction='sum')\n"
            "    (grad,) = torch.autograd.grad(loss, X)\n"
            "    return grad\n",
            "    X = x.clone().requires_grad_(True)\n"
            "    labels = torch.full((len(x),), label, dtype=torch.long)\n"
            "    logp = -F.cross_entropy(model(X), labels, reduction='sum')   # log p_Y: the wrong sign\n"
            "    (grad,) = torch.autograd.grad(logp, X)\n"
            "    return grad\n",
            ['_ = exercises.check_attack_field(attack_field(model, x, 0), model, x, 0)'],
            [['_ = exercises.check_attack_field(attack_field(model, x, 2), model, x, 2)'],
             ['_ = exercises.check_attack_field(attack_field(model, x[:7], 1), model, x[:7], 1)']],
            setup="torch.manual_seed(0)\n"
                  "model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 3)).eval()\n"
                  "x = torch.rand(64, 2, generator=torch.Generator().manual_seed(1))",
        ),
    ],
    "04_derivation": [
        Question(
            "ex-04-linear", "linear_moments()",
            "Return a dict with keys 'mean_x', 'dx', 'mean_p', 'dp', 'B' for ψ ∝ x on [0, 1].",
            "Write `linear_moments()` returning your hand-computed values (exact expressions "
            "such as `math.sqrt(3 / 80)`).",
            "    return {'mean_x': 3 / 4, 'dx': math.sqrt(3 / 80), 'mean_p': 3 / 2,\n"
            "            'dp': math.sqrt(3) / 2, 'B': 3 / 4}\n",
            "    return {'mean_x': 3 / 4, 'dx': math.sqrt(3 / 80), 'mean_p': 3 / 2,\n"
            "            'dp': math.sqrt(3) / 2, 'B': 3.0}   # ψ(0)² + ψ(1)², the faces unweighted\n",
            ['m = linear_moments()',
             '_ = exercises.check_boundary_term(m["B"], lambda X: X[:, 0], mean_x=m["mean_x"], dx=m["dx"], '
             'mean_p=m["mean_p"], dp=m["dp"])'],
            [['m = linear_moments()',
              'assert abs(m["dx"] * m["dp"] - 3 / (8 * math.sqrt(5))) < 1e-6, "Δx·Δp is not 3/(8√5)"',
              'assert abs(abs(1 - m["B"]) / 2 - 1 / 8) < 1e-6, "the bound |1 − B|/2 is not 1/8"']],
        ),
        Question(
            "ex-04-equality", "box_moments(amplitude)",
            "Return (Δx, Δp, B) of the normalised ψ ∝ amplitude on [0, 1] (grid_moments).",
            "Write `box_moments(amplitude)` with `grid_moments(amplitude, (1,), points_per_dim=400)`; "
            "`amplitude` maps points of shape (n, 1) to n values. Try it on the upside-down Gaussian "
            "`lambda X: torch.exp((X[:, 0] - 0.5) ** 2)`: is Δx·Δp = |1 − B|/2, and is B > 1?",
            "    m = grid_moments(amplitude, (1,), points_per_dim=400)\n"
            "    return float(m.dx), float(m.dp), float(m.boundary)\n",
            "    m = grid_moments(amplitude, (1,), points_per_dim=400)\n"
            "    return float(m.dx), float(m.dp), abs(1 - float(m.boundary)) / 2   # the bound, not B\n",
            ['dx, dp, B = box_moments(lambda X: torch.exp((X[:, 0] - 0.5) ** 2))',
             '_ = exercises.check_boundary_term(B, lambda X: torch.exp((X[:, 0] - 0.5) ** 2), dx=dx, dp=dp)'],
            [['dx, dp, B = box_moments(lambda X: X[:, 0] ** 2)',
              '_ = exercises.check_boundary_term(B, lambda X: X[:, 0] ** 2, dx=dx, dp=dp)'],
             ['dx, dp, B = box_moments(lambda X: torch.exp(-(X[:, 0] - 0.4) ** 2 / 0.36))',
              'assert abs(dx * dp - abs(1 - B) / 2) < 1e-6, "a Gaussian on the box meets the bound with equality"']],
        ),
    ],
    "06_mnist": [
        Question(
            "ex-06-flat", "flat_dx(M)",
            "Return the paper's aggregate Δx = (Σ_i Δx_i)^(1/2) of a constant ψ on [0, 1]^M.",
            "Write `flat_dx(M)`.",
            "    return math.sqrt(M / math.sqrt(12))\n",
            "    return math.sqrt(M / 12)   # the root-sum-square form\n",
            ['_ = exercises.check_flat_dx(flat_dx(784), dims=784)'],
            [['_ = exercises.check_flat_dx(flat_dx(3072), dims=3072)'],
             ['_ = exercises.check_flat_dx(flat_dx(1), dims=1)']],
        ),
    ],
    "10_near_the_data": [
        Question(
            "ex-10-linear", "linear_min_eps(w, b, x0)",
            "Return the minimal L∞ radius ε* at which some image of the cube [0, 1]^M within ε of x0 has "
            "w·x + b = 0 (math.inf if none).",
            "Write `linear_min_eps(w, b, x0)` for NumPy arrays `w`, `x0` and a number `b`, cube faces included.",
            "    s = w @ x0 + b\n"
            "    room = np.where(-np.sign(s) * np.sign(w) > 0, 1 - x0, x0)\n"
            "    if np.sum(np.abs(w) * room) < abs(s):\n"
            "        return math.inf\n"
            "    lo, hi = 0.0, 1.0\n"
            "    for _ in range(60):\n"
            "        mid = (lo + hi) / 2\n"
            "        if np.sum(np.abs(w) * np.minimum(mid, room)) < abs(s):\n"
            "            lo = mid\n"
            "        else:\n"
            "            hi = mid\n"
            "    return hi\n",
            "    return abs(w @ x0 + b) / np.abs(w).sum()   # ignores the faces of the cube\n",
            ['_ = exercises.check_linear_min_eps(linear_min_eps(np.array([1.0, 1.0, 0.2]), -0.2, '
             'np.array([0.02, 0.9, 0.5])), np.array([1.0, 1.0, 0.2]), -0.2, np.array([0.02, 0.9, 0.5]))'],
            [['_ = exercises.check_linear_min_eps(linear_min_eps(W, 0.4, X0), W, 0.4, X0)'],
             ['_ = exercises.check_linear_min_eps(linear_min_eps(-W, -1.5, X1), -W, -1.5, X1)']],
            setup="W = np.array([0.5, -1.0, 2.0, 0.25])\nX0 = np.full(4, 0.5)\nX1 = np.array([0.0, 1.0, 0.95, 0.3])",
        ),
    ],
}
