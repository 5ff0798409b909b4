"""Fashion-MNIST: find the four IDX files, verify them, read them with numpy and batch them in memory.

Search order: the `root` argument, `$FMNIST_DATA`, `./data`, the download folder (`$FMNIST_LAB_DATA_DIR`,
else the per-user cache `~/.cache/fmnist-lab`, see `fmnist_lab.paths`), the Debian package
`dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist`), then a download from torchvision's
mirrors into the download folder. Each folder may hold the files plainly or in torchvision's
`FashionMNIST/raw` layout, gzipped or not. Every file is checked by the size and SHA-256 of its
*decompressed* bytes, so a recompressed `.gz` still verifies; a file too big to be one of them is refused
by its size before it is read. SIGTERM during a download removes the partial file, as Ctrl-C does.

Two more variables exist for shared machines and tests: `FMNIST_LAB_SYSTEM_DATA` replaces the Debian
package's folder and `FMNIST_LAB_MIRRORS` (comma-separated base URLs) replaces the mirror list.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import signal
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fmnist_lab.errors import FmnistLabError
from fmnist_lab.paths import cache_dir, data_dir


class FashionClass(NamedTuple):
    """One of the ten classes: its label id, short name and what it holds."""

    id: int
    name: str
    description: str


CLASSES: tuple[FashionClass, ...] = (
    FashionClass(0, "T-shirt/top", "short sleeve t-shirts"),
    FashionClass(1, "Trouser", "pants and trousers"),
    FashionClass(2, "Pullover", "sweaters and pullovers"),
    FashionClass(3, "Dress", "dresses and gowns"),
    FashionClass(4, "Coat", "outerwear coats"),
    FashionClass(5, "Sandal", "open-toe sandals"),
    FashionClass(6, "Shirt", "long sleeve shirts"),
    FashionClass(7, "Sneaker", "athletic shoes"),
    FashionClass(8, "Bag", "handbags and purses"),
    FashionClass(9, "Ankle boot", "boots and ankle-height shoes"),
)
CLASS_NAMES: list[str] = [c.name for c in CLASSES]
UPPER_BODY: tuple[str, ...] = ("T-shirt/top", "Pullover", "Coat", "Shirt")  # alike at 16×16: the hard group
SPLITS = ("train", "test")
IMAGE_SIZES = (28, 16)


@dataclass(frozen=True)
class IdxFile:
    """An official file: its name without `.gz`, and the size and SHA-256 of its decompressed bytes."""

    name: str
    size: int
    sha256: str


IDX_FILES: dict[tuple[str, str], IdxFile] = {
    ("train", "images"): IdxFile(
        "train-images-idx3-ubyte", 47_040_016, "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"
    ),
    ("train", "labels"): IdxFile(
        "train-labels-idx1-ubyte", 60_008, "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"
    ),
    ("test", "images"): IdxFile(
        "t10k-images-idx3-ubyte", 7_840_016, "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"
    ),
    ("test", "labels"): IdxFile(
        "t10k-labels-idx1-ubyte", 10_008, "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"
    ),
}

DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
TORCHVISION_SUBDIR = "torchvision"  # where `torchvision_dataset` keeps the decompressed copies it reads
FIX_HINT = (
    "install the Debian package (sudo apt-get install dataset-fashion-mnist) "
    "or set FMNIST_DATA to a folder holding the four Fashion-MNIST files"
)


@dataclass
class DataLocation:
    """Where the four files were found (or downloaded to), and every place that was searched."""

    source: str
    files: dict[str, Path]
    searched: list[str] = field(default_factory=list)

    def path(self, split: str, kind: str) -> Path:
        """The file holding `kind` ('images' or 'labels') of `split`."""
        return self.files[IDX_FILES[(split, kind)].name]


def system_data_dir() -> Path:
    """The Debian package's folder (or `$FMNIST_LAB_SYSTEM_DATA`, for tests)."""
    return Path(os.environ.get("FMNIST_LAB_SYSTEM_DATA", str(DEBIAN_DATA_DIR)))


