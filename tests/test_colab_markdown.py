"""Tests for tools/colab_markdown.py: each MyST role and directive becomes plain Markdown.

Small synthetic snippets, one construct each, against a fake build (:class:`FakeBook`); the real
book is converted in tests/test_colab_edition.py.
"""

import sys
from pathlib import Path

import pytest
from myst_nb.core.variables import format_plain_text as mystnb_format

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_markdown as cm  # noqa: E402

BASE = "https://example.github.io/book/"


class FakeBook:
    """A build with one exercise, one theorem, two citations and a few glued values."""

    docname = "book/06_mnist"
    glued = {"acc": {"text/plain": "0.98765"}, "n": {"text/plain": "60000"},
             "name": {"text/plain": "'MNIST'"},
             "dev": {"text/plain": "'cpu'", "text/markdown": "**CPU**"},
             "note": {"text/markdown": "Runs: {cite}`robertson1929`.\n\nSecond paragraph."}}
    numbers = {"ex-06-a": "Exercise 6.2", "thm-r": "Theorem 1", "fig-loss": "Figure 6.1",
               "fig-06-traj": "Fig. 6.2", "tab-06-acc": "Table 6.1"}

    def glue(self, key):
        return self.glued[key]

    def page_url(self, docname, anchor=""):
        return BASE + docname + ".html" + (f"#{anchor}" if anchor else "")

    def page_title(self, docname):
        return {"book/04_derivation": "4. The derivation"}[docname]

    def target(self, label):
        page = "book/01_heisenberg" if label == "thm-r" else self.docname
        return self.page_url(page, label), {"ex-06-a": "Exercise 6.2", "thm-r": "Theorem 1",
                                            "fig-loss": "Figure 6.1", "sec-x": "The section",
                                            "fig-06-traj": "Fig. 6.2", "tab-06-acc": "Table 6.1"}[label]

    def number(self, label):
        return self.numbers[label].split()[-1]

    def numbered(self, label):
        return self.numbers[label]

    def image_url(self, path):
        return BASE + "_images/" + path.rsplit("/", 1)[-1]

    def citation(self, key):
        return {"robertson1929": ("Robertson, 1929", BASE + "book/references.html#id1"),
                "kennard1927": ("Kennard, 1927", BASE + "book/references.html#id2")}[key]


def convert(text, **kwargs):
    return cm.MystToMarkdown(FakeBook(), **kwargs).convert(text)


@pytest.mark.parametrize("text, spec", [("0.98765", ".2f"), ("60000", ",d"), ("0.98765", ".1%"),
                                        ("'MNIST'", "s"), ("60000", ""), ("1e-07", ".1e")])
def test_format_plain_text_agrees_with_myst_nb(text, spec):
    assert cm.format_plain_text(text, spec) == mystnb_format(text, spec)


def test_glue_text_is_the_glued_value_formatted_with_its_spec():
    assert convert("Accuracy {glue:text}`acc:.2%` on {glue:text}`n:,d` images of {glue:text}`name`.") == \
        "Accuracy 98.77% on 60,000 images of MNIST."


def test_glue_md_role_is_the_glued_markdown_and_is_itself_converted():
    assert convert("On {glue:md}`dev`.") == "On **CPU**."
    assert convert("{glue:md}`note`") == (
        "Runs: ([Robertson, 1929](https://example.github.io/book/book/references.html#id1)).\n\n"
        "Second paragraph.")


def test_cite_is_author_year_linked_to_the_bibliography():
    out = convert("As shown {cite}`robertson1929,kennard1927`.")
    assert out == (f"As shown ([Robertson, 1929]({BASE}book/references.html#id1); "
                   f"[Kennard, 1927]({BASE}book/references.html#id2)).")


def test_doc_links_to_the_published_page_with_its_title_or_the_given_text():
    assert convert("See {doc}`04_derivation`.") == f"See [4. The derivation]({BASE}book/04_derivation.html)."
    assert convert("See {doc}`Chapter 4 <04_derivation>`.") == f"See [Chapter 4]({BASE}book/04_derivation.html)."
    assert convert("{doc}`/book/04_derivation`") == f"[4. The derivation]({BASE}book/04_derivation.html)"


