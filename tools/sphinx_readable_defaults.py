"""Sphinx extension: default values on the API page as the code writes them (8/255).

``autodoc_preserve_defaults`` (set in ``_config.yml``) shows a function's defaults as written in
its source, but not those of dataclasses (their ``__init__`` is generated, so it has no source):
``ExperimentConfig(pgd_eps=0.03137254901960784, ...)``. This extension rewrites, in every
signature autodoc writes, a float with seven or more decimals that is a fraction k/d with a
small denominator (255 first: the pixel scale of the attacks) as ``k/d``; other long floats keep
six significant digits.

Loaded by ``_config.yml`` (``sphinx: local_extensions: sphinx_readable_defaults: tools/``);
``tests/test_sphinx_extensions.py`` checks it.
"""

from __future__ import annotations

import re
from fractions import Fraction

# Denominators tried in this order; 255 is the 8-bit pixel scale (ε = 8/255).
DENOMINATORS = (255, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 32, 64, 100, 128, 256, 1000)
LONG_FLOAT = re.compile(r"(?<![\w.])(-?\d+\.\d{7,})(?![\d])")


def readable_number(text: str) -> str:
    """'0.03137254901960784' → '8/255'; '0.1234567891' → '0.123457'; other text unchanged."""
    value = float(text)
    for denominator in DENOMINATORS:
        numerator = round(value * denominator)
        fraction = Fraction(numerator, denominator)  # in lowest terms: 85/255 is 1/3
        if numerator and float(fraction) == value:
            return str(fraction)
    return f"{value:.6g}"


def readable_signature(signature: str | None) -> str | None:
    """Every long float of a signature (or return annotation) made readable."""
    if not signature:
        return signature
    return LONG_FLOAT.sub(lambda match: readable_number(match.group(1)), signature)


def _process_signature(app, what, name, obj, options, signature, return_annotation):
    return readable_signature(signature), readable_signature(return_annotation)


def setup(app):
    app.connect("autodoc-process-signature", _process_signature)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