class _CannotDownload(FmnistLabError):
    """The download cannot start (no mirror, unusable folder): shown as is, not as a failed download."""


def mirrors() -> list[str]:
    """Base URLs to download from: torchvision's Fashion-MNIST mirrors unless overridden."""
    override = os.environ.get("FMNIST_LAB_MIRRORS")
    if override:
        urls = [m.strip().rstrip("/") + "/" for m in override.split(",") if m.strip().rstrip("/")]
        if not urls:
            raise _CannotDownload(
                f"FMNIST_LAB_MIRRORS is set but names no mirror (got {override!r}): "
                "unset it or give comma-separated base URLs"
            )
        return urls
    from torchvision.datasets import FashionMNIST

    return list(FashionMNIST.mirrors)


def candidate_dirs(root: str | os.PathLike | None = None) -> list[tuple[str, Path]]:
    """The folders to search, in order, each with a label a learner recognises."""
    places: list[tuple[str, Path]] = []
    if root is not None:
        places.append(("root argument", Path(root)))
    if os.environ.get("FMNIST_DATA"):
        places.append(("$FMNIST_DATA", Path(os.environ["FMNIST_DATA"])))
    places.append(("./data", Path.cwd() / "data"))
    downloads = data_dir()
    if downloads.resolve() != (Path.cwd() / "data").resolve():
        label = "$FMNIST_LAB_DATA_DIR" if os.environ.get("FMNIST_LAB_DATA_DIR") else "user cache"
        places.append((label, downloads))
    places.append(("Debian package dataset-fashion-mnist", system_data_dir()))
    return places


def _file_in(directory: Path, name: str) -> Path | None:
    """The file `name` (plain or `.gz`) in `directory` or its `FashionMNIST/raw`, if present."""
    for folder in (directory, directory / "FashionMNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _files_in(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """The official files found in `directory`, and the names that are missing."""
    found, missing = {}, []
    for spec in IDX_FILES.values():
        path = _file_in(directory, spec.name)
        if path is None:
            missing.append(spec.name)
        else:
            found[spec.name] = path
    return found, missing


def find_data(root: str | os.PathLike | None = None, download: bool = True) -> DataLocation:
    """Find the four files in the search order, downloading them as a last resort."""
    searched = []
    for label, directory in candidate_dirs(root):
        found, missing = _files_in(directory)
        if not missing:
            return DataLocation(f"{label} ({directory})", found, searched)
        state = "not found" if len(missing) == 4 else f"incomplete, missing {', '.join(missing)}"
        searched.append(f"{label} {directory}: {state}")
    if not download:
        raise FmnistLabError(f"Fashion-MNIST not found. Searched: {'; '.join(searched)}. Fix: {FIX_HINT}.")
    target = data_dir()
    try:
        files = download_data(target)
    except _CannotDownload:
        raise
    except FmnistLabError as exc:
        searched.append(f"download into {target}: {exc}")
        raise FmnistLabError(f"Fashion-MNIST not found. Searched: {'; '.join(searched)}. Fix: {FIX_HINT}.") from None
    return DataLocation(f"downloaded ({target})", files, searched)


def download_data(target: Path) -> dict[str, Path]:
    """Download the four files into `target`; each lands under its name only once verified."""
    files = {spec.name: _file_in(target, spec.name) for spec in IDX_FILES.values()}
    missing = [spec for spec in IDX_FILES.values() if files[spec.name] is None]
    if missing:
        mirrors()  # a mirror list that names no mirror is its own error, before anything is written
        _ensure_writable(target)
        with _sigterm_unwinds():
            for spec in missing:
                files[spec.name] = _download_one(spec, target)
    return files


def _download_folder(target: Path) -> str:
    """The download folder as the learner set it, so the error names the variable to change."""
    if os.environ.get("FMNIST_LAB_DATA_DIR") and Path(os.environ["FMNIST_LAB_DATA_DIR"]) == target:
        return f"FMNIST_LAB_DATA_DIR={target}"
    return f"{target} (the user cache)" if target == cache_dir() else str(target)


def _ensure_writable(target: Path) -> None:
    """Create `target` and write a throwaway file there, so an unusable folder fails before any download."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):
            pass
    except OSError as exc:
        blocker = next((p for p in (target, *target.parents) if p.is_file()), None)
        if blocker == target:
            problem = "is a file, not a folder"
        elif blocker is not None:
            problem = f"is inside {blocker}, which is a file, not a folder"
        else:
            problem = f"is not writable ({exc.strerror or exc})"
        raise _CannotDownload(
            f"Fashion-MNIST needs a download, but the download folder "
            f"{_download_folder(target)} {problem}: point FMNIST_LAB_DATA_DIR at a "
            "writable folder"
        ) from None


class _Terminated(BaseException):
    """Raised by the SIGTERM handler while downloading, so every `finally` removes its `.part` file."""


def _raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler during a download: ignore any second SIGTERM, then unwind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise _Terminated


def _catch_sigterm() -> bool:
    """Install `_raise_terminated` if SIGTERM would kill us outright; False where that is not ours to do."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False  # ignored, or someone else's handler: theirs to decide
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: only it may set handlers
        return False
    return True


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While downloading, let SIGTERM run the `finally` blocks (no `.part` left), then end the process."""
    if not _catch_sigterm():
        yield
        return
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)  # ends the process, as SIGTERM would have, now nothing is left
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _max_gzip_size(spec: IdxFile) -> int:
    """More bytes than any gzip of `spec`'s file can take (stored blocks add 5 bytes per 64 KiB)."""
    return spec.size + spec.size // 100 + (1 << 16)


