"""Pure plotting functions for the book's figures, in one figure style.

Each function takes numbers (tensors or arrays), draws on a given or new matplotlib axes,
and returns the figure or axes; none of them computes physics or trains anything. The
chapters call these so that every figure of the book has one definition.

The book's style (``STYLE``, set when this module is imported and around every plot
function): figures at most ``COLUMN_WIDTH`` = 6.8 in wide, the width of the book's text
column, so that they are shown at their own size; text of at least 9 pt; PNGs at twice the
screen resolution (``retina``: the HTML and Colab show a 680-px-wide figure from a 1360-px
image, crisp on high-density screens); no "+1" offsets on the axes. Chapters that lay out their
own panels use :func:`subplots`, which keeps the figure at the column width.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

# The text column of the HTML book (sphinx-book-theme at a laptop width) is about 700 CSS px;
# a figure drawn at 6.8 in × 100 dpi = 680 px is shown at its own size, so 9-pt text stays 9 pt.
COLUMN_WIDTH = 6.8
# The smallest font size (points) any text of a figure may have at that size.
MIN_FONT_SIZE = 9

STYLE = {
    "figure.figsize": (COLUMN_WIDTH, 3.6),
    "figure.dpi": 100,  # the size on screen; "retina" (below) stores the PNG at twice this
    "savefig.dpi": 200,  # fig.savefig(...): 2× PNGs as well
    "figure.constrained_layout.use": True,
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 11,
    "legend.framealpha": 0.85,
    "legend.loc": "best",  # away from the data; the axis labels are outside the axes
    # "+1" or "1e-5" printed at the end of an axis is easy to miss: label the values themselves.
    "axes.formatter.useoffset": False,
    "image.interpolation": "nearest",
}


def _use_retina_pngs() -> None:
    """Inside IPython (Jupyter, Colab, the book build), show figures as 2× PNGs.

    ``retina`` PNGs carry their display width in the output's metadata (half their pixel
    width); myst-nb writes it into the HTML ``<img width>``, Colab and Jupyter honour it.
    """
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or not hasattr(shell, "kernel"):
            return  # a terminal IPython has no inline figures
        from matplotlib_inline.config import InlineBackend
    except ImportError:
        return
    # Setting the trait (not set_matplotlib_formats) keeps it when matplotlib_inline
    # reconfigures itself after the first figure.
    InlineBackend.instance(parent=shell).figure_formats = {"retina"}


def use_book_style() -> None:
    """Set the book's figure style for every figure drawn from now on (done on import).

    Chapters that draw with matplotlib directly get the same fonts, sizes and resolution.
    """
    plt.rcParams.update(STYLE)
    _use_retina_pngs()


def book_style():
    """A context in which matplotlib uses ``STYLE`` (``with plots.book_style(): ...``)."""
    return plt.rc_context(STYLE)


def styled(function):
    """Decorator: draw ``function``'s figure in the book's style (every ``plot_*`` uses it)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with book_style():
            return function(*args, **kwargs)

    wrapper.book_style = True
    return wrapper


def subplots(nrows: int = 1, ncols: int = 1, *, height: float | None = None, width: float = COLUMN_WIDTH,
             **kwargs):
    """``plt.subplots`` for the book's column: ``width`` (at most 6.8 in) and ``height`` in inches.

    ``height`` defaults to 2.9 in per row for a multi-panel row and 3.6 in for a single panel.
    Wider layouts are refused: split a panel grid that would not be readable into two figures.
    """
    if not 0 < width <= COLUMN_WIDTH:
        raise ValueError(f"width must be in (0, {COLUMN_WIDTH}] inches (the book's column), got {width}")
    if height is None:
        height = 3.6 if nrows == ncols == 1 else 2.9 * nrows
    if height <= 0:
        raise ValueError(f"height must be > 0 inches, got {height}")
    kwargs.setdefault("constrained_layout", True)
    with book_style():
        return plt.subplots(nrows, ncols, figsize=(width, height), **kwargs)


def _panel_width(n: int, per_panel: float, extra: float = 0.0) -> float:
    """Figure width for ``n`` panels of ``per_panel`` inches (plus ``extra``), capped at the column."""
    return min(COLUMN_WIDTH, n * per_panel + extra)


use_book_style()

# ---------------------------------------------------------------------------------------
# Chapter 1 — Heisenberg's relation
# ---------------------------------------------------------------------------------------


