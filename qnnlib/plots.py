"""Pure plotting functions for the book's figures.

Each function takes numbers (tensors or arrays), draws on a given or new matplotlib axes,
and returns the figure or axes; none of them computes physics or trains anything. The
chapters call these so that every figure of the book has one definition.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

# ---------------------------------------------------------------------------------------
# Chapter 1 — Heisenberg's relation
# ---------------------------------------------------------------------------------------


def plot_packet(x, psi, p, phi, spreads, *, axes=None, labels=("x", "p"), title=None):
    """Draw ``|ψ(x)|²`` and ``|φ(p)|²`` side by side, each with its mean ± spread shaded.

    ``spreads`` is a :class:`qnnlib.quantum.Spreads` (or anything with mean_x, dx, mean_p, dp);
    ``labels`` names the two conjugate variables (``("t", "ν")`` for signals).
    """
    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
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


def plot_products(names, products, *, bound=0.5, bound_label="Heisenberg bound 1/2", ax=None):
    """Horizontal bar chart of Δx·Δp for several shapes, with the lower bound drawn as a line."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)), constrained_layout=True)
    positions = np.arange(len(names))
    ax.barh(positions, products, color="C0", alpha=0.8)
    ax.axvline(bound, color="C3", linestyle="--", label=bound_label)
    ax.set_yticks(positions, names)
    for y, value in zip(positions, products):
        ax.text(value, y, f" {value:.4f}", va="center")
    ax.set_xlim(0, max(products) * 1.2)
    ax.set_xlabel(r"$\Delta x\cdot\Delta p$")
    ax.legend(loc="lower right")
    return ax


def plot_tradeoff(dxs, dps, *, bound=0.5, ax=None, label="Gaussian packets"):
    """Δp against Δx for a family of packets, with the hyperbola Δx·Δp = ``bound``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.5), constrained_layout=True)
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


def plot_input_gradients(x, grads, *, labels=None, n=8, title=None):
    """Inputs (top row) and their input gradients ∂l/∂x (bottom row, red +, blue −).

    ``x`` and ``grads`` are (N, C, H, W); each gradient map has its own symmetric colour scale,
    since only its pattern and sign matter for an L∞ attack.
    """
    n = min(n, len(x))
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 2.9), constrained_layout=True, squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        g = _signed_image(grads[i], 1.0)
        scale = float(np.abs(g).max()) or 1.0
        axes[1, i].imshow(g, cmap="RdBu_r", vmin=-scale, vmax=scale)
        if labels is not None:
            axes[0, i].set_title(f"y = {int(labels[i])}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("input $x$")
    axes[1, 0].set_ylabel(r"$\partial l/\partial x$")
    fig.suptitle(title or r"The attack operator applied to the loss: $p = \partial l / \partial x$")
    return fig


def plot_attack_examples(x, x_adv, y, pred_clean, pred_adv, *, eps=None, n=8, classes=None, title=None):
    """Clean inputs, attacked inputs and the perturbations δ = x_adv − x, one column per sample.

    Titles give the true label and the predictions (red when wrong). The perturbation row uses a
    diverging scale fixed to [−ε, ε] when ``eps`` is given, so its saturation shows the L∞ budget.
    """
    n = min(n, len(x))
    names = classes or [str(k) for k in range(max(int(y.max()), int(pred_adv.max())) + 1)]
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.3), constrained_layout=True, squeeze=False)
    for i in range(n):
        delta = x_adv[i] - x[i]
        scale = float(eps) if eps else float(delta.abs().max()) or 1.0
        axes[0, i].imshow(_as_image(x[i]), cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(_as_image(x_adv[i]), cmap="gray", vmin=0, vmax=1)
        axes[2, i].imshow(_signed_image(delta, scale), cmap="RdBu_r", vmin=-scale, vmax=scale)
        for row, pred in ((0, pred_clean[i]), (1, pred_adv[i])):
            wrong = int(pred) != int(y[i])
            axes[row, i].set_title(f"→ {names[int(pred)]}", fontsize=9, color="C3" if wrong else "k")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, 0].set_ylabel("clean")
    axes[1, 0].set_ylabel("attacked")
    axes[2, 0].set_ylabel(r"$\delta = x_{adv} - x$")
    budget = f", $\\varepsilon = {eps:g}$" if eps else ""
    fig.suptitle(title or f"Clean and adversarial inputs{budget} (red: misclassified)")
    return fig


def plot_accuracy_vs_eps(eps, curves, *, ax=None, title=None, dataset=None):
    """Accuracy against the L∞ budget ε, one line per attack: ``curves = {label: accuracies}``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    for (label, accs), marker in zip(curves.items(), "osd^v<>"):
        ax.plot(eps, accs, marker=marker, label=label)
    ax.set_xlabel(r"$\varepsilon$ ($L_\infty$ budget, pixel scale [0, 1])")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title or ("Accuracy under attack" + (f" — {dataset}" if dataset else "")))
    return ax