def _download_one(spec: IdxFile, target: Path) -> Path:
    """Try each mirror for one file: write to a temporary name, verify, then rename."""
    failures = []
    for mirror in mirrors():
        url = f"{mirror}{spec.name}.gz"
        handle, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    if out.tell() > _max_gzip_size(spec):
                        raise FmnistLabError(
                            f"{url} (more than {_max_gzip_size(spec):,} bytes, too big for "
                            f"a gzip of {spec.name}: not Fashion-MNIST)"
                        )
            verify_bytes(url, read_decompressed(tmp, shown_as=url, gzipped=True, spec=spec), spec)
            final = target / f"{spec.name}.gz"
            os.replace(tmp, final)
            return final
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            failures.append(f"{url} ({reason})")
        except FmnistLabError as exc:
            failures.append(str(exc))
        finally:
            tmp.unlink(missing_ok=True)
    raise FmnistLabError(f"download failed: {'; '.join(failures)}")


def read_decompressed(
    path: Path, shown_as: str | None = None, gzipped: bool | None = None, spec: IdxFile | None = None
) -> bytes:
    """The file's bytes, gunzipped if `.gz`; a broken file, or one too big to be `spec`, is a clear error."""
    shown = shown_as or path
    gzipped = gzipped if gzipped is not None else str(path).endswith(".gz")
    if spec is not None:
        _refuse_by_size(path, shown, gzipped, spec)
    if not gzipped:
        return Path(path).read_bytes()
    try:
        data = _gunzip(Path(path).read_bytes(), -1 if spec is None else spec.size + 1)  # a gzip bomb stops here
    except (OSError, EOFError, zlib.error) as exc:
        raise FmnistLabError(
            f"{shown}: not a complete gzip file ({exc}); delete it and run `fmnist-lab data` again"
        ) from None
    if spec is not None and len(data) > spec.size:
        raise _wrong_size(shown, f"more than {spec.size:,}", spec, too_big=True)
    return data


