"""MyST Markdown -> the plain Markdown that Colab renders (used by ``tools/colab_edition.py``).

Colab shows CommonMark with ``$…$``/``$$…$$`` math (MathJax) and a little HTML (``<details>``),
and nothing of MyST: a role like ``{cite}`key``` or a ```` ```{exercise} ```` fence is shown as
raw text. :class:`MystToMarkdown` rewrites one notebook's Markdown cells:

* roles — ``glue:text``/``glue`` (the glued ``text/plain`` with its format spec, exactly as
  MyST-NB formats it), ``glue:md`` (the glued ``text/markdown``), ``cite`` (author–year text linked
  to the bibliography page), ``doc``/``ref``/``prf:ref``/``numref``/``eq`` (links to the published
  pages, with the text the HTML book shows), ``math`` (``$…$``);
* directives — ``exercise`` ("**Exercise 3 (title)**"), ``solution`` (a collapsed
  ``<details>`` block), ``prf:*`` ("**Theorem 1 (title)**"; proofs as "*Proof.* … ∎"),
  admonitions (a blockquote with a bold title), ``glue:md``, ``math``, ``code-block``;
  ``glue:figure`` (the caption line "**Fig. 6.2.** caption": in Colab the glued figure itself is
  shown under the cell that glued it, by ``qnnlib.glue``), ``figure``/``image`` (the image from
  the published book, then the caption line), ``table`` and ``list-table`` (the caption line
  "**Table 6.1.** title", then a pipe table), numbered as the built book numbers them;
* labelled ``$$…$$ (label)`` and bare ``\\begin{align}`` blocks become plain ``$$…$$``;
  MathJax macros of ``_config.yml`` are expanded in the math, since Colab does not know them.

What only the build knows (glued values, numbers, titles, anchors, author–year labels) comes from
a :class:`Resolver`. The block structure comes from myst-parser's own tokenizer (the exact MyST
grammar of the book, with the extensions of ``_config.yml``); anything it still finds after
conversion (a role or directive this module does not know) raises ``ValueError`` rather than
reaching a reader as raw text.
"""

from __future__ import annotations

import re
import textwrap
from ast import literal_eval
from dataclasses import dataclass
from typing import Protocol

from markdown_it.renderer import RendererHTML
from myst_parser.config.main import MdParserConfig
from myst_parser.parsers.mdit import create_md_parser

# The extensions of _config.yml (parse.myst_enable_extensions).
EXTENSIONS = {"amsmath", "colon_fence", "dollarmath", "linkify", "substitution"}
ADMONITIONS = {"note", "tip", "hint", "important", "warning", "caution", "attention", "danger",
               "error", "seealso", "admonition"}
# sphinx-proof directives that state something (a numbered, titled block); prf:proof is separate.
PROOF_KINDS = {"theorem", "lemma", "corollary", "proposition", "definition", "conjecture", "axiom",
               "criterion", "example", "remark", "property", "observation", "assumption",
               "notation", "algorithm"}
# A role, or an inline code span (whose text is left alone): a role's content is a code span.
_ROLE_OR_CODE = re.compile(r"\{(?P<name>[\w:.+-]+)\}(?P<ticks>`+)(?P<content>.+?)(?P=ticks)"
                           r"|(?P<code>(?P<cticks>`+).+?(?P=cticks))", re.S)
_EXPLICIT = re.compile(r"^(?P<text>.*?)\s*<(?P<target>[^<>]+)>$", re.S)
_OPTION = re.compile(r"^:(?P<key>[\w-]+):\s*(?P<value>.*)$")
_DIRECTIVE = re.compile(r"^\{(?P<name>[\w:.+-]+)\}\s*(?P<arg>.*)$")
_BACKTICK_INFO = re.compile(r"^ {0,3}`{3,}\{[\w:.+-]+\}[^\n]*`", re.M)


class Resolver(Protocol):
    """What the executed build knows, for one page (``docname``, e.g. ``book/06_mnist``)."""

    docname: str

    def glue(self, key: str) -> dict:
        """The MIME bundle glued under ``key`` on this page (``{"text/plain": ...}``)."""

    def page_url(self, docname: str, anchor: str = "") -> str:
        """The published URL of a page (and anchor)."""

    def page_title(self, docname: str) -> str:
        """The title of a page as the book shows it."""

    def target(self, label: str) -> tuple[str, str]:
        """(URL, text the book's reference to ``label`` shows) for a ref/prf:ref/numref target."""

    def number(self, label: str) -> str:
        """The number the book gives the labelled figure/exercise/theorem/equation ("6.2")."""

    def numbered(self, label: str) -> str:
        """The numbered name the book gives a labelled exercise, theorem, figure or table
        ("Exercise 6.2", "Fig. 6.2", "Table 6.1")."""

    def image_url(self, path: str) -> str:
        """The published URL of the image that a ``figure``/``image`` directive shows (``path`` as written)."""

    def citation(self, key: str) -> tuple[str, str]:
        """(author–year text, URL of its bibliography entry) of a citation key."""


