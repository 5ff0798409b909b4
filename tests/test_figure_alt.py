"""Alt text from the figure itself (fmnist_lab/figure_alt.py): the words, and a real kernel storing them.

The text is built from the figure's suptitle, axes titles and axis labels, each said once, class names
as the figure writes them. In a real Jupyter kernel (nbclient), a figure shown after `import fmnist_lab`
carries `{"image/png": {"alt": ...}}` in its output metadata, whichever of fmnist_lab and pyplot is
imported first and after `%matplotlib inline` registers matplotlib-inline's printer again.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import matplotlib.pyplot as plt
import nbformat
import pytest
from conftest import REPO

from fmnist_lab.figure_alt import figure_alt_text


@pytest.fixture
def figure():
    """A fresh figure, closed after the test."""
    fig = plt.figure()
    yield fig
    plt.close(fig)


def test_an_axes_title_with_its_labels(figure):
    axes = figure.add_subplot()
    axes.set_title("Confusion matrix of the original run")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    assert figure_alt_text(figure) == "Confusion matrix of the original run (x: predicted class, y: true class)"


def test_the_suptitle_first_then_each_axes_and_a_colorbar_label(figure):
    left, right = figure.subplots(1, 2)
    figure.suptitle("Class balance: images per class")
    left.set_title("training set")
    left.set_xlabel("number of images")
    left.set_ylabel("class")
    image = right.imshow([[0.0, 1.0]])
    right.set_title("test set")
    figure.colorbar(image, ax=right, label="mean pixel value")
    assert figure_alt_text(figure) == (
        "Class balance: images per class. training set (x: number of images, y: class). test set. y: mean pixel value"
    )


def test_small_multiples_say_each_label_once_and_keep_class_names(figure):
    for axes, name in zip(figure.subplots(2, 2).flat, ["T-shirt/top", "Ankle boot", "T-shirt/top", "Bag"]):
        axes.set_title(name)
        axes.axis("off")
    assert figure_alt_text(figure) == "T-shirt/top. Ankle boot. Bag"


def test_subfigures_and_hidden_axes(figure):
    figure.suptitle("Right predictions: what the model looks at")
    first, second = figure.subfigures(1, 2)
    first.suptitle("true Shirt")
    first.add_subplot().set_xlabel("test image 7")
    hidden = second.add_subplot()
    hidden.set_title("never shown")
    hidden.set_visible(False)
    second.add_subplot().set_ylabel("|gradient|")
    assert figure_alt_text(figure) == (
        "Right predictions: what the model looks at. true Shirt. x: test image 7. y: |gradient|"
    )


def test_a_figure_without_words_has_no_text_rather_than_a_placeholder(figure):
    figure.add_subplot().plot([0, 1])
    assert figure_alt_text(figure) == ""


KERNEL_CELLS = {
    "fmnist_lab first": [
        "import fmnist_lab\nimport matplotlib.pyplot as plt",
        "fig, ax = plt.subplots()\nax.plot([0, 1])\nax.set_title('Per-class accuracy')\n"
        "ax.set_xlabel('accuracy (%)')\nax.set_ylabel('true class')\nplt.show()",
        "%matplotlib inline\nfig2, ax2 = plt.subplots()\nfig2.suptitle('After %matplotlib inline')\nax2.plot([1, 0])",
        "fig3, ax3 = plt.subplots()\nax3.plot([0, 1])",
    ],
    "pyplot first": [
        "import matplotlib.pyplot as plt\nimport fmnist_lab",
        "fig, ax = plt.subplots()\nax.plot([0, 1])\nax.set_title('Per-class accuracy')\n"
        "ax.set_xlabel('accuracy (%)')\nax.set_ylabel('true class')\nplt.show()",
        "from matplotlib_inline.backend_inline import set_matplotlib_formats\nset_matplotlib_formats('png')\n"
        "fig2, ax2 = plt.subplots()\nfig2.suptitle('After %matplotlib inline')\nax2.plot([1, 0])\ndisplay(fig2)\n"
        "plt.close(fig2)",
        "fig3, ax3 = plt.subplots()\nax3.plot([0, 1])",
    ],
}


@pytest.mark.process
@pytest.mark.parametrize("order", list(KERNEL_CELLS))
def test_a_real_kernel_stores_the_alt_text_with_each_figure(tmp_path, order):
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code) for code in KERNEL_CELLS[order]])
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    figures = [output for cell in notebook.cells for output in cell.outputs if "image/png" in output.get("data", {})]
    assert len(figures) == 3, [cell.outputs for cell in notebook.cells]
    assert all(base64.b64decode(f["data"]["image/png"])[:4] == b"\x89PNG" for f in figures)
    alts = [f.get("metadata", {}).get("image/png", {}).get("alt") for f in figures]
    assert alts == ["Per-class accuracy (x: accuracy (%), y: true class)", "After %matplotlib inline", None]


def test_outside_ipython_nothing_is_registered_and_ipython_is_not_imported():
    code = (
        "import sys, fmnist_lab\n"
        "print('IPython' in sys.modules)\n"
        "from fmnist_lab import figure_alt\n"
        "print(figure_alt.register())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
