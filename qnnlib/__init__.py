"""qnnlib: the companion library of the book on conjugate variables of neural networks.

One module per idea of the book (see ``STYLE.md`` in the project's shared notes):

========================  ===============================================
``qnnlib.quantum``        wave packets on grids, Δx, Δp, Fourier pairs (Chapter 1)
``qnnlib.plots``          pure plotting functions used by the chapters
``qnnlib.widgets``        thin ipywidgets wrappers around the plots
========================  ===============================================

The only global switch is *fast mode*, read from the environment variable
``QNNLIB_FAST`` by :func:`fast_mode` and nowhere else.
"""

import os

__version__ = "0.1.0"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def fast_mode() -> bool:
    """Return True when ``QNNLIB_FAST`` asks for the small, quick configuration.

    Fast mode shrinks sizes (samples, epochs, grid points) so that every chapter runs in
    seconds under nbval and CI; it never skips a code path. Accepted values, case-insensitive:
    ``1/true/yes/on`` and ``0/false/no/off`` (unset means off).
    """
    value = os.environ.get("QNNLIB_FAST", "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"QNNLIB_FAST must be one of 1/true/yes/on or 0/false/no/off, got {value!r}")


def __getattr__(name):
    # The estimator's warning, importable as qnnlib.UnreliableEstimateWarning without making
    # `import qnnlib` load torch.
    if name == "UnreliableEstimateWarning":
        from .uncertainty import UnreliableEstimateWarning

        return UnreliableEstimateWarning
    raise AttributeError(f"module 'qnnlib' has no attribute {name!r}")