def test_ref_prf_ref_and_numref_show_what_the_book_shows():
    assert convert("{ref}`ex-06-a`") == f"[Exercise 6.2]({BASE}book/06_mnist.html#ex-06-a)"
    assert convert("{prf:ref}`thm-r`") == f"[Theorem 1]({BASE}book/01_heisenberg.html#thm-r)"
    assert convert("{ref}`this one <sec-x>`") == f"[this one]({BASE}book/06_mnist.html#sec-x)"
    assert convert("{numref}`fig-loss`") == f"[Figure 6.1]({BASE}book/06_mnist.html#fig-loss)"
    assert convert("{numref}`Fig. %s <fig-loss>`") == f"[Fig. 6.1]({BASE}book/06_mnist.html#fig-loss)"


def test_roles_inside_code_spans_and_code_blocks_stay_verbatim():
    text = "Write `{cite}` like ``{cite}`key` ``.\n\n```markdown\n{glue:text}`acc`\n```"
    assert convert(text) == text


EXERCISE = """````{exercise} Train it (again)
:label: ex-06-a

Train with $\\varepsilon = 0.1$, see {prf:ref}`thm-r`.
````

````{solution} ex-06-a
:class: dropdown

The answer is {glue:text}`acc:.3f`.

```python
print(1)
```
````"""


def test_exercise_gets_a_bold_numbered_heading_and_solution_a_collapsed_block():
    out = convert(EXERCISE)
    assert out.startswith("**Exercise 6.2 (Train it (again))**\n\nTrain with $\\varepsilon = 0.1$, see "
                          f"[Theorem 1]({BASE}book/01_heisenberg.html#thm-r).")
    details = out[out.index("<details>"):]
    assert details.startswith("<details>\n<summary><b>Solution to Exercise 6.2</b></summary>\n\n")
    assert details.endswith("</details>")
    assert "The answer is 0.988." in details and "```python\nprint(1)\n```" in details
    assert "answer" not in out[:out.index("<details>")]


def test_theorem_and_proof():
    out = convert("```{prf:theorem} Robertson's inequality\n:label: thm-r\n\nIt holds:\n\n$$\na \\ge b\n$$\n```\n\n"
                  "```{prf:proof}\nBy Cauchy–Schwarz.\n```")
    assert out == ("**Theorem 1 (Robertson's inequality)**\n\nIt holds:\n\n$$\na \\ge b\n$$\n\n"
                   "*Proof.* By Cauchy–Schwarz. ∎")


def test_proof_ending_in_display_math_puts_the_end_mark_on_its_own_line():
    out = convert("```{prf:proof}\n$$\nx = y\n$$\n```")
    assert out == "*Proof.*\n\n$$\nx = y\n$$\n\n∎"


def test_admonition_is_a_blockquote_with_a_bold_title():
    assert convert("```{note}\nTake care.\n\nTwo paragraphs.\n```") == \
        "> **Note**\n>\n> Take care.\n>\n> Two paragraphs."
    assert convert(":::{admonition} Fast mode\nSmall runs.\n:::") == "> **Fast mode**\n>\n> Small runs."


def test_glue_md_directive_in_a_note_is_converted_as_myst():
    assert convert("```{note}\n{glue:md}`note`\n```").startswith("> **Note**\n>\n> Runs: ([Robertson, 1929]")
    assert convert("```{glue:md} note\n:format: myst\n```").startswith("Runs: ([Robertson, 1929](")


def test_labelled_and_ams_math_become_plain_display_math():
    assert convert("$$\nx = 1\n$$ (eq-x)") == "$$\nx = 1\n$$"
    assert convert("\\begin{align}\na &= b\n\\end{align}") == "$$\n\\begin{align}\na &= b\n\\end{align}\n$$"
    assert convert("{math}`x^2`") == "$x^2$"


def test_mathjax_macros_of_the_config_are_expanded_in_math():
    macros = {"ket": ("\\left|#1\\right\\rangle", 1)}
    assert convert("State $\\ket{\\psi}$ and\n\n$$\n\\ket{ {a} }\n$$", macros=macros) == \
        "State $\\left|\\psi\\right\\rangle$ and\n\n$$\n\\left| {a} \\right\\rangle\n$$"
    assert convert("`\\ket{x}` stays", macros=macros) == "`\\ket{x}` stays"


def test_targets_and_comments_disappear():
    assert convert("(sec-x)=\n## A section\n\n% a comment\nText.") == "## A section\n\nText."


GLUE_FIGURE = """```{glue:figure} ch6_traj
:name: fig-06-traj
:figwidth: 90%

Δx and Δp per epoch of the recorded run `mnist-cnn3` ({glue:text}`n:,d` images), see {numref}`tab-06-acc`.
```"""


