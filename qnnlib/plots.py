"""Pure plotting functions for the book's figures.

Each function takes numbers (tensors or arrays), draws on a given or new matplotlib axes,
and returns the figure or axes; none of them computes physics or trains anything. The
chapters call these so that every figure of the book has one definition.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

# ---------------------------------------------------------------------------------------
# Chapter 1 — Heisenberg's relation
# ---------------------------------------------------------------------------------------


def plot_packet(x, psi, p, phi, spreads, *, axes=None, labels=("x", "p"), title=None):
    """Draw |ψ(x)|² and |φ(p)|² side by side, each with its mean ± spread shaded.

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
