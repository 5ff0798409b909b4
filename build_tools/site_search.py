"""The search index as readers meet it: formulas as text, not raw TeX.

Material's search plugin indexes each page's HTML, where a formula is still the TeX that MathJax
typesets in the browser (`$\\lfloor (n + 2p - k)/s \\rfloor + 1$`). After the index is written,
`make_formulas_readable` turns each formula into Unicode text with pylatexenc
(`⌊(n + 2p - k)/s⌋ + 1`). Formulas are `\\(…\\)` and `\\[…\\]` everywhere (pymdownx.arithmatex), and
`$…$` and `$$…$$` on notebook pages only (Jupyter's convention; elsewhere a `$` is a shell variable).
Inline code is left as it is.
"""

from __future__ import annotations

import functools
import html
import json
import re
from pathlib import Path

INDEX = Path("search") / "search_index.json"
NOTEBOOK_FOLDERS = ("lessons/", "solutions/")
CODE = re.compile(r"(<code>.*?</code>|<pre>.*?</pre>)", flags=re.DOTALL)
ARITHMATEX = re.compile(r"\\\((.+?)\\\)|\\\[(.+?)\\\]", flags=re.DOTALL)
DOLLARS = re.compile(r"\$\$(.+?)\$\$|\$([^$]+?)\$", flags=re.DOTALL)


@functools.cache
def _converter():
    """pylatexenc's LaTeX-to-text converter, saying `\\frac{a}{b}` as (a)/(b) and keeping `\\arg` of `\\arg\\max`."""
    from pylatexenc.latex2text import LatexNodes2Text, MacroTextSpec, get_default_latex_context_db

    context = get_default_latex_context_db()
    context.add_context_category(
        "fmnist-lab",
        prepend=True,
        macros=[MacroTextSpec("frac", simplify_repl="(%(1)s)/(%(2)s)"), MacroTextSpec("arg", simplify_repl="arg")],
    )
    return LatexNodes2Text(latex_context=context, math_mode="text")


def formula_text(tex: str) -> str:
    """A formula as Unicode text, spaces tidied."""
    return " ".join(_converter().latex_to_text(html.unescape(tex)).split())


def readable(text: str, dollars: bool) -> str:
    """`text` with each formula outside inline code written as text."""

    def convert(match: re.Match) -> str:
        return html.escape(formula_text(next(group for group in match.groups() if group is not None)), quote=False)

    parts = CODE.split(text)
    for i in range(0, len(parts), 2):  # the even parts are outside code
        parts[i] = ARITHMATEX.sub(convert, parts[i])
        if dollars:
            parts[i] = DOLLARS.sub(convert, parts[i])
    return "".join(parts)


def make_formulas_readable(site_dir: Path) -> int:
    """Rewrite the site's search index with readable formulas; return how many entries changed."""
    path = Path(site_dir) / INDEX
    index = json.loads(path.read_text(encoding="utf-8"))
    changed = 0
    for entry in index["docs"]:
        dollars = entry["location"].startswith(NOTEBOOK_FOLDERS)
        for field in ("title", "text"):
            new = readable(entry[field], dollars)
            if new != entry[field]:
                entry[field], changed = new, changed + 1
    path.write_text(json.dumps(index, separators=(",", ":")), encoding="utf-8")
    return changed
