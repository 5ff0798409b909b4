"""The site as its readers meet it (issue 13): working contents, no test machinery, accessible, dark mode, phones.

The sweep: for each of light and dark mode at desktop (1280×800) and phone (390×844) width, one browser
context (one tab) visits every page of the navigation and checks that the page answers 200, logs no console or page
error, asks no other host for anything, has no critical or serious axe-core violation, that every in-page
link lands on an element, that no "nbval" is visible and that no image has a placeholder for its alt text.
It prints how long each combination took and axe's totals by impact, and saves screenshots of the home
page, a lesson and the demo into tests/artifacts/.

The built HTML and search index are checked too: every `href="#…"` names an id of its page, headings never
skip a level, search previews hold prose (no code, prompts, tags or raw TeX), lessons and solutions have
their own titles and the solutions rank below, the last lesson leads on to the rest of the site, and the
home page's syllabus has its formulas typeset and its objectives whole.
"""

from __future__ import annotations

import collections
import html
import html.parser
import json
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import AXE, REPO, build_tool
from test_site import ARTIFACTS, nav_urls

PLACEHOLDER_ALT = "No description has been provided for this image"  # nbconvert's, for a figure without alt text
BLOCKING = ("critical", "serious")
COMBINATIONS = {
    "light-desktop": ("light", {"width": 1280, "height": 800}),
    "dark-desktop": ("dark", {"width": 1280, "height": 800}),
    "light-phone": ("light", {"width": 390, "height": 844}),
    "dark-phone": ("dark", {"width": 390, "height": 844}),
}
SCREENSHOTS = {"": "home", "lessons/03_batch_norm/": "lesson_03", "demo/": "demo"}
DEMO_READY_MS = 120_000

# MathJax 2 posts "End" when it has typeset the page; a hook registered later is called at once.
MATHJAX_DONE = """() => new Promise((done) => window.MathJax && MathJax.Hub
  ? MathJax.Hub.Register.StartupHook("End", () => done()) : done())"""
AXE_RUN = "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
# What a reader meets on the page, gathered in one round trip: in-page links whose target is missing, whether
# "nbval" is visible, images whose alt text is missing or a placeholder, and the colour scheme in force.
READER_VIEW = """(placeholder) => ({
  deadLinks: [...document.querySelectorAll('a[href^="#"]')].map((a) => a.getAttribute("href"))
    .filter((href) => href.length > 1 && !document.getElementById(decodeURIComponent(href.slice(1)))),
  nbvalVisible: document.body.innerText.toLowerCase().includes("nbval"),
  badAlt: [...document.images].filter((i) => !i.alt || !i.alt.trim() || i.alt === placeholder)
    .map((i) => (i.alt || "(none)") + " " + i.src.slice(0, 40)),
  scheme: document.body.getAttribute("data-md-color-scheme"),
})"""


@pytest.fixture(scope="module")
def urls(browser, server) -> list[str]:
    """Every page of the navigation (the home page's)."""
    found = nav_urls(browser, server)
    assert len(found) >= 20, found
    return found