def plot_loss_along_directions(t, curves, *, ax=None, title=None):
    """Mean loss along x + t·d for several directions d: ``curves = {label: losses}``.

    Dashed lines (labels containing "first order") are drawn as predictions, not measurements.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
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


def plot_toy_classifier(nodes, predicted, x, y, *, ax=None, title=None):
    """Decision regions of a 2-D classifier on a grid and its training points.

    ``predicted[i, j]`` is the predicted class at (nodes[i], nodes[j]); x (N, 2), y (N,).
    """
    from matplotlib.colors import ListedColormap

    nodes, predicted, x, y = (np.asarray(a) for a in (nodes, predicted, x, y))
    n_classes = int(max(predicted.max(), y.max())) + 1
    colours = _class_colours(n_classes)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0), constrained_layout=True)
    extent = (nodes[0], nodes[-1], nodes[0], nodes[-1])
    ax.imshow(predicted.T, origin="lower", extent=extent, cmap=ListedColormap(colours), alpha=0.25,
              vmin=-0.5, vmax=n_classes - 0.5, interpolation="nearest")
    for k in range(n_classes):
        ax.scatter(*x[y == k].T, s=9, color=colours[k], edgecolor="k", linewidth=0.3, label=f"class {k}")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "Toy classifier: decision regions and data")
    return ax


def plot_wave_functions(nodes, psis, grads, *, x=None, y=None, arrows=13, axes=None):
    """One panel per class Y: ψ_Y as a heatmap and the attack field ∇ψ_Y as arrows.

    ``psis`` is a list of (n, n) arrays with psi[i, j] = ψ_Y(nodes[i], nodes[j]); ``grads`` the
    matching (2, n, n) gradients. Arrows are drawn on an ``arrows`` × ``arrows`` sub-grid and scaled
    per panel (their length shows direction and relative strength). Optional data x, y: class Y's
    points are drawn in white, the others in grey.
    """
    nodes = np.asarray(nodes)
    n_classes = len(psis)
    if axes is None:
        _, axes = plt.subplots(1, n_classes, figsize=(3.6 * n_classes, 3.5), constrained_layout=True)
    axes = np.atleast_1d(axes)
    extent = (nodes[0], nodes[-1], nodes[0], nodes[-1])
    step = max(1, len(nodes) // arrows)
    sub = slice(step // 2, None, step)
    for k, (ax, psi, grad) in enumerate(zip(axes, psis, grads)):
        psi, grad = np.asarray(psi), np.asarray(grad)
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
        ax.set_ylabel("$x_2$")
        ax.figure.colorbar(image, ax=ax, shrink=0.8, label=rf"$\psi_{{{k}}}$")
    return axes


# ---------------------------------------------------------------------------------------
# Chapter 4 — Deriving Δx·Δp ≥ 1/2
# ---------------------------------------------------------------------------------------


def plot_profiles_and_bounds(x, profiles, products, lower_bounds, *, axes=None):
    """Left: normalised 1-D profiles ψ on their interval; right: Δx·Δp per profile (bars), each
    with its own bound ``|1 − B|/2`` (black ticks) and the textbook 1/2 (dashed).

    ``profiles``, ``products`` and ``lower_bounds`` are dicts keyed by the same names.
    """
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    left, right = axes
    x = np.asarray(x)
    for name, psi in profiles.items():
        left.plot(x, np.asarray(psi), label=name)
    left.set_xlabel("$x$")
    left.set_ylabel(r"$\psi(x)$, normalised")
    left.legend(fontsize=8)
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
        right.text(v, yv, f" {v:.3f}", va="center", fontsize=8)
    right.set_xlim(0, max(values.max(), bounds.max(), 0.5) * 1.3)
    right.set_xlabel("product of spreads")
    right.legend(fontsize=8, loc="lower right")
    right.set_title("Products against the two bounds")
    return axes


def plot_coordinate_bounds(products, lower_bounds, *, labels=None, ax=None, title=None):
    """Each coordinate as a point (``|1 − B_i|/2``, Δx_iΔp_i): the theorem says every point lies on
    or above the diagonal; the textbook claim is the region above the dashed line 1/2.
    """
    products, lower_bounds = np.ravel(products), np.ravel(lower_bounds)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.4, 4.0), constrained_layout=True)
    top = max(products.max(), lower_bounds.max(), 0.55) * 1.1
    ax.fill_between([0, top], [0, top], 0, color="C3", alpha=0.1, label="forbidden by the theorem")
    ax.plot([0, top], [0, top], color="C3")
    ax.axhline(0.5, color="0.3", linestyle="--", label="textbook 1/2")
    ax.scatter(lower_bounds, products, s=14 if len(products) < 100 else 4, color="C0", zorder=3)
    if labels is not None:
        for bx, py, text in zip(lower_bounds, products, labels):
            ax.annotate(text, (bx, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel(r"$|1 - B_i|/2$")
    ax.set_ylabel(r"$\Delta x_i\,\Delta p_i$")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(title or "Every coordinate against its bound")
    return ax


def plot_dimension_growth(dims, paper, rss, *, ax=None):
    """Aggregated products Δx·Δp (both forms) against the dimension M, with their guaranteed
    floors M/√2 (paper form) and M/2 (root-sum-square) when every B_i = 0."""
    dims = np.asarray(dims)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    ax.plot(dims, paper, "o-", label=r"paper form $\sqrt{\sum\Delta x_i}\sqrt{\sum\Delta p_i}$")
    ax.plot(dims, rss, "s-", label=r"rss form $\sqrt{\sum\Delta x_i^2}\sqrt{\sum\Delta p_i^2}$")
    ax.plot(dims, dims / np.sqrt(2), "--", color="C0", alpha=0.6, label=r"$M/\sqrt{2}$")
    ax.plot(dims, dims / 2, "--", color="C1", alpha=0.6, label="$M/2$")
    ax.axhline(0.5, color="C3", linestyle=":", label="1/2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("dimension $M$")
    ax.set_ylabel(r"aggregated $\Delta x\cdot\Delta p$")
    ax.legend(fontsize=8)
    ax.set_title("Aggregates grow with the dimension")
    return ax


# ---------------------------------------------------------------------------------------
# Chapter 5 — Monte Carlo in 784 dimensions
# ---------------------------------------------------------------------------------------


def plot_convergence(ns, series, *, reference=None, ylabel="estimate", ax=None, title=None):
    """Estimates ± one standard error against the number of samples N (log axis).

    ``series = {label: (estimates, stderrs)}``, each array over ``ns``; ``reference`` (optional)
    is drawn as a horizontal line (e.g. the grid value). Series are offset slightly in N so
    their error bars do not overlap.
    """
    ns = np.asarray(ns, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6), constrained_layout=True)
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
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_error_scaling(ns, series, *, ax=None, title=None):
    """Errors against N on log–log axes with N^{-1/2} and N^{-1} guide lines.

    ``series = {label: errors}`` (true errors or standard errors), each over ``ns``.
    """
    ns = np.asarray(ns, dtype=float)
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 3.6), constrained_layout=True)
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
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def plot_pixel_maps(product, boundary, meets, *, axes=None, title=None):
    """Per-pixel diagnostics as images: Δx_iΔp_i, B_i, and whether Δx_iΔp_i ≥ ``|1 − B_i|/2``.

    Each argument is an (H, W) array (one channel).
    """
    product, boundary, meets = (np.asarray(a) for a in (product, boundary, meets))
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(11, 3.5), constrained_layout=True)
    panels = (
        (product, r"$\Delta x_i\,\Delta p_i$", "viridis", None),
        (boundary, "$B_i$", "coolwarm", None),
        (meets.astype(float), r"meets $|1-B_i|/2$ (1 = yes)", "Greens", (0, 1)),
    )
    for ax, (values, label, cmap, limits) in zip(axes, panels):
        vmin, vmax = limits if limits else (values.min(), values.max())
        image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set_title(label)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.figure.colorbar(image, ax=ax, shrink=0.8)
    if title:
        axes[0].figure.suptitle(title)
    return axes


def plot_convergence_panels(ns, panels, *, references=None, ncols=None, title=None):
    """Several :func:`plot_convergence` panels in one figure, one per quantity.

    ``panels = {ylabel: {series label: (estimates, stderrs)}}``, each array over ``ns``;
    ``references = {ylabel: value}`` (optional) adds a dashed reference line to that panel.
    ``ncols`` panels per row (default: all in one row). Returns the 2-D array of axes.
    """
    references = references or {}
    ncols = ncols or len(panels)
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), constrained_layout=True,
                             squeeze=False)
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


def plot_feature_embedding(embedding, labels, *, highlight=None, ax=None, title=None, k=15):
    """One t-SNE panel of Fig. 1: clean test features (dots) and their PGD versions (crosses).

    ``embedding`` is (2n, 2): the n clean points first, then the n attacked ones, embedded together.
    The background is shaded by a k-NN vote of the clean points' true labels. With ``highlight=c``
    only class c's points are drawn (clean and attacked), the rest of the data shading the plane.
    """
    embedding, labels = np.asarray(embedding), np.asarray(labels)
    n = len(labels)
    clean, attacked = embedding[:n], embedding[n:]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0), constrained_layout=True)
    _knn_regions(ax, clean, labels, k=k)
    colours = np.array(_class_colours(10))
    show = labels == highlight if highlight is not None else np.ones(n, bool)
    size = 10 if highlight is not None else 3
    ax.scatter(*clean[show].T, s=size, c=colours[labels[show]], marker="o", linewidths=0, label="clean")
    ax.scatter(*attacked[show].T, s=size * 1.6, c=colours[labels[show]], marker="x", linewidths=0.7,
               label="PGD-attacked")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="lower right", fontsize=7, markerscale=2, framealpha=0.8)
    ax.set_title(title or ("all classes" if highlight is None else f"class {highlight}"), fontsize=10)
    return ax


def plot_training_curves(epochs, curves, *, ax=None, title=None, ylabel="accuracy"):
    """Per-epoch curves (Fig. 2 a, c, e, g analogues): ``curves = {label: values}``."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.6), constrained_layout=True)
    for (label, values), marker in zip(curves.items(), "osd^v<>"):
        ax.plot(epochs, values, marker=marker, markersize=3, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax


def plot_dx_dp_epochs(dx, dp, dx_err, dp_err, epochs, *, ax=None, title=None, form="paper", colorbar=True):
    """Δp against Δx, one point per epoch coloured by the epoch, with ±1 standard-error bars
    (Fig. 2 b, d, f, h analogues). ``form`` names the aggregate ("paper": √Σ, "rss": √Σ²)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.0), constrained_layout=True)
    dx, dp, epochs = np.asarray(dx), np.asarray(dp), np.asarray(epochs)
    ax.errorbar(dx, dp, xerr=dx_err, yerr=dp_err, fmt="none", ecolor="0.6", elinewidth=0.8, zorder=1)
    points = ax.scatter(dx, dp, c=epochs, cmap="viridis", s=18, zorder=2)
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


def plot_epoch_diagnostics(epochs, spaces, *, axes=None):
    """The SPEC §2 diagnostics per epoch, one line per space: ``spaces = {name: {key: values}}`` with
    keys ``frac_below_half``, ``mean_boundary``, ``min_product``."""
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.4), constrained_layout=True)
    panels = (("frac_below_half", r"fraction of coordinates with $\Delta x_i\Delta p_i < 1/2$"),
              ("mean_boundary", r"mean boundary term $\overline{B_i}$"),
              ("min_product", r"smallest $\Delta x_i\Delta p_i$"))
    for ax, (key, label) in zip(axes, panels):
        for (name, values), marker in zip(spaces.items(), "os^"):
            ax.plot(epochs, values[key], marker=marker, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        if key == "min_product":
            ax.axhline(0.5, color="k", linestyle="--", linewidth=0.8, label="1/2")
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    return axes
