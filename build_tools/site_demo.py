"""MkDocs hook for the live demo page (docs/demo.md): everything it loads is generated at build time.

- `demo/model.onnx`: the original run's checkpoint (`results/lessons/seed0`, made by `make checkpoint`;
  the build never trains) exported with `fmnist_lab.export.export_to_onnx`.
- `demo/samples.json` and `demo/samples/*.png`: a few test images per class, as 28×28 PNG thumbnails
  and as the exact [0, 1] pixels the model reads, with PyTorch's probabilities (the browser test
  compares the page with them).
- `demo/ort*.mjs` and `demo/*.wasm`: onnxruntime-web, copied from `node_modules` (`npm ci`): only its
  plain SIMD WebAssembly build, the one the page runs (no WebGPU, JSEP, JSPI or asyncify files).
None of these is committed. The page's own code is `docs/demo/demo.js` and `docs/demo/demo.css`.
The page states what the demo downloads, as is and gzip-compressed as a static host serves it,
measured on these very files (tests/test_demo.py checks in the browser that they are all it fetches).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import report  # build_tools/report.py: MkDocs puts a hook's folder on sys.path while it loads the hook

ROOT = Path(__file__).resolve().parent.parent

DEMO_DIR = "demo"
ORT_DIST = ROOT / "node_modules" / "onnxruntime-web" / "dist"
# The WebAssembly build only: its ES module, the Emscripten glue it imports, and the binary.
ORT_FILES = ["ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"]
PAGE_FILES = ["demo.js", "demo.css"]  # the page's own code, in docs/demo/
GZIP_LEVEL = 6  # gzip's default level
PER_CLASS = 4  # 40 test images: the first four of each class in test-set order
CACHE = ROOT / ".cache" / "site_demo"


def check_onnxruntime_web() -> None:
    """Stop the build with one line when `npm ci` has not installed onnxruntime-web."""
    missing = [name for name in ORT_FILES if not (ORT_DIST / name).is_file()]
    if missing:
        raise SystemExit(
            f"node_modules/onnxruntime-web is missing ({', '.join(missing)}): run `npm ci` "
            "(make docs does) before building"
        )


CHECKPOINT_COMMAND = "make checkpoint"  # the Makefile's rule: fmnist-lab train --out results/lessons/seed0


@functools.cache
def _checkpoint():
    """The original run's model, history and checkpoint path; the build never trains (one line if missing)."""
    from fmnist_lab.paths import results_dir
    from fmnist_lab.train import load_checkpoint

    path = results_dir() / "lessons" / "seed0" / "model_weights.pth"
    if not path.is_file():
        raise SystemExit(
            f"no trained model for the demo at {path}: run `{CHECKPOINT_COMMAND}` first "
            "(it trains the original run once, about half a minute)"
        )
    model, info = load_checkpoint(path, device="cpu")
    return model, info["history"], path


def sample_indices(labels, per_class: int = PER_CLASS) -> list[int]:
    """The first `per_class` test images of each class, class by class."""
    return [i for c in range(10) for i in [int(j) for j in (labels == c).nonzero().flatten()[:per_class]]]


def write_demo_assets(target: Path) -> dict:
    """Write model.onnx, samples.json and the thumbnails into `target`; return samples.json's content."""
    from PIL import Image

    from fmnist_lab import data
    from fmnist_lab.evaluate import predict
    from fmnist_lab.export import INPUT_NAME, OUTPUT_NAME, SOURCE_SIZE, export_to_onnx
    from fmnist_lab.models import count_parameters

    model, history, _ = _checkpoint()
    target.mkdir(parents=True, exist_ok=True)
    export_to_onnx(model, target / "model.onnx")
    size = model.image_size
    images, labels = data.load("test", size)
    originals, _ = data.load("test", SOURCE_SIZE)
    indices = sample_indices(labels)
    predicted, probabilities = predict(model, images[indices])
    (target / "samples").mkdir(exist_ok=True)
    samples = []
    for row, index in enumerate(indices):
        name = f"samples/{index:05d}.png"
        pixels = (originals[index, 0] * 255).round().byte().numpy()
        Image.fromarray(pixels, mode="L").save(target / name, optimize=True)
        samples.append(
            {
                "index": index,
                "label": int(labels[index]),
                "thumbnail": name,
                "pixels": [float(v) for v in images[index, 0].flatten()],
                "pytorch_predicted": int(predicted[row]),
                "pytorch_probabilities": [float(p) for p in probabilities[row]],
            }
        )
    payload = {
        "model": {
            "name": type(model).__name__,
            "params": count_parameters(model),
            "image_size": size,
            "input": INPUT_NAME,
            "output": OUTPUT_NAME,
            "test_accuracy": history[-1]["val_accuracy"],
            "epochs": len(history),
        },
        "classes": data.CLASS_NAMES,
        "samples": samples,
    }
    (target / "samples.json").write_text(json.dumps(payload) + "\n")
    return payload