class Tab:
    """A browser tab, recording console errors and requests to other hosts for the page it shows."""

    def __init__(self, context, host: str):
        self.page = context.new_page()
        self.host = host
        self.url = ""
        self.status = 0
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", self._request)

    def _request(self, request) -> None:
        """Note a request that leaves this site's host."""
        parts = urlparse(request.url)
        if parts.scheme in ("http", "https") and parts.netloc != self.host:
            self.foreign.append(request.url)

    def load(self, url: str) -> None:
        """Load `url` with a clean record, its formulas typeset and (the demo) its model ready."""
        self.url, self.errors[:], self.foreign[:] = url, [], []
        response = self.page.goto(url, wait_until="load")
        self.status = response.status if response else 0
        self.page.evaluate(MATHJAX_DONE)
        if urlparse(url).path.endswith("/demo/"):
            self.page.wait_for_selector("#demo-result[data-ready='true']", timeout=DEMO_READY_MS)

    def problems(self, scheme: str, impacts: collections.Counter) -> list[str]:
        """Everything a reader would trip over on this tab's page, one line each."""
        where = urlparse(self.url).path
        problems = [f"{where}: HTTP {self.status}"] if self.status != 200 else []
        self.page.add_script_tag(path=str(AXE))
        for violation in self.page.evaluate(AXE_RUN):
            impacts[violation["impact"]] += len(violation["nodes"])
            if violation["impact"] in BLOCKING:
                targets = ", ".join(str(node["target"]) for node in violation["nodes"][:3])
                problems.append(
                    f"{where}: axe {violation['impact']} {violation['id']} on {len(violation['nodes'])} nodes, "
                    f"e.g. {targets}"
                )
        view = self.page.evaluate(READER_VIEW, PLACEHOLDER_ALT)
        problems += [f"{where}: console: {error}" for error in self.errors]
        problems += [f"{where}: request to another host: {url}" for url in self.foreign]
        problems += [f"{where}: in-page link {href} lands nowhere" for href in view["deadLinks"]]
        problems += [f"{where}: 'nbval' is visible"] if view["nbvalVisible"] else []
        problems += [f"{where}: image without its own alt text: {alt}" for alt in view["badAlt"]]
        expected = "slate" if scheme == "dark" else "default"
        problems += [f"{where}: colour scheme {view['scheme']}, not {expected}"] if view["scheme"] != expected else []
        return problems

    def screenshot(self, name: str, combination: str) -> Path:
        """The page into tests/artifacts/: the lesson at its first figure, the others whole."""
        ARTIFACTS.mkdir(exist_ok=True)
        target = ARTIFACTS / f"{name}_{combination}.png"
        if name == "lesson_03":
            self.page.locator(".jp-RenderedImage img").first.scroll_into_view_if_needed()
            self.page.wait_for_timeout(500)  # Material's header swaps the site name for the page title as it scrolls
            self.page.screenshot(path=str(target))
        else:
            self.page.screenshot(path=str(target), full_page=True)
        return target


@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_every_page_as_readers_meet_it(browser, server, urls, combination):
    scheme, viewport = COMBINATIONS[combination]
    context = browser.new_context(viewport=viewport, color_scheme=scheme)
    tab = Tab(context, urlparse(server).netloc)
    problems: list[str] = []
    impacts: collections.Counter = collections.Counter()
    started = time.monotonic()
    try:
        for url in urls:
            tab.load(url)
            problems += tab.problems(scheme, impacts)
            name = SCREENSHOTS.get(url.removeprefix(server))
            if name:
                assert tab.screenshot(name, combination).stat().st_size > 10_000
    finally:
        context.close()
    print(
        f"\n{combination}: {len(urls)} pages in {time.monotonic() - started:.0f} s; "
        f"axe nodes by impact: {dict(sorted(impacts.items()))}"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ---- The built HTML and the search index -------------------------------------------------------------------


class _Anchors(html.parser.HTMLParser):
    """The ids, the in-page hrefs and the heading levels of one HTML page."""

    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.headings: list[int] = []
        self._in_content = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and (attrs.get("href") or "").startswith("#") and len(attrs["href"]) > 1:
            self.hrefs.append(attrs["href"])
        if tag == "article":
            self._in_content += 1
        if self._in_content and re.fullmatch(r"h[1-6]", tag):
            self.headings.append(int(tag[1]))

    def handle_endtag(self, tag):
        if tag == "article":
            self._in_content -= 1


def parsed(path: Path) -> _Anchors:
    """One built page's ids, in-page links and headings."""
    parser = _Anchors()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_in_page_link_of_every_built_page_names_an_id(site):
    pages = sorted(site.rglob("*.html"))
    dead = [
        f"{page.relative_to(site)}: {href}"
        for page in pages
        for anchors in [parsed(page)]
        for href in anchors.hrefs
        if href[1:] not in anchors.ids
    ]
    links = sum(len(parsed(page).hrefs) for page in pages)
    print(f"\n{links} in-page links on {len(pages)} pages, {len(dead)} dead")
    assert len(pages) > 20 and links > 500
    assert dead == []


def test_the_notebook_tables_of_contents_keep_the_code_in_their_headings(site):
    page = (site / "lessons" / "03_batch_norm" / "index.html").read_text(encoding="utf-8")
    entry = re.search(r'<a href="#4-cnnbatch-the-original-cnn_batch" class="md-nav__link">(.*?)</a>', page, re.S)
    assert entry and " ".join(re.sub(r"<[^>]+>", " ", entry.group(1)).split()) == "4 · CNNBatch: the original CNN_batch"
    assert '<h2 id="4-cnnbatch-the-original-cnn_batch">' in page


def test_headings_never_skip_a_level(site):
    skips = []
    for page in sorted(site.rglob("*.html")):
        levels = parsed(page).headings
        skips += [f"{page.relative_to(site)}: h{a} → h{b}" for a, b in zip(levels, levels[1:]) if b > a + 1]
    assert skips == []


@pytest.fixture(scope="module")
def search_index(site) -> list[dict]:
    """The site's search entries."""
    return json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))["docs"]


