"""The notebook pages as readers meet them: mkdocs-jupyter's HTML, finished for the site.

mkdocs-jupyter renders each notebook with nbconvert; `finish_notebook_page` then, on that HTML:
- drops the cell-tag badges (`nbval-ignore-output`, `colab`, …): tags are for the tests and the build,
  and they stay in the notebooks;
- gives each figure the alt text its notebook stores (`{"image/png": {"alt": ...}}`, written by
  `fmnist_lab.figure_alt` when the notebook ran) instead of nbconvert's placeholder;
- keeps code, prompts, plain-text outputs and the copy buttons out of the search index, so search
  previews show the prose (`data-search-exclude`, which Material's search plugin honours and then strips);
- leaves tab stops to `docs/javascripts/scrollable.js`, which puts one on each block that really scrolls;
- builds the page's table of contents from the headings as rendered, so each entry has the
  heading's own id and its whole text (mkdocs-jupyter builds it from a Markdown copy with the inline
  code removed, whose ids match nothing);
- on a solution page, titles the heading "Solution N · …" and adds a note that links back to the lesson;
- adds "Open in Colab" and "Download" buttons under the title.
HTML is parsed with BeautifulSoup, which nbconvert itself requires.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path

from bs4 import BeautifulSoup, Tag

HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
# What search leaves out of a notebook page: code and its copy, prompts, plain-text outputs (logs, checks).
NOT_FOR_SEARCH = [
    ".jp-CodeCell .jp-InputArea",
    ".jp-OutputPrompt",
    ".jp-RenderedText",
    ".zeroclipboard-container",
    ".clipboard-copy-txt",
]
LESSON_WORD, SOLUTION_WORD = "Lesson", "Solution"


@dataclass(frozen=True)
class NotebookPage:
    """What the finishing steps need to know about one notebook page."""

    notebook: Path  # the .ipynb the page renders
    kind: str  # "lesson" or "solution"
    colab_url: str
    lesson_url: str  # the lesson page, relative to this page (a solution's note links to it); "" if there is none
    lesson_title: str  # "Lesson 3 · Batch normalisation"


def solution_title(lesson_title: str) -> str:
    """'Lesson 3 · Batch normalisation' → 'Solution 3 · Batch normalisation'."""
    return re.sub(rf"^{LESSON_WORD}\b", SOLUTION_WORD, lesson_title)


def figure_alt_texts(notebook: Path) -> dict[str, str]:
    """Each stored figure's alt text, keyed by its base64 PNG (how the rendered page embeds it)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    texts = {}
    for output in (output for cell in cells for output in cell.get("outputs", [])):
        png, alt = output.get("data", {}).get("image/png"), output.get("metadata", {}).get("image/png", {})
        if png and isinstance(alt, dict) and alt.get("alt"):
            texts["".join(png).replace("\n", "")] = alt["alt"]
    return texts


def drop_tag_badges(soup: BeautifulSoup) -> None:
    """Remove the cell toolbars that show each cell's tags."""
    for toolbar in soup.select(".celltoolbar"):
        toolbar.decompose()


def give_figures_their_alt_text(soup: BeautifulSoup, texts: dict[str, str]) -> None:
    """Replace nbconvert's placeholder with the alt text stored beside each figure."""
    for image in soup.select("img[src^='data:image/png;base64,']"):
        text = texts.get(image["src"].split(",", 1)[1].replace("\n", ""))
        if text:
            image["alt"] = text


def exclude_from_search(element: Tag) -> None:
    """Mark `element` for Material's search to skip (it strips the attribute once it has read it).

    Its parser ends a skipped element at the first closing tag of the same name, so an element that holds
    one of its own kind (a div in a div) is marked child by child instead."""
    if element.find(element.name) is None:
        element["data-search-exclude"] = "true"
        return
    for child in element.find_all(recursive=False):
        exclude_from_search(child)


def keep_machinery_out_of_search(soup: BeautifulSoup) -> None:
    """Mark code, prompts and plain-text outputs so the search index holds the prose."""
    for element in soup.select(", ".join(NOT_FOR_SEARCH)):
        exclude_from_search(element)


def drop_blanket_tab_stops(soup: BeautifulSoup) -> None:
    """nbconvert makes every cell a tab stop; scrollable.js makes exactly the blocks that scroll focusable."""
    for element in soup.select(".jp-Cell-inputWrapper[tabindex], .jp-OutputArea-output[tabindex]"):
        del element["tabindex"]


