"""The course website, built with `mkdocs build --strict` and driven in headless Chromium.

The navigation lists every part of the site; lesson pages show their figures and code, and a figure
opens full size; search finds lesson 03; a notebook's download link gives the notebook. Every page, in
light and dark mode, at desktop and phone width (status, errors, other hosts, axe-core, links, alt text,
screenshots into tests/artifacts/) is tests/test_site_readers.py's sweep.
"""

from __future__ import annotations

import json
from urllib.parse import urlparse

import pytest
from conftest import REPO

ARTIFACTS = REPO / "tests" / "artifacts"


class Visit:
    """One page load with every console error, failed request and foreign request recorded."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors, self.failed, self.foreign = [], [], []
        host = urlparse(url).netloc
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} HTTP {r.status}"))
        self.page.on(
            "request",
            lambda r: (
                urlparse(r.url).scheme in ("http", "https")
                and urlparse(r.url).netloc != host
                and self.foreign.append(r.url)
            ),
        )
        self.response = self.page.goto(url, wait_until="networkidle")

    def assert_clean(self) -> None:
        assert self.response is not None and self.response.status == 200, self.page.url
        assert self.failed == [], f"failed requests on {self.page.url}: {self.failed}"
        assert self.errors == [], f"console errors on {self.page.url}: {self.errors}"
        assert self.foreign == [], f"requests to other hosts from {self.page.url}: {self.foreign}"


def nav_urls(browser, base: str) -> list[str]:
    """Every page linked from the navigation of the home page."""
    visit = Visit(browser, base)
    hrefs = visit.page.eval_on_selector_all(
        "nav.md-nav--primary a.md-nav__link[href]", "links => links.map(a => a.href)"
    )
    visit.page.close()
    return sorted({href.split("#")[0] for href in hrefs})


def test_site_builds_strictly_and_offline(site):
    html = "\n".join(p.read_text(encoding="utf-8") for p in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in html and "cdnjs" not in html and "cdn.jsdelivr" not in html
    assert (site / "assets" / "mathjax" / "MathJax.js").is_file()


def test_the_navigation_lists_every_part_of_the_site(browser, server):
    names = {urlparse(u).path for u in nav_urls(browser, server)}
    for expected in (
        "/",
        "/getting-started/",
        "/demo/",
        "/cli/",
        "/api/",
        "/grading/",
        "/benchmarks/",
        "/troubleshooting/",
        "/lessons/01_data/",
        "/solutions/01_data/",
    ):
        assert expected in names, f"{expected} is not in the navigation"
    lessons = sorted((REPO / "lessons").glob("*.ipynb"))
    assert {f"/lessons/{p.stem}/" for p in lessons} | {f"/solutions/{p.stem}/" for p in lessons} <= names


def test_lesson_pages_show_their_figures_and_code(browser, server):
    lessons = [u for u in nav_urls(browser, server) if "/lessons/" in u]
    assert len(lessons) >= 6
    for url in lessons:
        visit = Visit(browser, url)
        visit.assert_clean()
        widths = visit.page.eval_on_selector_all(".jupyter-wrapper img", "imgs => imgs.map(i => i.naturalWidth)")
        assert widths and all(w > 0 for w in widths), f"{url}: figures not decoded: {widths}"
        assert visit.page.locator(".jp-CodeCell").count() > 5, url
        visit.page.close()


def test_search_for_batch_norm_lands_on_lesson_03(browser, server):
    visit = Visit(browser, server)
    visit.page.locator("input.md-search__input").click()
    visit.page.keyboard.type("batch norm", delay=50)
    first = visit.page.locator(".md-search-result__item a").first
    first.wait_for(timeout=60000)
    first.click()
    visit.page.wait_for_load_state("networkidle")
    assert "/lessons/03_batch_norm/" in visit.page.url
    visit.page.close()


@pytest.mark.parametrize("path", ["lessons/03_batch_norm/", "solutions/08_deployment/"])
def test_notebook_pages_open_in_colab_beside_the_download(browser, server, path):
    from fmnist_lab.notebooks import repository

    visit = Visit(browser, server + path)
    links = visit.page.locator("p.notebook-links a")
    kind, folder = ("lesson", "lessons") if path.startswith("lessons") else ("solution", "solutions")
    assert links.nth(0).inner_text() == f"Open this {kind} in Colab"
    name = path.strip("/").split("/")[-1] + ".ipynb"
    assert links.nth(0).get_attribute("href") == repository(REPO).colab_url(REPO / folder / name)
    assert links.nth(1).get_attribute("download") is not None  # the download button sits beside it
    assert visit.page.locator("img[src*='colab-badge']").count() == 0  # the notebook's badge cell is not shown
    assert "InstallFailed" not in visit.page.content()  # nor its install cell
    assert visit.page.locator(f"a.md-source[href='{repository(REPO).url}']").count() >= 1  # the header link
    visit.assert_clean()
    visit.page.close()


def test_download_link_gives_the_notebook(browser, server):
    visit = Visit(browser, server + "lessons/03_batch_norm/")
    link = visit.page.locator("a[download][href$='.ipynb']").first
    assert link.inner_text().startswith("Download this lesson notebook")
    href = link.get_attribute("href")
    response = visit.page.request.get(visit.page.url + href)
    assert response.status == 200
    notebook = json.loads(response.text())
    assert notebook["nbformat"] == 4 and notebook["cells"][0]["source"]
    visit.page.close()


def test_a_figure_opens_full_size_on_a_phone(browser, server):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server + "lessons/03_batch_norm/", wait_until="networkidle")
    figure = page.locator(".jp-RenderedImage a.fmnist-figure-link img").first
    figure.scroll_into_view_if_needed()
    shown, natural = figure.evaluate("i => [i.clientWidth, i.naturalWidth]")
    content = page.eval_on_selector(".md-content__inner", "c => c.clientWidth")
    assert shown < natural and shown >= 0.85 * content  # drawn at the content's width, smaller than the PNG
    assert page.locator(".jp-InputPrompt").first.evaluate("p => p.getBoundingClientRect().width") == 0
    with context.expect_page() as opened:
        figure.click()
    full = opened.value
    full.wait_for_load_state()
    assert full.url.startswith("blob:")
    assert full.evaluate("() => document.images[0].naturalWidth") == natural
    context.close()


COVERED_CODE = """(selectors) => {
  // Copy buttons whose box overlaps a visible line of code text, for each [button, code] pair on the page.
  const [buttonSelector, codeSelector, blockSelector] = selectors;
  let covered = 0, checked = 0;
  for (const block of document.querySelectorAll(blockSelector)) {
    const button = block.querySelector(buttonSelector), code = block.querySelector(codeSelector);
    if (!button || !code) continue;
    checked += 1;
    const b = button.getBoundingClientRect(), view = code.getBoundingClientRect();
    const range = document.createRange();
    range.selectNodeContents(code);
    const lines = [...range.getClientRects()].filter((r) => r.width > 0 && r.right > view.left && r.left < view.right);
    if (lines.some((r) => r.left < b.right && r.right > b.left && r.top < b.bottom && r.bottom > b.top)) covered += 1;
  }
  return [checked, covered];
}"""


@pytest.mark.parametrize(
    "path, selectors",
    [
        ("lessons/03_batch_norm/", ["clipboard-copy", ".highlight-ipynb pre", ".jp-CodeCell .CodeMirror"]),
        ("getting-started/", [".md-code__button", "pre > code", ".md-typeset .highlight"]),
    ],
)
def test_the_copy_button_does_not_cover_code_on_a_phone(browser, server, path, selectors):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server + path, wait_until="networkidle")
    checked, covered = page.evaluate(COVERED_CODE, selectors)
    assert checked > 3 and covered == 0, (checked, covered)
    context.close()


@pytest.mark.parametrize("system", ["light", "dark"])
def test_the_colour_scheme_follows_the_system_until_the_reader_picks_one(browser, server, system):
    context = browser.new_context(color_scheme=system)
    page = context.new_page()
    page.goto(server, wait_until="load")
    scheme = "body[data-md-color-scheme]"
    assert page.get_attribute(scheme, "data-md-color-scheme") == ("slate" if system == "dark" else "default")
    toggle = page.locator("form[data-md-component='palette'] label:visible").first
    assert toggle.get_attribute("title") == "Switch to light mode"  # the first choice: the system's
    toggle.click()
    assert page.get_attribute(scheme, "data-md-color-scheme") == "default"  # the reader chose light
    page.locator("form[data-md-component='palette'] label:visible").first.click()
    assert page.get_attribute(scheme, "data-md-color-scheme") == "slate"  # then dark
    page.reload(wait_until="load")
    assert page.get_attribute(scheme, "data-md-color-scheme") == "slate"  # and the choice is kept
    context.close()