@styled
def plot_packet(x, psi, p, phi, spreads, *, axes=None, labels=("x", "p"), title=None):
    """Draw ``|ψ(x)|²`` and ``|φ(p)|²`` side by side, each with its mean ± spread shaded.

    ``spreads`` is a :class:`qnnlib.quantum.Spreads` (or anything with mean_x, dx, mean_p, dp);
    ``labels`` names the two conjugate variables (``("t", "ν")`` for signals).
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 2.9))
    left, right = axes
    density = np.abs(psi) ** 2
    density = density / np.trapezoid(density, x)
    spectrum = np.abs(phi) ** 2
    spectrum = spectrum / np.trapezoid(spectrum, p)
    for ax, grid, values, mean, spread, name, colour in (
        (left, x, density, spreads.mean_x, spreads.dx, labels[0], "C0"),
        (right, p, spectrum, spreads.mean_p, spreads.dp, labels[1], "C1"),
    ):
        ax.plot(grid, values, color=colour)
        ax.fill_between(grid, values, alpha=0.15, color=colour)
        ax.axvspan(mean - spread, mean + spread, color="0.85", zorder=0)
        ax.set_xlabel(f"${name}$")
        ax.set_ylabel(f"probability density in ${name}$")
        ax.set_title(f"$\\Delta {name} = {spread:.3f}$")
        # Show the region that holds the packet: mean ± 6 spreads.
        ax.set_xlim(mean - 6 * spread, mean + 6 * spread)
    fig = left.figure
    product = spreads.dx * spreads.dp
    fig.suptitle(title or f"$\\Delta {labels[0]}\\cdot\\Delta {labels[1]} = {product:.4f}$")
    return fig


@styled
def plot_products(names, products, *, bound=0.5, bound_label="Heisenberg bound 1/2", ax=None,
                  xlabel=None):
    """Horizontal bar chart of Δx·Δp (or ``xlabel``'s product; default label Δx·Δp) for several
    shapes, with the lower bound drawn as a line; the legend sits above the axes, clear of the bars
    and labels."""
    if ax is None:
        _, ax = plt.subplots(figsize=(COLUMN_WIDTH, 0.8 + 0.4 * len(names)))
    positions = np.arange(len(names))
    ax.barh(positions, products, color="C0", alpha=0.8)
    ax.axvline(bound, color="C3", linestyle="--", label=bound_label)
    ax.set_yticks(positions, names)
    for y, value in zip(positions, products):
        ax.text(value, y, f" {value:.4f}", va="center")
    ax.set_xlim(0, max(products) * 1.2)
    ax.set_xlabel(r"$\Delta x\cdot\Delta p$" if xlabel is None else xlabel)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return ax


@styled
def plot_tradeoff(dxs, dps, *, bound=0.5, ax=None, label="Gaussian packets"):
    """Δp against Δx for a family of packets, with the hyperbola Δx·Δp = ``bound``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5))
    dxs = np.asarray(dxs)
    grid = np.linspace(dxs.min() * 0.8, dxs.max() * 1.2, 200)
    ax.fill_between(grid, 0, bound / grid, color="C3", alpha=0.12, label="forbidden: $\\Delta x\\Delta p < 1/2$")
    ax.plot(grid, bound / grid, color="C3", linestyle="--")
    ax.plot(dxs, dps, "o", color="C0", label=label)
    ax.set_xlabel(r"$\Delta x$")
    ax.set_ylabel(r"$\Delta p$")
    ax.set_ylim(0, max(np.max(dps), bound / grid.min()) * 1.1)
    ax.legend()
    return ax


# ---------------------------------------------------------------------------------------
# Chapter 2 — Attacks are conjugate variables
# ---------------------------------------------------------------------------------------


def _as_image(t):
    """(C, H, W) tensor/array → (H, W) or (H, W, 3) numpy array for imshow."""
    a = np.asarray(t.detach().cpu() if hasattr(t, "detach") else t, dtype=float)
    return a[0] if a.shape[0] == 1 else np.transpose(a, (1, 2, 0))


def _signed_image(t, scale):
    """A signed map (C, H, W) → something imshow can draw on the RdBu scale [-scale, scale]."""
    a = _as_image(t)
    # Colour images: show the channel mean, a single signed number per pixel.
    return a if a.ndim == 2 else a.mean(axis=2)


