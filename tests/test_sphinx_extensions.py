"""The book's own Sphinx extensions in tools/: author–year bibliography labels, readable defaults."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import bibtex_author_year  # noqa: E402
import sphinx_readable_defaults as defaults  # noqa: E402
from pybtex.database import parse_file, parse_string  # noqa: E402
from pybtex.plugin import find_plugin  # noqa: E402

BIB = Path(__file__).resolve().parents[1] / "book" / "references.bib"


def labels(entries):
    style = find_plugin("pybtex.style.formatting", "author_year")()
    return [entry.label for entry in style.format_entries(entries)]


def test_labels_name_one_two_or_first_et_al_then_the_year():
    bib = parse_string(r"""
    @article{a, author = {Zhang, Jun-Jie and Meng, Deyu}, title = {Q}, journal = {J}, year = {2024}}
    @article{b, author = {Heisenberg, Werner}, title = {U}, journal = {Z}, year = {1927}}
    @article{c, author = {Goodfellow, Ian and Shlens, J. and Szegedy, C.}, title = {E}, journal = {I}, year = {2015}}
    @article{d, author = {van der Maaten, Laurens and Hinton, Geoffrey}, title = {T}, journal = {J}, year = {2008}}
    @article{e, author = {Bottou, L{\'e}on}, title = {S}, journal = {J}, year = {1998}}
    """, "bibtex")
    assert sorted(labels(bib.entries.values())) == sorted([
        "Zhang and Meng, 2024", "Heisenberg, 1927", "Goodfellow et al., 2015",
        "van der Maaten and Hinton, 2008", "Bottou, 1998"])


def test_same_author_and_year_get_letters():
    bib = parse_string(r"""
    @article{x1, author = {Owen, Art}, title = {A}, journal = {J}, year = {2013}}
    @article{x2, author = {Owen, Art}, title = {B}, journal = {J}, year = {2013}}
    """, "bibtex")
    assert sorted(labels(bib.entries.values())) == ["Owen, 2013a", "Owen, 2013b"]


def test_every_entry_of_the_book_gets_a_distinct_label_without_latex():
    found = labels(parse_file(str(BIB)).entries.values())
    assert len(found) == len(set(found))
    assert not any(ch in label for label in found for ch in "{}\\")
    assert "Zhang and Meng, 2024" in found


@pytest.mark.parametrize("text, expected", [
    ("0.03137254901960784", "8/255"), ("0.00784313725490196", "2/255"), ("0.00392156862745098", "1/255"),
    ("0.3333333333333333", "1/3"), ("0.1234567891", "0.123457"), ("-0.06274509803921569", "-16/255"),
])
def test_long_floats_become_fractions_or_six_digits(text, expected):
    assert defaults.readable_number(text) == expected


def test_signatures_keep_short_numbers_and_names():
    signature = "(seed=0, pgd_eps=0.03137254901960784, lr=0.001, sweep=(0.0, 0.00392156862745098), v2=1.5)"
    assert defaults.readable_signature(signature) == "(seed=0, pgd_eps=8/255, lr=0.001, sweep=(0.0, 1/255), v2=1.5)"
    assert defaults.readable_signature(None) is None
