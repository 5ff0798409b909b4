"""MkDocs hooks for the course site: generated pages and sections, and bundled MathJax.

- The Lessons and Solutions sections of the navigation are built from `lessons/` and `solutions/`
  (reached through the `docs/lessons` and `docs/solutions` symlinks), titled from each notebook.
- Placeholders in the Markdown pages are replaced by text generated from the project itself: the
  syllabus (from the lessons' first cells), results and benchmarks (from `benchmarks/results`), and
  the CLI reference (from the argument parser).
- Notebook pages are finished by `site_notebook.py` (no tag badges, figures' own alt text, a table of
  contents whose links land, lesson and solution told apart); solutions come after everything else in
  the Previous/Next order, so the last lesson leads on to the rest of the site.
- MathJax is copied from `node_modules/mathjax` (`npm ci`) into the site, so no page loads anything
  from another host; Markdown pages with formulas (pymdownx.arithmatex) load it too. The search index
  says formulas as text (`site_search.py`).
"""

from __future__ import annotations

import base64
import io
import os
import posixpath
import re
import shutil
from pathlib import Path

import report  # build_tools/report.py: MkDocs puts a hook's folder on sys.path while it loads the hook
import site_notebook
import site_search
from mkdocs.structure.toc import get_toc
from mkdocs.utils import get_relative_url

ROOT = Path(__file__).resolve().parent.parent

MATHJAX_PLACEHOLDER = "MATHJAX_ROOT"
MATHJAX_SITE_DIR = "assets/mathjax"
MATHJAX_PARTS = [
    "MathJax.js",
    "config/TeX-AMS_CHTML-full.js",
    "config/Safe.js",
    "extensions",
    "jax/input/TeX",
    "jax/output/CommonHTML",
    "jax/element",
    "localization/en",
    "fonts/HTML-CSS/TeX/woff",
]


def notebook_intro(path: Path) -> tuple[str, list[str], str]:
    """A lesson's title, learning objectives and time estimate, from its first (Markdown) cell."""
    from fmnist_lab.notebooks import is_stamped, read_notebook

    cells = [cell for cell in read_notebook(path).cells if not is_stamped(cell)]
    intro = cells[0].source if cells else ""
    title_match = re.search(r"^#\s+(.+)$", intro, flags=re.MULTILINE)
    title = title_match.group(1).strip() if title_match else path.stem
    objectives: list[str] = []
    if "Learning objectives" in intro:
        after = intro.split("Learning objectives", 1)[1].splitlines()[1:]
        for line in after:
            if re.match(r"^\s*[-*]\s+", line):
                objectives.append(re.sub(r"^\s*[-*]\s+", "", line).strip())
            elif objectives and line.startswith(" ") and line.strip():  # a bullet's continuation line
                objectives[-1] += " " + line.strip()
            elif objectives and line.strip():
                break
    time_match = re.search(r"\*{0,2}Time\*{0,2}\s*[:·—-]?\s*\*{0,2}\s*(.+)", intro)
    time = time_match.group(1).strip().strip("*").strip() if time_match else ""
    time = re.split(r"(?<=\.)\s|\s\(", time)[0].rstrip(".").replace(" on a laptop CPU", "")
    return title, objectives, time


NOTEBOOK_SECTIONS = {"lessons": "Lessons", "solutions": "Solutions"}  # folder → navigation section


def page_title(folder: str, path: Path) -> str:
    """'Lesson 3 · Batch normalisation' for a lesson, 'Solution 3 · Batch normalisation' for its solution.

    Plain text (a title's `code` loses its backticks): it names the page in the navigation and the tab."""
    title = re.sub(r"`([^`]*)`", r"\1", notebook_intro(path)[0])
    return site_notebook.solution_title(title) if folder == "solutions" else title