def _is_permalink(piece) -> bool:
    """True for the '¶' link nbconvert puts in each heading (class anchor-link, then headerlink here)."""
    return (
        isinstance(piece, Tag)
        and piece.name == "a"
        and bool({"anchor-link", "headerlink"} & set(piece.get("class") or []))
    )


def heading_text(heading: Tag) -> str:
    """A heading's words, code included, without its '¶' permalink."""
    words = "".join(
        piece if isinstance(piece, str) else piece.get_text() for piece in heading.contents if not _is_permalink(piece)
    )
    return " ".join(words.split())


def unique_heading_ids(soup: BeautifulSoup) -> list[Tag]:
    """Every heading, each with an id no other element on the page has (its permalink follows it)."""
    taken = {element["id"] for element in soup.select("[id]") if element.name not in HEADINGS}
    headings = soup.find_all(HEADINGS)
    for heading in headings:
        base = heading.get("id") or re.sub(r"[^\w]+", "-", heading_text(heading).lower()).strip("-") or "section"
        wanted, n = base, 1
        while wanted in taken:
            wanted, n = f"{base}_{n}", n + 1
        taken.add(wanted)
        heading["id"] = wanted
        for link in filter(_is_permalink, heading.contents):
            link["href"], link["class"] = f"#{wanted}", ["headerlink"]  # Material's permalink: styled, not indexed
            link["title"] = "Permanent link"
    return headings


def toc_tokens(headings: list[Tag]) -> list[dict]:
    """The table of contents as MkDocs' toc tokens, nested by heading level."""
    root: list[dict] = []
    stack: list[dict] = []
    for heading in headings:
        level = int(heading.name[1])
        token = {
            "level": level,
            "id": heading["id"],
            "name": html.escape(heading_text(heading), quote=False),
            "children": [],
        }
        while stack and stack[-1]["level"] >= level:
            stack.pop()
        (stack[-1]["children"] if stack else root).append(token)
        stack.append(token)
    return root


def retitle_solution(soup: BeautifulSoup) -> None:
    """Title a solution page's first heading 'Solution N · …' (the notebook says 'Lesson N · …'), code kept."""
    heading = soup.find("h1")
    first = heading.contents[0] if heading is not None and heading.contents else None
    if isinstance(first, str):  # bs4 text is a str; the heading then holds its code, permalink and all
        first.replace_with(solution_title(str(first)))
        heading["id"] = re.sub(r"[^\w]+", "-", heading_text(heading).lower()).strip("-")


def page_header(page: NotebookPage) -> list[Tag]:
    """The buttons under the title, and on a solution page the note that leads back to the lesson."""
    name = page.notebook.name
    parts = [
        f'<p class="notebook-links" data-search-exclude="true"><a class="md-button md-button--primary" '
        f'href="{html.escape(page.colab_url)}">Open this {page.kind} in Colab</a> '
        f'<a class="md-button" href="{name}" download>Download this {page.kind} notebook ({name})</a></p>'
    ]
    if page.kind == "solution":
        lesson = html.escape(page.lesson_title)
        if page.lesson_url:
            lesson = f'<a href="{html.escape(page.lesson_url)}">{lesson}</a>'
        parts.append(
            '<div class="admonition info solution-note" data-search-exclude="true"><p class="admonition-title">'
            "The worked solution</p><p>This page is the lesson with every exercise answered and run. To try the "
            f"exercises yourself first, go back to {lesson}.</p></div>"
        )
    return [BeautifulSoup(part, "html.parser").contents[0] for part in parts]


def finish_notebook_page(rendered: str, page: NotebookPage) -> tuple[str, list[dict]]:
    """The page's HTML as readers get it, and its table of contents as toc tokens."""
    soup = BeautifulSoup(rendered, "html.parser")
    drop_tag_badges(soup)
    give_figures_their_alt_text(soup, figure_alt_texts(page.notebook))
    keep_machinery_out_of_search(soup)
    drop_blanket_tab_stops(soup)
    if page.kind == "solution":
        retitle_solution(soup)
    title = soup.find("h1")
    header = page_header(page)
    if title is not None:
        for element in reversed(header):
            title.insert_after(element)
    else:
        for element in reversed(header):
            soup.insert(0, element)
    tokens = toc_tokens(unique_heading_ids(soup))
    return str(soup), tokens