def test_search_previews_hold_prose_not_machinery_or_raw_tex(search_index):
    notebook_entries = [e for e in search_index if e["location"].startswith(("lessons/", "solutions/"))]
    assert len(notebook_entries) > 100
    text = "\n".join(e["title"] + " " + e["text"] for e in search_index)
    for machinery in ("nbval", "In\xa0[", "In [", "Copied!", "Open this lesson in Colab", "¶"):
        assert machinery not in text, machinery
    assert not re.search(r"\\\(|\\\[|\\frac|\\lfloor|\\gamma|\$\\", text), "raw TeX in the search index"
    lesson_02 = " ".join(e["text"] for e in search_index if e["location"].startswith("lessons/02_plain_cnn/"))
    assert "⌊(n + 2p - k)/s ⌋+ 1" in lesson_02 or "⌊(n + 2p - k)/s⌋ + 1" in lesson_02  # the formula as text
    assert "import torch" not in text  # code stays out


def test_lessons_and_solutions_have_their_own_titles_and_solutions_rank_below(site, search_index):
    lesson = (site / "lessons" / "03_batch_norm" / "index.html").read_text(encoding="utf-8")
    solution = (site / "solutions" / "03_batch_norm" / "index.html").read_text(encoding="utf-8")
    assert "<title>Lesson 3 · Batch normalisation - fmnist-lab</title>" in lesson
    assert "<title>Solution 3 · Batch normalisation - fmnist-lab</title>" in solution
    assert re.search(r"<h1 id=\"solution-3-batch-normalisation\">Solution 3 · Batch normalisation", solution)
    titles = {e["location"]: e["title"] for e in search_index}
    assert titles["lessons/03_batch_norm/#lesson-3-batch-normalisation"] == "Lesson 3 · Batch normalisation"
    assert titles["solutions/03_batch_norm/#solution-3-batch-normalisation"] == "Solution 3 · Batch normalisation"
    boosts = {e.get("boost", 1) for e in search_index if e["location"].startswith("solutions/")}
    assert boosts == {0.5}
    assert all(e.get("boost", 1) == 1 for e in search_index if e["location"].startswith("lessons/"))


def test_each_solution_page_leads_back_to_its_lesson(site):
    for page in sorted((site / "solutions").glob("*/index.html")):
        text = page.read_text(encoding="utf-8")
        note = re.search(r'class="admonition info solution-note".*?href="([^"]+)">(Lesson \d+ · [^<]+)</a>', text, re.S)
        assert note, page
        assert note.group(1) == f"../../lessons/{page.parent.name}/"
        assert (site / "lessons" / page.parent.name / "index.html").is_file()


