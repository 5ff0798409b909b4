"""Writing files so that nothing is ever half-written or lost: atomic writes and dated backups.

A write goes to a temporary file in the same folder, then `os.replace` swaps it in, so readers see the old
file or the new one, never a mix. An error, Ctrl-C or SIGTERM during the write leaves the old file as it
was and removes the temporary one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM raises KeyboardInterrupt, so cleanup runs instead of the process dying mid-write."""
    main = threading.current_thread() is threading.main_thread()
    if not main or not hasattr(signal, "SIGTERM") or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # only the main thread can set handlers; a handler someone installed stays theirs
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new, empty hidden file next to `path` (same folder, so the rename is atomic), with default permissions."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
            return os.open(temporary, flags, 0o666), temporary
        except FileExistsError:
            continue


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Replace `path` with `data` in one step: on any failure or interrupt the old file stays and no temp file does."""
    target = Path(os.path.realpath(path))  # through a symlink to its target, so the link keeps working
    with sigterm_interrupts():
        descriptor, temporary = _temporary_beside(target)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            if target.is_file():
                shutil.copymode(target, temporary)  # the file keeps its permissions
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Replace `path` with `text` (UTF-8, newlines as given) in one step, like `atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def backup(path: Path) -> Path:
    """Copy `path` to `path.bak-YYYYmmdd-HHMMSS` beside it (never over an earlier copy): what to restore from."""
    path = Path(path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    copy, number = path.with_name(f"{path.name}.bak-{stamp}"), 1
    while copy.exists():
        copy, number = path.with_name(f"{path.name}.bak-{stamp}-{number}"), number + 1
    atomic_write_bytes(copy, path.read_bytes())
    shutil.copystat(path, copy)
    return copy


# --- What fmnist-lab wrote: a manifest per folder --------------------------------------------------------

MANIFEST_NAME = ".fmnist-lab.json"
"""In every folder fmnist-lab writes to: the name and SHA-256 of each file it wrote there."""


def _sha256(path: Path) -> str | None:
    """The SHA-256 of the file at `path`, or None when it cannot be read."""
    try:
        with open(path, "rb") as stream:
            return hashlib.sha256(stream.read()).hexdigest()  # outputs are small: weights, figures, JSON
    except OSError:
        return None


def _manifest(folder: Path) -> dict[str, str]:
    """The manifest of `folder` (name → SHA-256); empty when missing or unreadable, so nothing counts as ours."""
    try:
        recorded = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    files = recorded.get("files") if isinstance(recorded, dict) else None
    return {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}


def is_ours(path: Path) -> bool:
    """Whether fmnist-lab wrote `path` and nobody changed it since: its bytes match the folder's manifest."""
    path = Path(path)
    recorded = _manifest(path.parent).get(path.name)
    return recorded is not None and recorded == _sha256(path)


def record_ours(*paths: Path) -> None:
    """Add the files fmnist-lab just wrote to their folders' manifests, so a later run may replace them."""
    for folder in {Path(p).parent for p in paths}:
        files = _manifest(folder)
        files.update({Path(p).name: _sha256(Path(p)) for p in paths if Path(p).parent == folder})
        text = json.dumps({"written_by": "fmnist-lab", "files": dict(sorted(files.items()))}, indent=2)
        atomic_write_text(folder / MANIFEST_NAME, text + "\n")


def not_ours(paths: list[Path]) -> list[Path]:
    """The files among `paths` that exist but fmnist-lab did not write (or that someone changed): keep them."""
    return [Path(p) for p in paths if os.path.lexists(p) and not is_ours(Path(p))]