def format_plain_text(text: str, spec: str) -> str:
    """Format glued ``text/plain`` with a format spec the way MyST-NB's ``{glue:text}`` does."""
    try:
        value = literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if spec == "":
        return str(value)
    kind = spec[-1]
    if kind == "s":
        value = str(value)
    elif kind in "bcdoxX":
        value = int(value)
    elif kind in "eEfFgGn%":
        value = float(value)
    return format(value, spec)


def expand_macros(math: str, macros: dict[str, tuple[str, int]]) -> str:
    r"""Replace ``\name{a}{b}`` by the macro's body with ``#1``, ``#2`` filled in (MathJax macros)."""
    for name, (body, nargs) in macros.items():
        pattern = re.compile(r"\\" + re.escape(name) + r"(?![A-Za-z])")
        out, pos = [], 0
        while match := pattern.search(math, pos):
            args, end = [], match.end()
            for _ in range(nargs):
                while end < len(math) and math[end].isspace():
                    end += 1
                if end >= len(math) or math[end] != "{":
                    raise ValueError(f"macro \\{name} needs {nargs} braced arguments in: {math!r}")
                depth, start = 0, end
                for end in range(start, len(math)):
                    depth += {"{": 1, "}": -1}.get(math[end], 0)
                    if depth == 0:
                        break
                args.append(math[start + 1:end])
                end += 1
            text = body
            for k, arg in enumerate(args, 1):
                text = text.replace(f"#{k}", arg)
            out += [math[pos:match.start()], text]
            pos = end
        math = "".join(out) + math[pos:]
    return math


@dataclass
class Counts:
    """How many of each role and directive were converted (reported by the CLI)."""

    roles: dict
    directives: dict

    def add(self, table: str, name: str) -> None:
        counts = getattr(self, table)
        counts[name] = counts.get(name, 0) + 1


def _parser():
    return create_md_parser(MdParserConfig(enable_extensions=EXTENSIONS), RendererHTML)


def leftover_syntax(text: str) -> list[str]:
    """The MyST constructs myst-parser still finds in ``text`` (empty for plain Markdown)."""
    found = []
    for token in _parser().parse(text):
        if token.type in ("fence", "colon_fence") and _DIRECTIVE.match(token.info.strip()):
            found.append(f"directive {token.info.strip()}")
        elif token.type in ("math_block_label", "amsmath", "myst_target", "myst_line_comment",
                            "myst_block_break", "colon_fence"):
            found.append(token.type)
        for child in token.children or []:
            if child.type == "myst_role":
                found.append(f"role {{{child.meta['name']}}}")
    return found


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))


