"""Thin ipywidgets wrappers around :mod:`qnnlib.plots`.

Widgets run in Jupyter and Colab (ipywidgets 8) but not in the static HTML book, so every
chapter that shows a widget also shows a static figure made by the same plotting function.
ipywidgets is imported inside each function, so importing qnnlib never needs it.
"""

from __future__ import annotations

# ---------------------------------------------------------------------------------------
# Chapter 1 — Heisenberg's relation
# ---------------------------------------------------------------------------------------


def packet_explorer(x):
    """Shape, width and wave-number controls → ψ, |φ(p)|², Δx, Δp and their product.

    A thin wrapper: :func:`qnnlib.quantum.make_packet`, :func:`~qnnlib.quantum.spreads`,
    :func:`~qnnlib.quantum.momentum_wavefunction` and :func:`qnnlib.plots.plot_packet`.
    Returns the ipywidgets container (display it in a notebook).
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    from . import plots, quantum

    shape = widgets.Dropdown(options=sorted(quantum.PACKETS), value="gaussian", description="shape")
    width = widgets.FloatSlider(value=1.0, min=0.3, max=3.0, step=0.05, description="width Δx")
    k0 = widgets.FloatSlider(value=0.0, min=-5.0, max=5.0, step=0.25, description="k₀")
    out = widgets.Output()

    def redraw(*_):
        psi = quantum.make_packet(shape.value, x, width=width.value, k0=k0.value)
        p, phi = quantum.momentum_wavefunction(x, psi)
        with out:
            out.clear_output(wait=True)
            fig = plots.plot_packet(x, psi, p, phi, quantum.spreads(x, psi))
            plt.show(fig)

    for control in (shape, width, k0):
        control.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([shape, width, k0]), out])
