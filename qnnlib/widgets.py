"""Thin ipywidgets wrappers around :mod:`qnnlib.plots`.

Widgets run in Jupyter and Colab (ipywidgets 8) but not in the static HTML book, so every
chapter that shows a widget also shows a static figure made by the same plotting function.
ipywidgets is imported inside each function, so importing qnnlib never needs it.

Static fallback: without ipywidgets each explorer warns and returns the static figure for its
default settings instead of the controls. With ipywidgets but no widget frontend (plain Python, a
static notebook render) the container is built as usual.

Each explorer draws into an ``Image`` widget (the figure as PNG bytes, then closed, so every
matplotlib backend works, Agg included), never into an ``Output`` widget: a notebook executed by
nbclient (a book build, nbval, the Colab check, otter's grading) imitates a frontend's Output
widget by sending messages to the kernel on the channel where it is waiting for the cell's reply,
and now and then that reply never arrives (jupyter/nbclient#312). A book build waited on Chapter
2's explorer that way for as long as it was left. An image is plain widget state.
"""

from __future__ import annotations

import warnings


def _ipywidgets():
    """The ipywidgets module, or None (with a warning) when it is not installed."""
    try:
        import ipywidgets
    except ImportError:
        warnings.warn("ipywidgets is not installed: showing a static figure instead of the controls "
                      "(pip install ipywidgets)", stacklevel=3)
        return None
    return ipywidgets


def _png(fig) -> bytes:
    """``fig`` as PNG bytes (the book's resolution), then closed: works with every backend."""
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _canvas(widgets):
    """An Image widget for the explorer's figure, scaled down to the width of the page if wider."""
    return widgets.Image(format="png", layout=widgets.Layout(max_width="100%", height="auto"))

# ---------------------------------------------------------------------------------------
# Chapter 1 — Heisenberg's relation
# ---------------------------------------------------------------------------------------


def packet_explorer(x):
    """Shape, width and wave-number controls → ψ, ``|φ(p)|²``, Δx, Δp and their product.

    A thin wrapper: :func:`qnnlib.quantum.make_packet`, :func:`~qnnlib.quantum.spreads`,
    :func:`~qnnlib.quantum.momentum_wavefunction` and :func:`qnnlib.plots.plot_packet`.
    Returns the ipywidgets container (display it in a notebook); without ipywidgets, the static
    figure of a Gaussian of width 1 and k₀ = 0.
    """
    from . import plots, quantum

    def figure(shape, width, k0):
        psi = quantum.make_packet(shape, x, width=width, k0=k0)
        p, phi = quantum.momentum_wavefunction(x, psi)
        return plots.plot_packet(x, psi, p, phi, quantum.spreads(x, psi))

    widgets = _ipywidgets()
    if widgets is None:
        return figure("gaussian", 1.0, 0.0)
    shape = widgets.Dropdown(options=sorted(quantum.PACKETS), value="gaussian", description="shape")
    width = widgets.FloatSlider(value=1.0, min=0.3, max=3.0, step=0.05, description="width Δx")
    k0 = widgets.FloatSlider(value=0.0, min=-5.0, max=5.0, step=0.25, description="k₀")
    canvas = _canvas(widgets)

    def redraw(*_):
        canvas.value = _png(figure(shape.value, width.value, k0.value))

    for control in (shape, width, k0):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([shape, width, k0]), canvas])


# ---------------------------------------------------------------------------------------
# Chapter 2 — Attacks are conjugate variables
# ---------------------------------------------------------------------------------------


def attack_explorer(model, x, y, *, eps_max=0.3, steps=10, classes=None, n=6):
    """An ε slider and an FGSM/PGD switch → the attacked inputs, their perturbations, predictions.

    A thin wrapper: :func:`qnnlib.attacks.fgsm` / :func:`~qnnlib.attacks.pgd` (α = ε/4, ``steps``
    steps, no random start so the picture does not flicker) and
    :func:`qnnlib.plots.plot_attack_examples` on the first ``n`` samples of ``x``.
    Returns the ipywidgets container (display it in a notebook); without ipywidgets, the static
    figure for PGD at ε = 0.1 (or ``eps_max`` if smaller).
    """
    import torch

    from . import _checks, attacks, plots
    from .models import evaluation

    eps_max = _checks.real(eps_max, "eps_max", low=0, low_open=True)
    steps = _checks.integer(steps, "steps", low=1)
    n = _checks.integer(n, "n", low=1)
    x, y = x[:n], y[:n]

    def figure(method, eps):
        if method == "FGSM":
            x_adv = attacks.fgsm(model, x, y, eps=eps)
        elif eps == 0:
            x_adv = x.clone()
        else:
            x_adv = attacks.pgd(model, x, y, eps=eps, alpha=eps / 4, steps=steps, random_start=False)
        with evaluation(model), torch.no_grad():
            pred_clean, pred_adv = model(x).argmax(1), model(x_adv).argmax(1)
        return plots.plot_attack_examples(x, x_adv, y, pred_clean, pred_adv, eps=eps or None, n=n, classes=classes)

    widgets = _ipywidgets()
    if widgets is None:
        return figure("PGD", min(0.1, eps_max))
    eps = widgets.FloatSlider(value=min(0.1, eps_max), min=0.0, max=eps_max, step=0.01, description="ε")
    method = widgets.ToggleButtons(options=["FGSM", "PGD"], value="PGD", description="attack")
    canvas = _canvas(widgets)

    def redraw(*_):
        canvas.value = _png(figure(method.value, eps.value))

    for control in (eps, method):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([method, eps]), canvas])