def _gunzip(compressed: bytes, limit: int) -> bytes:
    """Decompress every gzip member, at most `limit` bytes (-1: all), in whole-buffer zlib calls.

    Each call releases the GIL for its whole run, so the import that `fmnist-lab train` runs on a thread
    meanwhile does not hold it up, as it held up `gzip.open`'s chunk-by-chunk reads.
    """
    parts, size = [], 0
    while compressed and (limit < 0 or size < limit):
        member = zlib.decompressobj(wbits=31)  # 31: a gzip header and trailer (CRC-32 and size checked)
        part = member.decompress(compressed, max_length=0 if limit < 0 else limit - size)
        parts.append(part)
        size += len(part)
        if not member.eof:
            if 0 <= limit <= size:  # stopped at the limit: the caller reports the size
                break
            raise EOFError("Compressed file ended before the end-of-stream marker was reached")
        compressed = member.unused_data.lstrip(b"\0")  # gzip's padding between members
    return b"".join(parts)


def _refuse_by_size(path: Path, shown: Path | str, gzipped: bool, spec: IdxFile) -> None:
    """Refuse a file whose size on disk rules it out, before a byte of it is read into memory."""
    on_disk = os.stat(path).st_size
    if not gzipped and on_disk != spec.size:
        raise _wrong_size(shown, f"{on_disk:,}", spec, too_big=on_disk > spec.size)
    if gzipped and on_disk > _max_gzip_size(spec):
        raise FmnistLabError(
            f"{shown}: {on_disk:,} bytes, more than any gzip of {spec.name} can be "
            "(not Fashion-MNIST); delete it and run `fmnist-lab data` again"
        )


def _wrong_size(path: Path | str, found: str, spec: IdxFile, too_big: bool) -> FmnistLabError:
    """One message for every file whose decompressed size is not the official one."""
    why = "too big: not Fashion-MNIST" if too_big else "truncated or not Fashion-MNIST"
    return FmnistLabError(
        f"{path}: decompressed size is {found} bytes, expected {spec.size:,} for "
        f"{spec.name} ({why}); delete it and run `fmnist-lab data` again"
    )


def verify_bytes(path: Path | str, data: bytes, spec: IdxFile) -> None:
    """Raise a clear error naming `path` unless `data` has the official size and SHA-256."""
    if len(data) != spec.size:
        raise _wrong_size(path, f"{len(data):,}", spec, too_big=len(data) > spec.size)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise FmnistLabError(
            f"{path}: SHA-256 of the decompressed bytes is {digest[:12]}…, expected "
            f"{spec.sha256[:12]}… for {spec.name} (corrupt file); delete it and run "
            "`fmnist-lab data` again"
        )