def on_config(config, **kwargs):
    """Insert the Lessons and Solutions sections after 'Getting started'."""
    nav = config["nav"]
    for folder, section in reversed(NOTEBOOK_SECTIONS.items()):
        entries = [
            {page_title(folder, path): f"{folder}/{path.name}"} for path in sorted((ROOT / folder).glob("*.ipynb"))
        ]
        if entries:
            nav.insert(2, {section: entries})
    return config


def _is_solution(page) -> bool:
    """True for a page rendered from solutions/."""
    return page.file.src_uri.startswith("solutions/")


def on_nav(nav, config, files, **kwargs):
    """Previous/Next: the lessons lead on to the rest of the site; the solutions come last, one after another."""
    order = [page for page in nav.pages if not _is_solution(page)] + [page for page in nav.pages if _is_solution(page)]
    for before, page, after in zip([None, *order[:-1]], order, [*order[1:], None]):
        page.previous_page, page.next_page = before, after
    return nav


def syllabus_markdown() -> str:
    """The home page's syllabus table: lesson, objectives, time."""
    rows = ["| lesson | you will learn to | time |", "|---|---|---|"]
    for path in sorted((ROOT / "lessons").glob("*.ipynb")):
        title, objectives, time = notebook_intro(path)
        bullets = "<br>".join(f"• {objective}" for objective in objectives)
        rows.append(f"| [{title}](lessons/{path.name}) | {bullets} | {time} |")
    return "\n".join(rows)


def cli_markdown() -> str:
    """Every sub-command's `--help`, generated from the parser itself."""
    from fmnist_lab.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parts = ["### fmnist-lab", "", "```text", parser.format_help().rstrip(), "```"]
        for name, sub in subparsers.choices.items():
            parts += ["", f"### {name}", "", "```text", sub.format_help().rstrip(), "```"]
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return "\n".join(parts)


def pip_install_markdown() -> str:
    """The pip line that installs this repository's release, and the setup check after it."""
    from fmnist_lab.notebooks import repository

    repo = repository(ROOT)
    return "\n".join(
        [
            "```bash",
            f'pip install "fmnist-lab @ git+{repo.url}@{repo.ref}"',
            "fmnist-lab doctor     # one [OK] or [FAIL] line per requirement, each failure with its fix",
            "```",
        ]
    )


def benchmarks_figure() -> str:
    """Accuracy per seed against the original, and training steps/s per pipeline, as an inline PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fmnist_lab.original import ORIGINAL_TEST_ACCURACY

    accuracy, speed = report.load("reproduce"), report.load("train_speed")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    names = ["original"] + [f"seed {s}" for s in accuracy["seeds"]]
    values = [100 * ORIGINAL_TEST_ACCURACY] + [100 * a for a in accuracy["test_accuracy"]]
    left.bar(names, values, color=["tab:gray"] + ["tab:blue"] * len(accuracy["seeds"]))
    left.set_ylim(min(values) - 1, max(values) + 0.5)
    left.set_ylabel("test accuracy (%)")
    left.set_title("Original settings, 5 epochs")
    for x, value in enumerate(values):
        left.text(x, value + 0.05, f"{value:.2f}", ha="center", va="bottom", fontsize=9)
    rates = speed["steps_per_second"]
    labels = {
        "original": "original\n(DataLoader + PIL)",
        "fmnist_lab": "fmnist_lab\n(in memory)",
        "ceiling": "compute\nceiling",
    }
    right.barh([labels[k] for k in rates], list(rates.values()), color=["tab:gray", "tab:blue", "tab:green"])
    right.set_xlabel("training steps per second (batch 100)")
    right.set_title("Training speed, CNNBatch")
    right.invert_yaxis()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode()
    return (
        f'<img src="data:image/png;base64,{data}" alt="Test accuracy per seed beside the original, '
        f'and training steps per second per pipeline">'
    )


def benchmarks_markdown() -> str:
    """The benchmarks page: the figure, then the tables with machine and date."""
    return (
        "## Accuracy and speed\n\n"
        + benchmarks_figure()
        + "\n\n"
        + report.results_markdown()
        + "\n\n## Where the fixed cost goes\n\n"
        + report.overhead_markdown()
        + "\n\n## Lesson 07: each trick alone\n\n"
        + report.ablation_markdown()
    )


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Replace each placeholder with the text generated for it."""
    generators = {
        "<!-- syllabus -->": syllabus_markdown,
        "<!-- cli-reference -->": cli_markdown,
        "<!-- benchmarks -->": benchmarks_markdown,
        "<!-- pip-install -->": pip_install_markdown,
    }
    if "<!-- results -->" in markdown:
        markdown = markdown.replace("<!-- results -->", report.results_markdown())
    for placeholder, generate in generators.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, generate())
    return markdown