# ---------------------------------------------------------------------------------------
# Chapter 5 — Monte Carlo in 784 dimensions
# ---------------------------------------------------------------------------------------


def monte_carlo_figure(model, label, input_shape, *, n, sampler="uniform", seed=0, reference=None, title=None):
    """Δx and Δp (paper form) ± one standard error at N/8, N/4, N/2 and N points, for one sampler.

    A thin wrapper: :func:`qnnlib.uncertainty.neural_moments` of class ``label`` (independent
    points per N, seeds ``seed``, ``seed + 1``, …) and :func:`qnnlib.plots.plot_convergence_panels`.
    ``reference`` (optional) is the exact ``(Δx, Δp)``, e.g. from grid quadrature. Returns
    ``(axes, moments, rate)``: the axes, the :class:`~qnnlib.uncertainty.Moments` at N points and
    the samples per second of the whole run.
    """
    import time

    import torch

    from . import plots
    from .uncertainty import neural_moments

    ns = sorted({max(2, n // 8), max(2, n // 4), max(2, n // 2), n})
    start = time.perf_counter()
    runs = [neural_moments(model, label, input_shape, n_samples=k, sampler=sampler,
                           generator=torch.Generator().manual_seed(seed + j)) for j, k in enumerate(ns)]
    rate = sum(ns) / (time.perf_counter() - start)
    names = (r"$\Delta x$ (paper form)", r"$\Delta p$ (paper form)")
    values = [m.aggregate("paper") for m in runs]
    errors = [m.aggregate_stderr("paper") for m in runs]
    panels = {name: {sampler: ([v[i] for v in values], [e[i] for e in errors])} for i, name in enumerate(names)}
    references = dict(zip(names, reference)) if reference is not None else None
    axes = plots.plot_convergence_panels(ns, panels, references=references, title=title)
    return axes, runs[-1], rate


def monte_carlo_explorer(problems, *, references=None, sizes=(256, 512, 1024, 2048, 4096, 8192, 16384), seed=0):
    """Problem, sampler, N and seed controls → Δx, Δp (paper form) ± error, their convergence, the rate.

    ``problems = {name: (model, label, input_shape)}``, e.g. the toy classifier and the MNIST CNN;
    ``references = {name: (Δx, Δp)}`` (optional) draws exact values (grid quadrature) as lines.
    A thin wrapper around :func:`monte_carlo_figure`. Returns the ipywidgets container; without
    ipywidgets, the static figure of the first problem, uniform sampler, the middle N.
    """
    references = references or {}
    sizes = list(sizes)
    if not problems or not sizes:
        raise ValueError("problems and sizes must be non-empty")
    widgets = _ipywidgets()
    if widgets is None:
        name = next(iter(problems))
        model, label, shape = problems[name]
        axes, _, _ = monte_carlo_figure(model, label, shape, n=sizes[len(sizes) // 2], seed=seed,
                                        reference=references.get(name))
        return axes.flat[0].figure
    problem = widgets.Dropdown(options=list(problems), description="ψ of")
    sampler = widgets.ToggleButtons(options=["uniform", "sobol"], value="uniform", description="sampler")
    n = widgets.SelectionSlider(options=sizes, value=sizes[len(sizes) // 2], description="N")
    seed_box = widgets.BoundedIntText(value=seed, min=0, max=10**6, description="seed")
    line, canvas = widgets.Label(), _canvas(widgets)

    def redraw(*_):
        model, label, shape = problems[problem.value]
        axes, m, rate = monte_carlo_figure(model, label, shape, n=n.value, sampler=sampler.value,
                                           seed=seed_box.value, reference=references.get(problem.value))
        (dx, dp), (dx_err, dp_err) = m.aggregate("paper"), m.aggregate_stderr("paper")
        line.value = (f"N = {n.value:,} ({sampler.value}): Δx = {dx:.4f} ± {dx_err:.4f}, Δp = {dp:.4f} ± "
                      f"{dp_err:.4f} (paper form); ESS = {m.ess:,.0f}; {rate:,.0f} samples/s")
        canvas.value = _png(axes.flat[0].figure)

    for control in (problem, sampler, n, seed_box):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([problem, sampler]), widgets.HBox([n, seed_box]), line, canvas])
