"""Where the course keeps its files, stated once: the data cache, the results, the checkout's folders.

- Data: downloads go to `$FMNIST_LAB_DATA_DIR`, else the per-user cache `$XDG_CACHE_HOME/fmnist-lab`
  (`~/.cache/fmnist-lab` when `XDG_CACHE_HOME` is unset), never the working folder.
- Results (trained weights, metrics, figures): `$FMNIST_LAB_RESULTS`, else the checkout's `results/`
  when the package runs from a course checkout, else `./results` beside your notebook.
- An installed copy needs no checkout: the reference solutions ship inside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REFERENCE_FILE = PACKAGE_DIR / "reference" / "solutions.json"


def checkout() -> Path | None:
    """The course checkout holding this package (editable install), or None for an installed copy."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "solutions").is_dir() else None


def course_dir(name: str) -> Path:
    """A top-level course folder (`solutions`, `lessons`) of the checkout, else of ./."""
    return (checkout() or Path.cwd()) / name


def cache_dir() -> Path:
    """The per-user cache: `$XDG_CACHE_HOME/fmnist-lab`, else `~/.cache/fmnist-lab`."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fmnist-lab"


def data_dir() -> Path:
    """Where the data is downloaded to: `$FMNIST_LAB_DATA_DIR`, else the per-user cache."""
    return Path(os.environ["FMNIST_LAB_DATA_DIR"]) if os.environ.get("FMNIST_LAB_DATA_DIR") else cache_dir()


def results_dir() -> Path:
    """Where trained weights and results go: `$FMNIST_LAB_RESULTS`, the checkout's `results/`, or `./results`."""
    if os.environ.get("FMNIST_LAB_RESULTS"):
        return Path(os.environ["FMNIST_LAB_RESULTS"])
    return course_dir("results")