def test_next_from_the_last_lesson_is_the_rest_of_the_site_not_a_solution(site):
    lessons = sorted((site / "lessons").glob("*/index.html"))
    last = lessons[-1].read_text(encoding="utf-8")
    following = re.search(r'<a href="([^"]+)" class="md-footer__link md-footer__link--next"', last)
    assert following and following.group(1) == "../../demo/"
    solutions = sorted((site / "solutions").glob("*/index.html"))
    second = solutions[1].read_text(encoding="utf-8")
    assert re.search(r'href="../01_data/" class="md-footer__link md-footer__link--prev"', second)


def test_markdown_pages_can_be_edited_and_the_header_links_to_the_repository(site):
    from fmnist_lab.notebooks import repository

    url = repository(REPO).url
    home = (site / "index.html").read_text(encoding="utf-8")
    assert f'href="{url}/edit/main/docs/index.md"' in home and 'rel="edit"' in home
    assert f'href="{url}" title="Go to repository" class="md-source"' in home
    lesson = (site / "lessons" / "03_batch_norm" / "index.html").read_text(encoding="utf-8")
    assert 'rel="edit"' not in lesson  # a notebook page has Colab and Download instead
    assert ">Open this lesson in Colab</a>" in lesson
    assert re.search(r'href="03_batch_norm.ipynb"[^>]*>Download this lesson notebook', lesson)


def test_the_syllabus_has_whole_objectives_and_typeset_formulas(browser, server):
    site_hooks = build_tool("site_hooks")
    page = browser.new_page()
    page.goto(server, wait_until="networkidle")
    page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0", timeout=60_000)
    syllabus = page.locator("table").first
    text = " ".join(syllabus.inner_text().split())
    for path in sorted((REPO / "lessons").glob("*.ipynb")):
        _, objectives, _ = site_hooks.notebook_intro(path)
        assert objectives, path
        for objective in objectives:
            plain = re.sub(r"`([^`]*)`", r"\1", objective)
            if "$" not in plain:
                assert " ".join(plain.split()) in text, (path.name, objective)
    assert "where the files come from and how they are verified" in text  # lesson 1's, once cut at "say"
    assert "$" not in text and "\\lfloor" not in text
    assert syllabus.locator(".MathJax_CHTML").count() >= 1
    page.close()


def test_each_figure_has_the_alt_text_its_notebook_stores(site):
    site_notebook = build_tool("site_notebook")
    shown = 0
    for notebook in sorted((REPO / "lessons").glob("*.ipynb")) + sorted((REPO / "solutions").glob("*.ipynb")):
        stored = site_notebook.figure_alt_texts(notebook)
        page = (site / notebook.parent.name / notebook.stem / "index.html").read_text(encoding="utf-8")
        for alt, png in re.findall(r'<img alt="([^"]*)"[^>]*src="data:image/png;base64,([^"]+)"', page):
            if png in stored:
                assert html.unescape(alt) == stored[png], notebook.name
                shown += 1
    assert shown >= 60  # lessons and solutions 01-06 and 08 store theirs


def test_search_skips_the_whole_of_a_marked_block_even_a_div_in_a_div():
    from bs4 import BeautifulSoup
    from material.plugins.search.plugin import Parser

    site_notebook = build_tool("site_notebook")
    soup = BeautifulSoup(
        '<h1 id="t">Title</h1><div class="jp-CodeCell"><div class="jp-InputArea">'
        '<div class="jp-InputPrompt">In [1]:</div><div class="CodeMirror"><div class="zeroclipboard-container">'
        '<span class="notice">Copied!</span></div><div class="highlight-ipynb"><pre>import torch</pre></div>'
        '</div></div><div class="jp-RenderedText"><pre>a log line</pre></div></div><p>The prose.</p>',
        "html.parser",
    )
    site_notebook.keep_machinery_out_of_search(soup)
    parser = Parser()
    parser.feed(str(soup))
    parser.close()
    indexed = " ".join("".join(section.text) for section in parser.data)
    assert "The prose." in indexed
    for machinery in ("In [1]", "Copied!", "import torch", "a log line"):
        assert machinery not in indexed