def _relative_colourbar(fig, axes, label):
    """A colour bar for a row of signed maps that each have their own symmetric scale."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    bar = fig.colorbar(ScalarMappable(Normalize(-1, 1), "RdBu_r"), ax=axes, shrink=0.9, ticks=[-1, 0, 1])
    bar.ax.set_yticklabels(["−max", "0", "+max"])
    bar.set_label(label, fontsize=MIN_FONT_SIZE)
    return bar


@styled
def plot_input_gradients(x, grads, *, labels=None, n=8, title=None):
    """Inputs (top row) and their input gradients ∂l/∂x (bottom row, red +, blue −).

    ``x`` and ``grads`` are (N, C, H, W); each gradient map has its own symmetric colour scale,
    since only its pattern and sign matter for an L∞ attack.
    """
    n = min(n, len(x))
    fig, axes = plt.subplots(2, n, figsize=(_panel_width(n, 0.75, 1.2), 3.0), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        g = _signed_image(grads[i], 1.0)
        scale = float(np.abs(g).max()) or 1.0
        axes[1, i].imshow(g, cmap="RdBu_r", vmin=-scale, vmax=scale)
        if labels is not None:
            axes[0, i].set_title(f"y = {int(labels[i])}")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input $x$")
    axes[1, 0].set_ylabel(r"$\partial l/\partial x$")
    _relative_colourbar(fig, axes[1, :], r"$\partial l/\partial x$, each map scaled to its own max")
    fig.suptitle(title or r"The attack operator applied to the loss: $p = \partial l / \partial x$")
    return fig


@styled
def plot_attack_examples(x, x_adv, y, pred_clean, pred_adv, *, eps=None, n=8, classes=None, title=None):
    """Clean inputs, attacked inputs and the perturbations δ = x_adv − x, one column per sample.

    Titles give the true label and the predictions (red when wrong). The perturbation row uses a
    diverging scale fixed to [−ε, ε] when ``eps`` is given, so its saturation shows the L∞ budget.
    """
    n = min(n, len(x))
    names = classes or [str(k) for k in range(max(int(y.max()), int(pred_adv.max())) + 1)]
    fig, axes = plt.subplots(3, n, figsize=(_panel_width(n, 0.75, 1.2), 4.2), squeeze=False)
    for i in range(n):
        delta = x_adv[i] - x[i]
        scale = float(eps) if eps else float(delta.abs().max()) or 1.0
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(_as_image(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        delta_image = axes[2, i].imshow(_signed_image(delta, scale), cmap="RdBu_r", vmin=-scale, vmax=scale)
        for row, pred in ((0, pred_clean[i]), (1, pred_adv[i])):
            wrong = int(pred) != int(y[i])
            axes[row, i].set_title(f"→ {names[int(pred)]}", color="C3" if wrong else "k")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("attacked")
    axes[2, 0].set_ylabel(r"$\delta = x_{adv} - x$")
    if eps:  # one scale for the row: [−ε, ε]
        fig.colorbar(delta_image, ax=axes[2, :], shrink=0.9, label=r"$\delta$")
    else:
        _relative_colourbar(fig, axes[2, :], r"$\delta$, each map scaled to its own max")
    budget = f", $\\varepsilon = {eps:g}$" if eps else ""
    fig.suptitle(title or f"Clean and adversarial inputs{budget} (red: misclassified)")
    return fig


@styled
def plot_accuracy_vs_eps(eps, curves, *, ax=None, title=None, dataset=None):
    """Accuracy against the L∞ budget ε, one line per attack: ``curves = {label: accuracies}``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    for (label, accs), marker in zip(curves.items(), "osd^v<>"):
        ax.plot(eps, accs, marker=marker, label=label)
    ax.set_xlabel(r"$\varepsilon$ ($L_\infty$ budget, pixel scale [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or ("Accuracy under attack" + (f" — {dataset}" if dataset else "")))
    return ax


@styled
def plot_loss_along_directions(t, curves, *, ax=None, title=None):
    """Mean loss along x + t·d for several directions d: ``curves = {label: losses}``.

    Dashed lines (labels containing "first order") are drawn as predictions, not measurements.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in curves.items():
        style = "--" if "first order" in label else "-"
        ax.plot(t, values, style, label=label)
    ax.set_xlabel("step length $t$ (each pixel moves by at most $t$)")
    ax.set_ylabel("mean cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or "How fast the loss grows in different directions")
    return ax


# ---------------------------------------------------------------------------------------
# Chapter 3 — The neural wave function
# ---------------------------------------------------------------------------------------


def _class_colours(n):
    return [plt.get_cmap("tab10")(k % 10) for k in range(n)]


@styled
def plot_toy_classifier(nodes, predicted, x, y, *, ax=None, title=None):
    """Decision regions of a 2-D classifier on a grid and its training points.

    ``predicted[i, j]`` is the predicted class at (nodes[i], nodes[j]); x (N, 2), y (N,).
    """
    from matplotlib.colors import ListedColormap

    nodes, predicted, x, y = (np.asarray(a) for a in (nodes, predicted, x, y))
    n_classes = int(max(predicted.max(), y.max())) + 1
    colours = _class_colours(n_classes)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    extent = (nodes[0], nodes[-1], nodes[0], nodes[-1])
    ax.imshow(predicted.T, origin="lower", extent=extent, cmap=ListedColormap(colours), alpha=0.25,
              vmin=-0.5, vmax=n_classes - 0.5, interpolation="nearest")
    for k in range(n_classes):
        ax.scatter(*x[y == k].T, s=9, color=colours[k], edgecolor="k", linewidth=0.3, label=f"class {k}")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    ax.legend(loc="upper right")
    ax.set_title(title or "Toy classifier: decision regions and data")
    return ax


@styled
def plot_wave_functions(nodes, psis, grads, *, x=None, y=None, arrows=13, axes=None, classes=None):
    """One panel per class Y: ψ_Y as a heatmap and the attack field ∇ψ_Y as arrows.

    ``psis`` is a list of (n, n) arrays with psi[i, j] = ψ_Y(nodes[i], nodes[j]); ``grads`` the
    matching (2, n, n) gradients. Arrows are drawn on an ``arrows`` × ``arrows`` sub-grid and scaled
    per panel (their length shows direction and relative strength). Optional data x, y: class Y's
    points are drawn in white, the others in grey. ``classes`` (default: all) picks the classes
    drawn, e.g. ``classes=[0]`` and ``classes=[1, 2]`` for two figures that each fit the column.
    """
    nodes = np.asarray(nodes)
    classes = list(range(len(psis))) if classes is None else [int(k) for k in classes]
    if any(not 0 <= k < len(psis) for k in classes):
        raise ValueError(f"classes must be in [0, {len(psis) - 1}], got {classes}")
    if axes is None:
        _, axes = plt.subplots(1, len(classes), figsize=(_panel_width(len(classes), 2.6), 2.5))
    axes = np.atleast_1d(axes)
    extent = (nodes[0], nodes[-1], nodes[0], nodes[-1])
    step = max(1, len(nodes) // arrows)
    sub = slice(step // 2, None, step)
    for ax, k in zip(axes, classes):
        psi, grad = np.asarray(psis[k]), np.asarray(grads[k])
        image = ax.imshow(psi.T, origin="lower", extent=extent, cmap="magma", interpolation="bilinear")
        gx, gy = grad[0][sub, sub], grad[1][sub, sub]
        px, py = np.meshgrid(nodes[sub], nodes[sub], indexing="ij")
        ax.quiver(px, py, gx, gy, color="cyan", angles="xy", pivot="mid", width=0.006)
        if x is not None:
            x_np, y_np = np.asarray(x), np.asarray(y)
            ax.scatter(*x_np[y_np != k].T, s=3, color="0.6", alpha=0.6)
            ax.scatter(*x_np[y_np == k].T, s=5, color="white", alpha=0.9)
        ax.set_title(rf"$\psi_{{{k}}}$ and $\nabla\psi_{{{k}}}$")
        ax.set_xlabel("$x_1$")
        if ax is axes[0]:  # the panels share the plane: one label for x_2
            ax.set_ylabel("$x_2$")
        bar = ax.figure.colorbar(image, ax=ax, shrink=0.75, label=rf"$\psi_{{{k}}}$")
        bar.locator = MaxNLocator(nbins=4)
        bar.update_ticks()
    return axes


# ---------------------------------------------------------------------------------------
# Chapter 4 — Deriving Δx·Δp ≥ 1/2
# ---------------------------------------------------------------------------------------


@styled
def plot_profiles_and_bounds(x, profiles, products, lower_bounds, *, axes=None):
    """Left: normalised 1-D profiles ψ on their interval; right: Δx·Δp per profile (bars), each
    with its own bound ``|1 − B|/2`` (black ticks) and the textbook 1/2 (dashed).

    ``profiles``, ``products`` and ``lower_bounds`` are dicts keyed by the same names.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(COLUMN_WIDTH, 3.4))
    left, right = axes
    x = np.asarray(x)
    for name, psi in profiles.items():
        left.plot(x, np.asarray(psi), label=name)
    left.set_xlabel("$x$")
    left.set_ylabel(r"$\psi(x)$, normalised")
    left.legend()
    left.set_title("The profiles")
    names = list(products)
    positions = np.arange(len(names))
    values = np.array([products[n] for n in names])
    bounds = np.array([lower_bounds[n] for n in names])
    right.barh(positions, values, color="C0", alpha=0.75, label=r"$\Delta x\,\Delta p$")
    right.scatter(bounds, positions, marker="|", s=400, color="k", zorder=3, label=r"$|1-B|/2$")
    right.axvline(0.5, color="C3", linestyle="--", label="1/2")
    right.set_yticks(positions, names)
    for yv, v in zip(positions, values):
        right.text(v, yv, f" {v:.3f}", va="center")
    right.set_xlim(0, max(values.max(), bounds.max(), 0.5) * 1.3)
    right.set_xlabel("product of spreads")
    right.legend(loc="lower right")
    right.set_title("Products against the two bounds")
    return axes


