"""fmnist_lab.plots: each of the original's four figures has a title, axis labels and class names."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from fmnist_lab import plots
from fmnist_lab.data import CLASS_NAMES
from fmnist_lab.original import ORIGINAL_HISTORY


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def test_training_curves_show_cost_and_accuracy_per_epoch():
    fig = plots.training_curves(ORIGINAL_HISTORY)
    cost_ax, accuracy_ax = fig.axes
    assert cost_ax.get_title() and cost_ax.get_xlabel() == "epoch"
    assert "cost" in cost_ax.get_ylabel() and "accuracy" in accuracy_ax.get_ylabel()
    assert list(cost_ax.lines[0].get_ydata()) == [r["cost"] for r in ORIGINAL_HISTORY]
    assert accuracy_ax.lines[0].get_ydata()[-1] == pytest.approx(88.74)


def test_confusion_matrix_heatmap_uses_class_names():
    matrix = np.diag(np.arange(1, 11))
    fig = plots.confusion_matrix(matrix)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASS_NAMES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class" and ax.get_title()
    assert "10" in _texts(fig)  # the counts are written in the cells


def test_sample_predictions_mark_mistakes_in_red():
    images = torch.rand(4, 1, 16, 16)
    fig = plots.sample_predictions(images, torch.tensor([0, 1, 6, 9]), torch.tensor([0, 1, 0, 9]), count=4, columns=4)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[2] == "Shirt\n→ T-shirt/top"
    assert fig.axes[2].title.get_color() == plots.WRONG_COLOR
    assert fig.axes[0].title.get_color() == plots.RIGHT_COLOR
    assert fig.get_suptitle()


def test_sample_images_has_one_labelled_row_per_class():
    labels = torch.arange(10).repeat(3)
    images = torch.rand(30, 1, 28, 28)
    fig = plots.sample_images(images, labels, per_class=3)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASS_NAMES
    mosaic = ax.images[0].get_array()
    for class_id in range(10):  # row = class, column = the class's first, second, third image
        for column in range(3):
            top, left = class_id * 32, column * 32
            expected = images[column * 10 + class_id, 0].numpy()
            assert np.array_equal(mosaic[top : top + 28, left : left + 28], expected)
        label_y = ax.get_yticks()[class_id]
        assert class_id * 32 <= label_y <= class_id * 32 + 27  # each label sits beside its row
