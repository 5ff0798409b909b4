"""The course website, built with `mkdocs build --strict` and driven in headless Chromium.

Every page in the navigation answers 200 with no console error, no failed request and no request to
another host; lesson pages show their figures and code; search finds lesson 03; a notebook's download
link gives the notebook; screenshots land in tests/artifacts/ (ignored by git).
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


def test_every_page_in_the_navigation_loads_cleanly(browser, server):
    urls = nav_urls(browser, server)
    names = {urlparse(u).path for u in urls}
    for expected in (
        "/",
        "/getting-started/",
        "/cli/",
        "/api/",
        "/benchmarks/",
        "/troubleshooting/",
        "/lessons/01_data/",
        "/solutions/01_data/",
    ):
        assert expected in names, f"{expected} is not in the navigation"
    for url in urls:
        visit = Visit(browser, url)
        visit.assert_clean()
        visit.page.close()


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


def test_screenshots_of_home_and_a_lesson(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    for name, path in (("home", ""), ("lesson_03", "lessons/03_batch_norm/")):
        visit = Visit(browser, server + path)
        target = ARTIFACTS / f"{name}.png"
        visit.page.screenshot(path=str(target), full_page=True)
        assert target.stat().st_size > 10_000
        visit.page.close()
