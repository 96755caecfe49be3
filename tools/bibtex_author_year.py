"""Sphinx extension: the bibliography labelled by author and year, as the text cites it.

The book cites with sphinxcontrib-bibtex's ``author_year`` reference style ("Zhang and Meng,
2024"), but the bibliography's labels come from a pybtex formatting style, whose default
(``alpha``) prints "[ZM24]", a label the reader never saw in the text. This extension registers
the pybtex formatting style ``author_year`` (pybtex's ``plain``: entries sorted by author, year,
title) with labels built as the citations are: the last names (with "von" parts) of one or two
authors joined by "and", of three or more "First et al.", then ", " and the year. Two entries
with the same label get "a", "b", ... after the year.

Loaded by ``_config.yml`` (``sphinx: local_extensions: bibtex_author_year: tools/``), which sets
``bibtex_default_style: author_year``; ``tests/test_bibtex_author_year.py`` checks the labels.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter

import latexcodec  # noqa: F401 - registers the "ulatex" codec
from pybtex.plugin import register_plugin
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def _plain(latex: str) -> str:
    """LaTeX of a name ({\\'e}, {van}) as plain Unicode text."""
    text = codecs.decode(latex, "ulatex")
    return re.sub(r"[{}]", "", text).strip()


def _last_name(person) -> str:
    return _plain(" ".join(person.prelast_names + person.last_names))


def author_year_label(entry) -> str:
    """'Zhang and Meng, 2024', 'Goodfellow et al., 2015' for one pybtex entry (without suffix)."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(p) for p in persons]
    if not names:
        who = _plain(entry.fields.get("organization") or entry.fields.get("title", "Anonymous"))
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    year = _plain(entry.fields.get("year", "n.d."))
    return f"{who}, {year}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """pybtex label style: :func:`author_year_label`, with a, b, ... for repeated labels."""

    def format_labels(self, sorted_entries):
        entries = list(sorted_entries)
        labels = [author_year_label(entry) for entry in entries]
        repeated = {label for label, count in Counter(labels).items() if count > 1}
        seen = Counter()
        for label in labels:
            if label in repeated:
                seen[label] += 1
                label = f"{label}{chr(ord('a') + seen[label] - 1)}"
            yield label


class AuthorYearStyle(PlainStyle):
    """pybtex formatting style: ``plain`` with author-year labels."""

    default_label_style = AuthorYearLabelStyle


register_plugin("pybtex.style.labels", "author_year", AuthorYearLabelStyle)
register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)


def setup(app):
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