MERMAID_LOADER = re.compile(
    r'<script type="module">(?:(?!</script>).)*?mermaid(?:(?!</script>).)*?</script>', flags=re.DOTALL
)


def on_page_content(html, page, config, files, **kwargs):
    """Finish each notebook page (site_notebook.py) and give it a table of contents that matches its headings."""
    if not page.file.src_uri.endswith(".ipynb"):
        return html
    from fmnist_lab.notebooks import repository

    folder, name = page.file.src_uri.split("/", 1)
    lesson = files.get_file_from_path(f"lessons/{name}")
    notebook = site_notebook.NotebookPage(
        notebook=ROOT / page.file.src_uri,
        kind="solution" if folder == "solutions" else "lesson",
        colab_url=repository(ROOT).colab_url(ROOT / page.file.src_uri),
        lesson_url=get_relative_url(lesson.url, page.url) if lesson else "",  # none until build-lessons made it
        lesson_title=page_title("lessons", ROOT / page.file.src_uri),  # a solution keeps its lesson's title
    )
    html, toc = site_notebook.finish_notebook_page(html, notebook)
    page.toc = get_toc(toc)
    page.edit_url = None  # notebooks are edited in Jupyter (lessons are generated): the page has Colab and Download
    if notebook.kind == "solution":  # search leads to the lesson first; its solution ranks below it
        page.meta["search"] = {"boost": 0.5}
    return html


MATHJAX_CONFIG = "javascripts/mathjax-config.js"  # MathJax 2 told to typeset pymdownx.arithmatex's spans only


def mathjax_scripts(config, page) -> str:
    """The script tags that load the bundled MathJax on a Markdown page: our config, then the notebooks' MathJax URL."""
    url = config["plugins"]["mkdocs-jupyter"].config["custom_mathjax_url"]
    here = page.url.rstrip("/") or "."
    return (
        f'<script src="{posixpath.relpath(MATHJAX_CONFIG, here)}"></script>\n'
        f'<script src="{url.replace(MATHJAX_PLACEHOLDER, posixpath.relpath(MATHJAX_SITE_DIR, here))}"></script>\n'
    )


def on_post_page(output, page, config, **kwargs):
    """Point MathJax at the bundled copy (and load it where a Markdown page has formulas); drop nbconvert's
    Mermaid loader (a CDN, and no diagrams here)."""
    output = MERMAID_LOADER.sub("", output)
    if MATHJAX_PLACEHOLDER in output:
        base = posixpath.relpath(MATHJAX_SITE_DIR, page.url.rstrip("/") or ".")
        output = output.replace(MATHJAX_PLACEHOLDER, base)
    elif 'class="arithmatex"' in output:
        output = output.replace("</body>", mathjax_scripts(config, page) + "</body>", 1)
    return output


def on_post_build(config, **kwargs):
    """Copy the parts of MathJax the pages use into the site; say the search index's formulas as text."""
    site_search.make_formulas_readable(Path(config["site_dir"]))
    source = ROOT / "node_modules" / "mathjax"
    if not (source / "MathJax.js").is_file():
        raise SystemExit("node_modules/mathjax is missing: run `npm ci` (make docs does) before building")
    target = Path(config["site_dir"]) / MATHJAX_SITE_DIR
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