def parse_idx(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode an IDX file (unsigned bytes): a 4-byte magic, big-endian dimensions, then the values."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise FmnistLabError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FmnistLabError(f"{path}: IDX header cut short")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(shape)
    if len(data) != expected:
        raise FmnistLabError(
            f"{path}: IDX header promises {expected:,} bytes for shape {shape}, file has {len(data):,}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=8)
def _read_verified(path: Path, split: str, kind: str) -> np.ndarray:
    """Read, verify and decode one official file once per process."""
    data = read_decompressed(path, spec=IDX_FILES[(split, kind)])
    verify_bytes(path, data, IDX_FILES[(split, kind)])
    return parse_idx(data, path)


def verify(location: DataLocation) -> dict[str, tuple[int, ...]]:
    """Verify all four files of `location`; return each file's array shape."""
    return {IDX_FILES[key].name: _read_verified(location.path(*key), *key).shape for key in IDX_FILES}


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 images exactly as the original's `Resize((size, size))` on PIL images does."""
    if size == images.shape[-1]:
        return images
    from PIL import Image

    # PIL itself (torchvision's tensor resize differs from it by one grey level in about 2% of the pixels), in
    # two calls over all images at once instead of one call per image (1.5 s for the training set): PIL resizes
    # rows, then columns, so a tall stack resized in width and a wide row resized in height never mix two images.
    # The tests compare every image with PIL's own per-image result.
    n, height, width = images.shape
    tall = Image.fromarray(np.ascontiguousarray(images).reshape(n * height, width))
    narrow = np.asarray(tall.resize((size, n * height), Image.BILINEAR)).reshape(n, height, size)
    side_by_side = np.ascontiguousarray(narrow.transpose(1, 0, 2)).reshape(height, n * size)
    wide = np.asarray(Image.fromarray(side_by_side).resize((n * size, size), Image.BILINEAR))
    return np.ascontiguousarray(wide.reshape(size, n, size).transpose(1, 0, 2))


@functools.lru_cache(maxsize=8)
def _images_uint8(path: Path, split: str, image_size: int) -> np.ndarray:
    """The split's images as uint8 at `image_size`, computed once per process."""
    return resize_images(_read_verified(path, split, "images"), image_size)


def load(
    split: str = "train", image_size: int = 28, root: str | os.PathLike | None = None, count: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, S, S) float32 in [0, 1] and labels (N,) int64 of a split, as fresh tensors.

    `count`: only the first `count` images (all by default), for a figure that needs a few: converting all
    60,000 to float takes 0.3 s.
    """
    if split not in SPLITS:
        raise FmnistLabError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if image_size not in IMAGE_SIZES:
        raise FmnistLabError(f"image_size must be 28 (the originals) or 16 (the original model's), got {image_size}")
    if count is not None and count < 1:
        raise FmnistLabError(f"count must be at least 1, got {count}")
    location = find_data(root)
    images = _images_uint8(location.path(split, "images"), split, image_size)[:count]
    labels = _read_verified(location.path(split, "labels"), split, "labels")[:count]
    return (torch.tensor(images, dtype=torch.float32).unsqueeze(1).div_(255), torch.tensor(labels, dtype=torch.int64))


class InMemoryBatches:
    """Shuffled batches sliced from tensors already in memory: no per-image Python work per step.

    A seeded `torch.Generator` draws a new order every epoch, so two runs with the same seed see
    the same batches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int = 100,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
    ):
        if len(images) != len(labels):
            raise FmnistLabError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise FmnistLabError(f"batch_size must be at least 1, got {batch_size}")
        device = torch.device(device) if device is not None else images.device
        self.images = images.to(device)
        self.labels = labels.to(device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.images[index], self.labels[index]


def torchvision_dataset(split: str = "train", transform=None, root: str | os.PathLike | None = None):
    """`torchvision.datasets.FashionMNIST` over the same verified files (for lessons on DataLoader)."""
    from torchvision.datasets import FashionMNIST

    location = find_data(root)
    verify(location)
    raw_dirs = {path.parent for path in location.files.values()}
    plain = all(not path.name.endswith(".gz") for path in location.files.values())
    if plain and len(raw_dirs) == 1 and raw_dirs.pop().parts[-2:] == ("FashionMNIST", "raw"):
        base = next(iter(location.files.values())).parent.parent.parent
    else:  # decompressed copies in a folder of their own, which the search never mistakes for the data
        base = data_dir() / TORCHVISION_SUBDIR
        _write_raw_layout(location, base / "FashionMNIST" / "raw")
    return FashionMNIST(str(base), train=(split == "train"), transform=transform, download=False)


def _write_raw_layout(location: DataLocation, raw: Path) -> None:
    """Write decompressed copies in torchvision's layout, each renamed into place when complete."""
    raw.mkdir(parents=True, exist_ok=True)
    for (split, kind), spec in IDX_FILES.items():
        dest = raw / spec.name
        if dest.is_file() and dest.stat().st_size == spec.size:
            continue
        data = read_decompressed(location.path(split, kind), spec=spec)
        verify_bytes(location.path(split, kind), data, spec)
        tmp = dest.with_name(f".{spec.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, dest)