def _cache_key(checkpoint: Path) -> str:
    """Changes when the weights, this hook, the export code or the exporter's version change."""
    import onnx
    import torch

    digest = hashlib.sha256(checkpoint.read_bytes())
    from fmnist_lab import export

    for path in (Path(__file__), Path(export.__file__)):
        digest.update(path.read_bytes())
    digest.update(f"{torch.__version__} {onnx.__version__}".encode())
    return digest.hexdigest()[:16]


def demo_assets() -> Path:
    """The folder holding the generated assets, reused across builds (`mkdocs serve`) while nothing changed."""
    _, _, checkpoint = _checkpoint()
    folder = CACHE / _cache_key(checkpoint)
    if not (folder / "samples.json").is_file():
        shutil.rmtree(CACHE, ignore_errors=True)
        partial = folder.with_name(folder.name + ".part")
        write_demo_assets(partial)
        partial.rename(folder)
    return folder


def model_markdown() -> str:
    """One sentence about the model the demo runs, from its checkpoint."""
    from fmnist_lab.models import count_parameters

    model, history, _ = _checkpoint()
    return (
        f"The model is the original run of the course: `{type(model).__name__}`, "
        f"{count_parameters(model):,} parameters, {model.image_size}×{model.image_size} inputs, "
        f"{len(history)} epochs with SGD (lr 0.1, batch 100, seed 0), "
        f"{history[-1]['val_accuracy']:.2%} test accuracy."
    )


def demo_files() -> dict[str, Path]:
    """Every file the demo's code fetches, by its path under `demo/` on the site."""
    assets = demo_assets()
    files = {name: ROOT / "docs" / DEMO_DIR / name for name in PAGE_FILES}
    files.update({name: ORT_DIST / name for name in ORT_FILES})
    files.update({p.relative_to(assets).as_posix(): p for p in sorted(assets.rglob("*")) if p.is_file()})
    return files


@functools.cache
def _gzip_size(path: Path, size: int, mtime: float) -> int:
    """The file's size once gzip-compressed; `size` and `mtime` key the cache, so a changed file is measured again."""
    return len(gzip.compress(path.read_bytes(), compresslevel=GZIP_LEVEL, mtime=0))


def demo_weight() -> dict[str, int]:
    """What the demo downloads: all its files and the WebAssembly runtime alone, as is and gzip-compressed."""
    files = demo_files()
    stats = {name: path.stat() for name, path in files.items()}
    gzipped = {name: _gzip_size(files[name], st.st_size, st.st_mtime) for name, st in stats.items()}
    wasm = [name for name in files if name.endswith(".wasm")]
    return {
        "bytes": sum(st.st_size for st in stats.values()),
        "gzip_bytes": sum(gzipped.values()),
        "wasm_bytes": sum(stats[name].st_size for name in wasm),
        "wasm_gzip_bytes": sum(gzipped[name] for name in wasm),
    }


def weight_markdown() -> str:
    """One sentence on the demo's download size, from the files the build puts beside the page."""
    weight = demo_weight()
    megabytes = {key: f"{value / 1e6:.1f} MB" for key, value in weight.items()}
    return (
        f"The demo's own files come to {megabytes['bytes']} ({megabytes['wasm_bytes']} of it the WebAssembly "
        f"runtime); served gzip-compressed, as a static host can, they are {megabytes['gzip_bytes']} "
        f"({megabytes['wasm_gzip_bytes']} for the runtime). Your browser keeps them in its cache for the next visit."
    )


def on_config(config, **kwargs):
    """Fail at once, before rendering anything, when onnxruntime-web is not installed."""
    check_onnxruntime_web()
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    """Fill the demo page's placeholders from the checkpoint and the benchmark results."""
    for placeholder, generate in (
        ("<!-- demo-model -->", model_markdown),
        ("<!-- demo-speed -->", report.inference_markdown),
        ("<!-- demo-weight -->", weight_markdown),
    ):
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, generate())
    return markdown


def on_post_build(config, **kwargs):
    """Put the model, the samples and onnxruntime-web beside the demo page."""
    check_onnxruntime_web()
    target = Path(config["site_dir"]) / DEMO_DIR
    shutil.copytree(demo_assets(), target, dirs_exist_ok=True)
    for name in ORT_FILES:
        shutil.copy2(ORT_DIST / name, target / name)