class MystToMarkdown:
    """Converts the MyST Markdown of one page to plain Markdown for Colab."""

    def __init__(self, resolver: Resolver, macros: dict[str, tuple[str, int]] | None = None,
                 counts: Counts | None = None):
        self.resolver = resolver
        self.macros = macros or {}
        self.counts = counts if counts is not None else Counts({}, {})
        self.parser = _parser()

    # -- blocks -------------------------------------------------------------------------------

    def convert(self, text: str) -> str:
        """Convert a Markdown cell (or a directive's body) to plain Markdown."""
        broken = _BACKTICK_INFO.search(text)
        if broken:   # CommonMark: no backtick in a backtick fence's info string, so no directive
            raise ValueError(f"{broken[0][:60]!r}...: a ```{{directive}} line whose title holds a backtick (a role) "
                             "is not a directive, and the book shows it as raw text: open it with :::{directive} "
                             "or ~~~{directive} instead")
        lines = text.split("\n")
        out, done = [], 0
        for token in self.parser.parse(text):
            if token.level != 0 or token.map is None:
                continue
            start, end = token.map
            if token.type == "amsmath" and end < len(lines) and "\\end{" in lines[end]:
                end += 1   # mdit-py-plugins' amsmath map ends at the \end line, not after it
            block = self._block(token, lines[start:end])
            if block is None:
                continue
            # A converted block stands alone: blank lines around it (an HTML block such as
            # <details> would otherwise swallow the paragraph that follows it).
            out += [self.inline("\n".join(lines[done:start])), block]
            done = end
        out.append(self.inline("\n".join(lines[done:])))
        result = "\n\n".join(chunk.strip("\n") for chunk in out if chunk.strip())
        leftover = leftover_syntax(result)
        if leftover:
            raise ValueError(f"unsupported MyST syntax: {', '.join(leftover)}")
        return result

    def _block(self, token, lines: list[str]) -> str | None:
        """The replacement of a top-level block, or None to keep it (roles rewritten)."""
        if token.type == "math_block_label":   # $$ … $$ (label): Colab cannot number it
            self.counts.add("directives", "labelled equation")
            return self._display_math(token.content)
        if token.type == "amsmath":
            self.counts.add("directives", "amsmath")
            return self._display_math(token.content)
        if token.type == "math_block":
            return self._display_math(token.content)
        if token.type in ("myst_target", "myst_line_comment", "myst_block_break"):
            return ""
        if token.type in ("fence", "colon_fence"):
            match = _DIRECTIVE.match(token.info.strip())
            if match:
                return self.directive(match["name"], match["arg"].strip(), token.content)
            return "\n".join(lines)   # a plain code block: verbatim, roles and all
        if token.type in ("code_block", "html_block"):
            return "\n".join(lines)
        return None   # paragraphs, headings, lists, quotes, tables: only their roles change

    def _display_math(self, content: str) -> str:
        return f"$$\n{expand_macros(content.strip(), self.macros)}\n$$"

    # -- directives ---------------------------------------------------------------------------

    @staticmethod
    def _options(body: str) -> tuple[dict[str, str], str]:
        lines = body.split("\n")
        options, k = {}, 0
        if lines and lines[0].strip() == "---":   # YAML block of options
            end = lines.index("---", 1)
            for line in lines[1:end]:
                key, _, value = line.partition(":")
                options[key.strip()] = value.strip()
            k = end + 1
        else:
            while k < len(lines) and (match := _OPTION.match(lines[k].strip())):
                options[match["key"]] = match["value"].strip()
                k += 1
        return options, "\n".join(lines[k:]).strip("\n")

    def directive(self, name: str, arg: str, body: str) -> str:
        options, content = self._options(body)
        self.counts.add("directives", name)
        kind = name.removeprefix("prf:")
        if name == "exercise" or (name.startswith("prf:") and kind in PROOF_KINDS):
            # "Exercise 6.2 (title)": the number from the build, the title from the source.
            label = options.get("label")
            heading = self.resolver.numbered(label) if label else kind.capitalize()
            if arg:
                heading += f" ({self.inline(arg)})"
            return f"**{heading}**\n\n{self.convert(content)}"
        if name == "solution":
            text = f"Solution to {self.resolver.numbered(arg)}" if arg else "Solution"
            return (f"<details>\n<summary><b>{text}</b></summary>\n\n{self.convert(content)}\n\n"
                    "</details>")
        if name == "prf:proof":
            return self._proof(self.convert(content))
        if name in ADMONITIONS:
            title = self.inline(arg) if name == "admonition" else name.capitalize()
            if name == "seealso":
                title = "See also"
            return _quote(f"**{title}**\n\n{self.convert(content)}")
        if name == "glue:md" or name == "glue:markdown":
            markdown = self.resolver.glue(arg)["text/markdown"]
            return self.convert(markdown) if options.get("format") == "myst" else markdown
        if name == "math":
            return self._display_math(content)
        if name in ("glue:figure", "glue:any", "glue"):
            # The value itself is shown under the code cell that glued it (qnnlib.glue, no myst-nb).
            return self._caption(options.get("name"), content, "Figure")
        if name in ("figure", "image"):
            alt = options.get("alt") or (self.inline(content).split("\n")[0] if content else "")
            image = f"![{alt}]({self.resolver.image_url(arg)})"
            caption = self._caption(options.get("name"), content, "Figure") if name == "figure" else ""
            return f"{image}\n\n{caption}".strip("\n")
        if name == "table":
            return f"{self._caption(options.get('name'), arg, 'Table')}\n\n{self.convert(content)}".strip("\n")
        if name == "list-table":
            return (f"{self._caption(options.get('name'), arg, 'Table')}\n\n"
                    f"{self._list_table(content, int(options.get('header-rows', 0) or 0))}").strip("\n")
        if name in ("code-block", "code", "sourcecode"):
            return f"```{arg}\n{content}\n```"
        raise ValueError(f"unsupported directive {{{name}}}")

    def _caption(self, label: str | None, text: str, kind: str) -> str:
        """"**Fig. 6.2.** caption" (the number the built book gives ``label``); "" for neither."""
        text = self.convert(text) if text else ""
        if label:
            number = self.resolver.numbered(label)
            return f"**{number}.** {text}".rstrip()
        return f"**{kind}.** {text}".rstrip() if text else ""

    def _list_table(self, body: str, header_rows: int) -> str:
        """A ``list-table`` body (a list of rows, each a list of cells) as a Markdown pipe table."""
        tokens = self.parser.parse(body)
        lines = body.split("\n")
        rows, depth, row = [], 0, None
        for token in tokens:
            if token.type == "bullet_list_open":
                depth += 1
            elif token.type == "bullet_list_close":
                depth -= 1
            elif token.type == "list_item_open" and depth == 1:
                row = []
                rows.append(row)
            elif token.type == "list_item_open" and depth == 2:
                start, end = token.map
                first = re.sub(r"^\s*([-*+]\s+)+", "", lines[start])   # the row's and the cell's bullets
                text = "\n".join([first, textwrap.dedent("\n".join(lines[start + 1:end]))]).strip()
                cell = " ".join(self.convert(text).split())
                row.append(cell.replace("|", "\\|"))
        if not rows or not all(rows):
            raise ValueError("list-table: the body must be a list of rows, each a list of cells")
        width = max(len(r) for r in rows)
        rows = [r + [""] * (width - len(r)) for r in rows]
        head, rest = (rows[:1], rows[1:]) if header_rows else ([[""] * width], rows)
        if header_rows > 1:   # Markdown tables have one header row: the others become bold body rows
            rest = [[f"**{c}**" if c else c for c in r] for r in rows[1:header_rows]] + rows[header_rows:]
        table = [head[0], ["---"] * width, *rest]
        return "\n".join("| " + " | ".join(r) + " |" for r in table)

    @staticmethod
    def _proof(text: str) -> str:
        first = text.lstrip("\n")
        starts_plain = first and not re.match(r"(\$\$|```|~~~|#|>|[-*+] |\d+[.)] |<|\|)", first)
        text = f"*Proof.* {first}" if starts_plain else f"*Proof.*\n\n{first}"
        last = text.rstrip().split("\n")[-1]
        plain_end = not re.match(r"\s*(\$\$|```|~~~|</|\|)", last)
        return f"{text.rstrip()} ∎" if plain_end else f"{text.rstrip()}\n\n∎"

    # -- roles --------------------------------------------------------------------------------

    def inline(self, text: str) -> str:
        """Rewrite every role of a run of inline Markdown, and expand the math macros outside
        code spans (a macro name like ``\\ket`` occurs in the prose only inside math)."""
        out, pos = [], 0
        for match in _ROLE_OR_CODE.finditer(text):
            out.append(expand_macros(text[pos:match.start()], self.macros))
            if match["code"]:
                out.append(match["code"])
            else:
                self.counts.add("roles", match["name"])
                out.append(self.role(match["name"], match["content"]))
            pos = match.end()
        out.append(expand_macros(text[pos:], self.macros))
        return "".join(out)

    def role(self, name: str, content: str) -> str:
        explicit = _EXPLICIT.match(content)
        text, target = (explicit["text"], explicit["target"]) if explicit else ("", content)
        if name == "glue:text":   # key:spec, as MyST-NB splits it (the spec defaults to "s")
            key, spec = content.rsplit(":", 1) if ":" in content else (content, "s")
            return format_plain_text(self.resolver.glue(key)["text/plain"], spec)
        if name == "glue":
            return format_plain_text(self.resolver.glue(content)["text/plain"], "")
        if name in ("glue:md", "glue:markdown"):
            key = content.rsplit(":", 1)[0] if content.endswith((":myst", ":commonmark")) else content
            return self.inline(self.resolver.glue(key)["text/markdown"].strip())
        if name == "doc":
            docname = self._docname(target)
            return f"[{text or self.resolver.page_title(docname)}]({self.resolver.page_url(docname)})"
        if name in ("ref", "prf:ref", "eq"):
            url, shown = self.resolver.target(target)
            return f"[{text or shown}]({url})"
        if name == "numref":
            url, shown = self.resolver.target(target)   # without a text: what the book shows
            if text:
                number = self.resolver.number(target)
                shown = text.replace("%s", number).replace("{number}", number)
            return f"[{shown}]({url})"
        if name.startswith("cite"):
            parts = [self.resolver.citation(key.strip()) for key in content.split(",")]
            links = "; ".join(f"[{label}]({url})" for label, url in parts)
            return links if name == "cite:t" else f"({links})"
        if name == "math":
            return f"${expand_macros(content, self.macros)}$"
        raise ValueError(f"unsupported role {{{name}}}")

    def _docname(self, target: str) -> str:
        """``04_derivation`` (relative to this page's folder) or ``/book/04_derivation`` -> docname."""
        target = target.removesuffix(".md").removesuffix(".ipynb")
        if target.startswith("/"):
            return target.lstrip("/")
        folder = self.resolver.docname.rpartition("/")[0]
        parts = (folder.split("/") if folder else []) + target.split("/")
        out = []
        for part in parts:
            if part == "..":
                out.pop()
            elif part not in (".", ""):
                out.append(part)
        return "/".join(out)