@styled
def plot_coordinate_bounds(products, lower_bounds, *, labels=None, ax=None, title=None):
    """Each coordinate as a point (``|1 − B_i|/2``, Δx_iΔp_i): the theorem says every point lies on
    or above the diagonal; the textbook claim is the region above the dashed line 1/2.
    """
    products, lower_bounds = np.ravel(products), np.ravel(lower_bounds)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.4, 4.0))
    top = max(products.max(), lower_bounds.max(), 0.55) * 1.1
    ax.fill_between([0, top], [0, top], 0, color="C3", alpha=0.1, label="forbidden by the theorem")
    ax.plot([0, top], [0, top], color="C3")
    ax.axhline(0.5, color="0.3", linestyle="--", label="textbook 1/2")
    ax.scatter(lower_bounds, products, s=14 if len(products) < 100 else 4, color="C0", zorder=3)
    if labels is not None:
        for bx, py, text in zip(lower_bounds, products, labels):
            ax.annotate(text, (bx, py), fontsize=MIN_FONT_SIZE, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(r"$|1 - B_i|/2$")
    ax.set_ylabel(r"$\Delta x_i\,\Delta p_i$")
    ax.legend(loc="upper left")
    ax.set_title(title or "Every coordinate against its bound")
    return ax


@styled
def plot_dimension_growth(dims, paper, rss, *, ax=None):
    """Aggregated products Δx·Δp (both forms) against the dimension M, with their guaranteed
    floors M/√2 (paper form) and M/2 (root-sum-square) when every B_i = 0."""
    dims = np.asarray(dims)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(dims, paper, "o-", label=r"paper form $\sqrt{\sum\Delta x_i}\sqrt{\sum\Delta p_i}$")
    ax.plot(dims, rss, "s-", label=r"rss form $\sqrt{\sum\Delta x_i^2}\sqrt{\sum\Delta p_i^2}$")
    ax.plot(dims, dims / np.sqrt(2), "--", color="C0", alpha=0.6, label=r"$M/\sqrt{2}$")
    ax.plot(dims, dims / 2, "--", color="C1", alpha=0.6, label="$M/2$")
    ax.axhline(0.5, color="C3", linestyle=":", label="1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension $M$")
    ax.set_ylabel(r"aggregated $\Delta x\cdot\Delta p$")
    ax.legend()
    ax.set_title("Aggregates grow with the dimension")
    return ax


# ---------------------------------------------------------------------------------------
# Chapter 5 — Monte Carlo in 784 dimensions
# ---------------------------------------------------------------------------------------


@styled
def plot_convergence(ns, series, *, reference=None, ylabel="estimate", ax=None, title=None):
    """Estimates ± one standard error against the number of samples N (log axis).

    ``series = {label: (estimates, stderrs)}``, each array over ``ns``; ``reference`` (optional)
    is drawn as a horizontal line (e.g. the grid value). Series are offset slightly in N so
    their error bars do not overlap.
    """
    ns = np.asarray(ns, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    for k, (label, (values, errors)) in enumerate(series.items()):
        shift = 1.0 + 0.04 * (k - (len(series) - 1) / 2)
        ax.errorbar(ns * shift, values, yerr=errors, fmt="o-", capsize=3, markersize=4, label=label)
    if reference is not None:
        ax.axhline(reference, color="k", linestyle="--", linewidth=1, label="grid reference")
    ax.set_xscale("log")
    # Label the sample sizes themselves: over a decade or two, log-axis minor labels collide.
    ax.set_xticks(ns, [f"{int(n):,}" for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


@styled
def plot_error_scaling(ns, series, *, ax=None, title=None):
    """Errors against N on log–log axes with N^{-1/2} and N^{-1} guide lines.

    ``series = {label: errors}`` (true errors or standard errors), each over ``ns``.
    """
    ns = np.asarray(ns, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6))
    for (label, errors), marker in zip(series.items(), "osd^v"):
        ax.plot(ns, errors, marker=marker, label=label)
    first = max(np.asarray(e, dtype=float)[0] for e in series.values())
    ax.plot(ns, first * (ns / ns[0]) ** -0.5, ":", color="0.4", label=r"$\propto N^{-1/2}$")
    ax.plot(ns, first * (ns / ns[0]) ** -1.0, "--", color="0.6", label=r"$\propto N^{-1}$")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of samples $N$")
    ax.set_ylabel("error")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


@styled
def plot_pixel_maps(product, boundary, meets, *, axes=None, title=None, panels=("product", "boundary", "meets")):
    """Per-pixel diagnostics as images: Δx_iΔp_i, B_i, and whether Δx_iΔp_i ≥ ``|1 − B_i|/2``.

    Each argument is an (H, W) array (one channel). ``panels`` picks and orders the maps drawn
    (a map that is constant, e.g. every pixel meeting its bound, is better said in the caption).
    """
    product, boundary, meets = (np.asarray(a) for a in (product, boundary, meets))
    available = {
        "product": (product, r"$\Delta x_i\,\Delta p_i$", "viridis", None),
        "boundary": (boundary, "$B_i$", "coolwarm", None),
        "meets": (meets.astype(float), r"meets $|1-B_i|/2$ (1 = yes)", "Greens", (0, 1)),
    }
    unknown = [name for name in panels if name not in available]
    if unknown or not panels:
        raise ValueError(f"panels must be a non-empty selection of {list(available)}, got {list(panels)}")
    if axes is None:
        _, axes = plt.subplots(1, len(panels), figsize=(_panel_width(len(panels), 2.3), 2.6))
    axes = np.atleast_1d(axes)
    for ax, (values, label, cmap, limits) in zip(axes, (available[name] for name in panels)):
        vmin, vmax = limits if limits else (values.min(), values.max())
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    if title:
        axes[0].figure.suptitle(title)
    return axes


@styled
def plot_convergence_panels(ns, panels, *, references=None, ncols=None, title=None):
    """Several :func:`plot_convergence` panels in one figure, one per quantity.

    ``panels = {ylabel: {series label: (estimates, stderrs)}}``, each array over ``ns``;
    ``references = {ylabel: value}`` (optional) adds a dashed reference line to that panel.
    ``ncols`` panels per row (default: two, the most that are readable at the column width).
    Returns the 2-D array of axes.
    """
    references = references or {}
    ncols = ncols or min(2, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(_panel_width(ncols, 3.4), 2.8 * nrows), squeeze=False)
    for ax, (ylabel, series) in zip(axes.flat, panels.items()):
        plot_convergence(ns, series, reference=references.get(ylabel), ylabel=ylabel, ax=ax)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return axes


# ---------------------------------------------------------------------------------------
# Chapter 6 — MNIST: the trade-off, measured (also used by Chapters 7 and 8)
# ---------------------------------------------------------------------------------------


def _knn_regions(ax, embedding, labels, *, k=15, resolution=200, n_classes=10):
    """Shade the plane by the class a k-nearest-neighbour vote on the embedded points gives."""
    from sklearn.neighbors import KNeighborsClassifier

    lo, hi = embedding.min(0), embedding.max(0)
    pad = 0.05 * (hi - lo)
    gx, gy = np.meshgrid(np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution),
                         np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution))
    knn = KNeighborsClassifier(n_neighbors=k).fit(embedding, labels)
    regions = knn.predict(np.c_[gx.ravel(), gy.ravel()]).reshape(gx.shape)
    colours = _class_colours(n_classes)
    from matplotlib.colors import ListedColormap

    ax.imshow(regions, origin="lower", extent=(gx.min(), gx.max(), gy.min(), gy.max()), aspect="auto",
              cmap=ListedColormap(colours), vmin=-0.5, vmax=n_classes - 0.5, alpha=0.18, interpolation="nearest")


@styled
def plot_feature_embedding(embedding, labels, *, highlight=None, ax=None, title=None, k=15, regions=None,
                           legend=True):
    """One t-SNE panel of Fig. 1: clean test features (dots) and their PGD versions (crosses).

    ``embedding`` is (2n, 2): the n clean points first, then the n attacked ones, embedded together.
    The background is shaded by a k-NN vote of the clean points' ``regions`` labels: pass the
    network's predictions on the clean points to shade the network's class regions (Chapter 6);
    by default the true ``labels``. Points are coloured by their true labels. With
    ``highlight=c`` only class c's points are drawn (clean and attacked), the rest of the data
    shading the plane; ``legend=False`` leaves the legend to the caption (small panels).
    """
    embedding, labels = np.asarray(embedding), np.asarray(labels)
    n = len(labels)
    clean, attacked = embedding[:n], embedding[n:]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    _knn_regions(ax, clean, labels if regions is None else np.asarray(regions), k=k)
    colours = np.array(_class_colours(10))
    show = labels == highlight if highlight is not None else np.ones(n, bool)
    size = 10 if highlight is not None else 3
    ax.scatter(*clean[show].T, s=size, c=colours[labels[show]], marker="o", linewidths=0, label="clean")
    ax.scatter(*attacked[show].T, s=size * 1.6, c=colours[labels[show]], marker="x", linewidths=0.7,
               label="PGD-attacked")
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(loc="lower right", markerscale=2, framealpha=0.8)
    ax.set_title(title or ("all classes" if highlight is None else f"class {highlight}"))
    return ax


@styled
def plot_training_curves(epochs, curves, *, ax=None, title=None, ylabel="accuracy", reliable=None):
    """Per-epoch curves (Fig. 2 a, c, e, g analogues): ``curves = {label: values}``.

    ``reliable`` (optional) ``{label: bool per epoch}``: the False epochs of those curves are drawn
    with hollow markers (estimates that failed the diagnostics, ``experiments.reliable_epochs``).
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6))
    epochs = np.asarray(epochs)
    for (label, values), marker in zip(curves.items(), "osd^v<>"):
        ok = np.ones(len(epochs), bool) if label not in (reliable or {}) else np.asarray(reliable[label], bool)
        line, = ax.plot(epochs, values, marker=marker, markersize=3, label=label, markevery=list(np.flatnonzero(ok)))
        if not ok.all():
            ax.plot(epochs[~ok], np.asarray(values)[~ok], linestyle="none", marker=marker, markersize=6,
                    markerfacecolor="none", markeredgecolor=line.get_color())
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


@styled
def plot_dx_dp_epochs(dx, dp, dx_err, dp_err, epochs, *, ax=None, title=None, form="paper", colorbar=True,
                      reliable=None, marker="o", label=None):
    """Δp against Δx, one point per epoch coloured by the epoch, with ±1 standard-error bars
    (Fig. 2 b, d, f, h analogues). ``form`` names the aggregate ("paper": √Σ, "rss": √Σ²).

    ``reliable`` (bool per epoch, e.g. ``experiments.reliable_epochs``): the False epochs are
    drawn as hollow markers, so that an estimate whose weights failed the diagnostics is seen as
    such. Call once per run on the same axes (``colorbar=False`` after the first, a ``marker``
    and ``label`` per run) to draw several runs.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.0))
    dx, dp, epochs = np.asarray(dx), np.asarray(dp), np.asarray(epochs)
    ok = np.ones(len(dx), bool) if reliable is None else np.asarray(reliable, bool)
    ax.errorbar(dx, dp, xerr=dx_err, yerr=dp_err, fmt="none", ecolor="0.6", elinewidth=0.8, zorder=1)
    norm = plt.Normalize(epochs.min(), epochs.max())
    points = ax.scatter(dx[ok], dp[ok], c=epochs[ok], cmap="viridis", norm=norm, s=18, marker=marker, zorder=2,
                        label=label)
    if not ok.all():
        ax.scatter(dx[~ok], dp[~ok], facecolors="none", edgecolors=plt.get_cmap("viridis")(norm(epochs[~ok])),
                   s=30, marker=marker, linewidths=1.2, zorder=3, label="unreliable estimate (hollow)")
    ax.plot(dx, dp, color="0.75", linewidth=0.6, zorder=0)
    if colorbar:
        ax.figure.colorbar(points, ax=ax, label="epoch")
    name = {"paper": r"$\sqrt{\sum_i \cdot}$", "rss": r"$\sqrt{\sum_i \cdot^2}$"}.get(form, form)
    ax.set_xlabel(rf"$\Delta x$ (aggregate {name})")
    ax.set_ylabel(rf"$\Delta p$ (aggregate {name})")
    # Δx moves in its fourth or fifth digit: long tick labels, so fewer of them.
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return ax