def test_glue_figure_is_its_numbered_caption_line_and_numref_the_number_the_book_shows():
    out = convert(GLUE_FIGURE + "\n\nAs {numref}`fig-06-traj` shows, and {numref}`Figure %s <fig-06-traj>`.")
    caption, prose = out.split("\n\n")
    assert caption == ("**Fig. 6.2.** Δx and Δp per epoch of the recorded run `mnist-cnn3` (60,000 images), see "
                       f"[Table 6.1]({BASE}book/06_mnist.html#tab-06-acc).")
    assert prose == (f"As [Fig. 6.2]({BASE}book/06_mnist.html#fig-06-traj) shows, and "
                     f"[Figure 6.2]({BASE}book/06_mnist.html#fig-06-traj).")


def test_figure_directive_is_the_published_image_and_its_caption_line():
    out = convert("```{figure} figures/traj.png\n:name: fig-06-traj\n:width: 80%\n\nThe *trajectory*.\n```")
    assert out == f"![The *trajectory*.]({BASE}_images/traj.png)\n\n**Fig. 6.2.** The *trajectory*."
    assert convert("```{figure} b.png\n:alt: a plot\n```") == f"![a plot]({BASE}_images/b.png)"


def test_table_directive_is_the_caption_line_then_the_table():
    out = convert(":::{table} Accuracy after {glue:text}`n:,d` images\n:name: tab-06-acc\n\n"
                  "| net | acc |\n|---|---|\n| CNN | {glue:text}`acc:.1%` |\n:::")
    assert out == "**Table 6.1.** Accuracy after 60,000 images\n\n| net | acc |\n|---|---|\n| CNN | 98.8% |"


LIST_TABLE = """```{list-table} Robust accuracy
:header-rows: 1
:name: tab-06-acc
:widths: 20 40

* - network
  - robust accuracy
* - MnistCNN3
  - {glue:text}`acc:.2f` (a | b),
    two lines
* - CNN4
  - `x`
```"""


def test_list_table_becomes_a_pipe_table_with_its_caption_line():
    assert convert(LIST_TABLE) == ("**Table 6.1.** Robust accuracy\n\n"
                                   "| network | robust accuracy |\n| --- | --- |\n"
                                   "| MnistCNN3 | 0.99 (a \\| b), two lines |\n| CNN4 | `x` |")
    headless = convert("```{list-table}\n* - a\n  - b\n* - c\n  - d\n```")
    assert headless == "|  |  |\n| --- | --- |\n| a | b |\n| c | d |"


def test_a_list_table_that_is_not_a_list_of_lists_is_an_error():
    with pytest.raises(ValueError, match="list-table"):
        convert("```{list-table}\nJust text.\n```")


@pytest.mark.parametrize("text", ["{abbr}`MNIST (a dataset)`", "```{youtube} abc\n```", ":::\nplain colon fence\n:::"])
def test_unknown_syntax_is_an_error_not_raw_text(text):
    with pytest.raises(ValueError):
        convert(text)


def test_counts_tally_each_role_and_directive():
    counts = cm.Counts({}, {})
    cm.MystToMarkdown(FakeBook(), counts=counts).convert(EXERCISE)
    assert counts.directives == {"exercise": 1, "solution": 1}
    assert counts.roles == {"prf:ref": 1, "glue:text": 1}


def test_leftover_syntax_finds_what_the_book_would_render():
    assert cm.leftover_syntax("{cite}`a`") == ["role {cite}"]
    assert cm.leftover_syntax("```{note}\nx\n```") == ["directive {note}"]
    assert cm.leftover_syntax("Plain *text* with $x$ and `{cite}`.") == []


def test_a_backtick_fence_whose_title_holds_a_role_is_named_as_the_books_own_error():
    # CommonMark allows no backtick in a backtick fence's info string: MyST (and so the book)
    # shows such a "directive" as raw text; the colon and tilde fences carry the same title fine.
    with pytest.raises(ValueError, match="open it with :::"):
        convert("```{table} Accuracy after {glue:text}`n:,d` images\n:name: tab-06-acc\n\n| a |\n|---|\n| 1 |\n```")
    assert convert("~~~{table} Accuracy after {glue:text}`n:,d` images\n:name: tab-06-acc\n\n| a |\n|---|\n| 1 |\n~~~") \
        .startswith("**Table 6.1.** Accuracy after 60,000 images")
