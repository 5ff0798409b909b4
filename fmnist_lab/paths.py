"""Where the course's folders are: in the course checkout when the package runs from one, else here."""

from __future__ import annotations

from pathlib import Path


def checkout() -> Path | None:
    """The course checkout holding this package (editable install), or None for an installed copy."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "fmnist_lab").is_dir() else None


def course_dir(name: str) -> Path:
    """A top-level course folder (`data`, `results`, `solutions`, `lessons`) of the checkout, else of ./."""
    return (checkout() or Path.cwd()) / name