@styled
def plot_epoch_diagnostics(epochs, spaces, *, axes=None, keys=None):
    """The per-coordinate diagnostics of the uncertainty relation per epoch (Chapters 5–7), one
    line per space: ``spaces = {name: {key: values}}`` with keys ``frac_below_half`` (the
    fraction of coordinates with Δx_iΔp_i < 1/2), ``mean_boundary`` (the mean boundary term B̄)
    and ``min_product`` (the smallest Δx_iΔp_i).

    ``keys`` picks and orders the panels (default: all three). Without ``axes`` the panels are
    stacked, one per row, at the column width; a panel whose quantity is constant is better
    dropped and said in the caption.
    """
    titles = {"frac_below_half": r"fraction of coordinates with $\Delta x_i\Delta p_i < 1/2$",
              "mean_boundary": r"mean boundary term $\overline{B_i}$",
              "min_product": r"smallest $\Delta x_i\Delta p_i$"}
    keys = list(titles) if keys is None else list(keys)
    unknown = [key for key in keys if key not in titles]
    if unknown or not keys:
        raise ValueError(f"keys must be a non-empty selection of {list(titles)}, got {keys}")
    stacked = axes is None
    if stacked:
        _, axes = plt.subplots(len(keys), 1, figsize=(COLUMN_WIDTH, 0.6 + 2.0 * len(keys)), sharex=True,
                               squeeze=False)
        axes = axes[:, 0]
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for (name, values), marker in zip(spaces.items(), "os^"):
            ax.plot(epochs, values[key], marker=marker, markersize=3, label=name)
        ax.set_title(titles[key])
        ax.grid(alpha=0.3)
        if key == "min_product":
            ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8, label="1/2")
            ax.set_yscale("log")
            # Plain numbers (0.6, 0.8), not 6×10⁻¹; the minor ticks are labelled only on an axis
            # spanning less than a decade (over several decades their labels would overprint).
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            low, high = ax.get_ylim()
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%g") if high < 10 * low else NullFormatter())
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
    for ax in axes[-1:] if stacked else axes:  # stacked panels share the epoch axis
        ax.set_xlabel("epoch")
    return axes


