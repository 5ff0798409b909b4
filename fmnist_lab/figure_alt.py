"""Alt text for the figures a notebook shows, in the figure's own words: its titles and axis labels.

Under IPython, `register()` swaps the shell's PNG formatter for one that returns
`(png, {"alt": text})` for a matplotlib figure, so the notebook stores the text as the output's
metadata (`{"image/png": {"alt": ...}}`) and nbconvert and the site use it for the `<img>`. The text is
the suptitle, then each axes' title with its axis labels, for example
`"Confusion matrix (x: predicted class, y: true class)"`. The formatter object itself is replaced, not
one printer inside it, so it keeps working when matplotlib-inline registers its own figure printer (it
does so when pyplot is first imported, and again on `%matplotlib inline` or `set_matplotlib_formats`).
"""

from __future__ import annotations

import sys
from typing import Any

from IPython.core.formatters import PNGFormatter

PRINTER_TABLES = ("singleton_printers", "type_printers", "deferred_printers")


def _labelled(title: str, xlabel: str = "", ylabel: str = "") -> str:
    """'title (x: a, y: b)', or 'x: a, y: b' without a title; '' when there are no words."""
    title = title.strip()
    labels = ", ".join(f"{axis}: {text.strip()}" for axis, text in (("x", xlabel), ("y", ylabel)) if text.strip())
    return f"{title} ({labels})" if title and labels else title or labels


def _axes_title(axes: Any) -> str:
    """The axes' left, centre and right titles, in that order (most figures only have the centre one)."""
    return " ".join(filter(str.strip, (axes.get_title(loc) for loc in ("left", "center", "right"))))


def _figure_parts(figure: Any) -> list[str]:
    """The words of a figure or subfigure: its own titles, then its axes', then its subfigures'."""
    parts = [_labelled(figure.get_suptitle(), figure.get_supxlabel(), figure.get_supylabel())]
    parts += [
        _labelled(_axes_title(axes), axes.get_xlabel(), axes.get_ylabel())
        for axes in figure.get_axes()
        if axes.get_visible() and axes.figure is figure
    ]
    for subfigure in getattr(figure, "subfigs", []):
        parts += _figure_parts(subfigure)
    return parts


def figure_alt_text(figure: Any) -> str:
    """The figure described by its own titles and labels, each said once; '' if it has none."""
    parts = [part for part in _figure_parts(figure) if part]
    return ". ".join(dict.fromkeys(parts))  # small multiples repeat a label: say it once, in order


def _is_figure(obj: Any) -> bool:
    """True for a matplotlib figure (matplotlib is never imported here just to ask)."""
    module = sys.modules.get("matplotlib.figure")
    return module is not None and isinstance(obj, module.Figure)


class FigureAltPNGFormatter(PNGFormatter):
    """IPython's PNG formatter, returning a matplotlib figure's PNG together with its alt text."""

    def __call__(self, obj: Any) -> Any:
        """The PNG as IPython makes it; for a figure with words, `(png, {"alt": text})`."""
        data = super().__call__(obj)
        if data is None or isinstance(data, tuple) or not _is_figure(obj):
            return data
        text = figure_alt_text(obj)
        return (data, {"alt": text}) if text else data


def register(shell: Any = None) -> bool:
    """Give `shell` (the running IPython by default) the figure-alt PNG formatter; False outside IPython."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return False
    formatters = shell.display_formatter.formatters
    current = formatters["image/png"]
    if not isinstance(current, FigureAltPNGFormatter):
        replacement = FigureAltPNGFormatter(parent=shell.display_formatter, enabled=current.enabled)
        for table in PRINTER_TABLES:  # every printer registered so far (matplotlib-inline's too) carries over
            getattr(replacement, table).update(getattr(current, table))
        formatters["image/png"] = replacement
    return True