@styled
def plot_face_vs_volume(face, *, ax=None, title=None):
    """B_i from the faces of the box against B_i from the volume form, one pair per coordinate,
    each with ±1 standard-error bars (Chapters 6 and 7). ``face`` is a
    ``FaceBoundary`` (``qnnlib.uncertainty.boundary``); the coordinates are drawn in the order of
    their volume-form B_i, so that agreement reads as the face points scattering around them."""
    if ax is None:
        _, ax = plt.subplots(figsize=(COLUMN_WIDTH, 3.2))
    order = np.argsort(np.asarray(face.volume_boundary))
    rank = np.arange(len(order))
    ax.errorbar(rank, np.asarray(face.boundary)[order], yerr=np.asarray(face.boundary_stderr)[order], fmt="o",
                markersize=4, capsize=2, label=f"face form ({face.n_face:,} points per face)")
    ax.errorbar(rank, np.asarray(face.volume_boundary)[order], yerr=np.asarray(face.volume_boundary_stderr)[order],
                fmt="s", markersize=3, color="k", label="volume form")
    ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("coordinate, sorted by its volume-form $B_i$")
    ax.set_ylabel("boundary term $B_i$")
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


@styled
def plot_fragility(columns, predictors, *, labels=None, rho=None, axes=None, target="min_eps",
                   target_label="minimal adversarial ε*"):
    """The minimal adversarial ε of each image against per-image predictors (Chapter 10).

    ``columns``: ``{name: (n,) array}`` of a fragility table (``FragilityRun.columns``), with the
    ``target`` column and, optionally, ``reliable`` (the local ψ passed its diagnostics: the other
    images are drawn hollow); ``predictors``: the columns to draw, one panel each, in a row of at
    most three (more rows below); ``labels``: ``{predictor: axis label}``; ``rho``:
    ``{predictor: {"rho", "low", "high"}}`` (``qnnlib.fragility.correlation_table``), printed in
    each panel's title. Axes of positive quantities spanning more than a decade are logarithmic.
    """
    predictors = list(predictors)
    if not predictors:
        raise ValueError("predictors must name at least one column")
    missing = [p for p in [target, *predictors] if p not in columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the table ({sorted(columns)})")
    ncols = min(3, len(predictors))
    nrows = -(-len(predictors) // ncols)
    if axes is None:
        _, axes = plt.subplots(nrows, ncols, figsize=(COLUMN_WIDTH, 2.5 * nrows + 0.2), squeeze=False, sharey=True)
    axes = np.atleast_1d(axes).ravel()
    y = np.asarray(columns[target], dtype=float)
    ok = np.asarray(columns.get("reliable", np.ones(len(y), bool)), dtype=bool)
    finite = np.isfinite(y) & (y > 0)

    def wide_and_positive(v):
        v = v[np.isfinite(v)]
        return v.size and v.min() > 0 and v.max() > 10 * v.min()

    legend = False  # one legend for the figure, in the first panel with unreliable points
    for ax, name in zip(axes, predictors):
        x = np.asarray(columns[name], dtype=float)
        keep = finite & np.isfinite(x)
        ax.scatter(x[keep & ok], y[keep & ok], s=7, alpha=0.6, color="C0", linewidths=0)
        if (keep & ~ok).any():
            ax.scatter(x[keep & ~ok], y[keep & ~ok], s=14, facecolors="none", edgecolors="C3", linewidths=0.8,
                       label="local ψ unreliable")
            if not legend:
                ax.legend(loc="best")
                legend = True
        if wide_and_positive(x[keep]):
            ax.set_xscale("log")
        if wide_and_positive(y[keep]):
            ax.set_yscale("log")
        ax.set_xlabel((labels or {}).get(name, name))
        if rho and name in rho:
            r = rho[name]
            ax.set_title(rf"$\rho$ = {r['rho']:+.2f} [{r['low']:+.2f}, {r['high']:+.2f}]")
        if ax.get_xscale() == "linear":
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.grid(alpha=0.3)
    for ax in axes[::ncols]:
        ax.set_ylabel(target_label)
    for ax in axes[len(predictors):]:
        ax.set_visible(False)
    return axes
