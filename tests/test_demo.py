"""The live demo page (docs/demo.md, build_tools/site_demo.py) built with MkDocs and driven in headless Chromium.

For 20 test images the page's predicted classes equal PyTorch's and its probabilities agree within
1e-3; drawing on the canvas with the mouse and uploading a picture give a prediction computed from
the same pixels as `fmnist_lab.export.preprocess_drawing`; the page makes no request to another host
and logs no error. The browser, the build and the request checks are tests/test_site.py's.

The page fetches only the files the build counted for the weight it states (the plain SIMD WebAssembly
build of onnxruntime-web, no WebGPU or JSEP file); the test measures the bytes transferred and prints them.
*Clear* resets the prediction, and on a phone a tap on a sample brings the prediction into view.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from conftest import REPO, build_tool
from PIL import Image
from test_site import ARTIFACTS, Visit  # the site, server and browser fixtures are conftest.py's

from fmnist_lab import data
from fmnist_lab.evaluate import predict
from fmnist_lab.export import onnx_predict, onnx_session, preprocess_drawing
from fmnist_lab.train import original_run

PAGE_TOLERANCE = 1e-3  # the browser's ONNX Runtime (WebAssembly, float32) against PyTorch
PIXEL_TOLERANCE = 1e-5  # the page's preprocessing against Python's (float64 then float32 in both)
READY_TIMEOUT_MS = 120_000  # loading 14 MB of WebAssembly on a busy 2-core machine


@pytest.fixture(scope="module")
def samples(site) -> dict:
    """The samples.json the build wrote beside the page."""
    return json.loads((site / "demo" / "samples.json").read_text())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The checkpoint the site exported (the original run, seed 0)."""
    return original_run()[0].cpu().eval()


def open_demo(browser, server) -> Visit:
    """The demo page, loaded, with its model and samples ready."""
    visit = Visit(browser, server + "demo/")
    visit.page.wait_for_selector("#demo-result[data-ready='true']", timeout=READY_TIMEOUT_MS)
    return visit


def wait_for_result(page, source: str, runs_before: int, index: int | None = None) -> dict:
    """Wait for a new prediction from `source`; return the page's class and probabilities."""
    condition = f"r.dataset.source === '{source}' && Number(r.dataset.runs) > {runs_before}" + (
        f" && r.dataset.index === '{index}'" if index is not None else ""
    )
    page.wait_for_function(
        f"(() => {{ const r = document.getElementById('demo-result'); return {condition}; }})()", timeout=60_000
    )
    state = page.eval_on_selector("#demo-result", "r => ({...r.dataset})")
    return {
        "predicted": int(state["predicted"]),
        "probabilities": np.array(json.loads(state["probabilities"])),
        "runs": int(state["runs"]),
        "input": np.array(page.evaluate("window.fmnistDemo.lastInput")),
    }


def settle(page, source: str, runs_before: int) -> dict:
    """The page's last prediction once no new one has come for 0.5 s (drawing predicts as the pen moves)."""
    wait_for_result(page, source, runs_before)
    while True:
        count = runs(page)
        page.wait_for_timeout(500)
        if runs(page) == count:
            return wait_for_result(page, source, count - 1)


def runs(page) -> int:
    """How many predictions the page has shown so far."""
    return int(page.get_attribute("#demo-result", "data-runs") or 0)


def pytorch_probabilities(model, pixels: np.ndarray) -> np.ndarray:
    """PyTorch's probabilities for one (1, 1, S, S) input."""
    return predict(model, torch.as_tensor(pixels, dtype=torch.float32))[1][0].double().numpy()


def test_the_build_writes_the_model_samples_and_onnxruntime_web(site):
    demo = site / "demo"
    for name in (
        "index.html",
        "demo.js",
        "demo.css",
        "model.onnx",
        "samples.json",
        "ort.wasm.min.mjs",
        "ort-wasm-simd-threaded.mjs",
        "ort-wasm-simd-threaded.wasm",
    ):
        assert (demo / name).is_file(), f"site/demo/{name} is missing"
    runtime = sorted(p.name for p in demo.iterdir() if p.name.startswith("ort"))
    assert runtime == sorted(build_tool("site_demo").ORT_FILES)  # the plain SIMD build only: no JSEP, no WebGPU
    thumbnails = sorted((demo / "samples").glob("*.png"))
    assert len(thumbnails) == 40 and all(p.read_bytes()[:4] == b"\x89PNG" for p in thumbnails)
    assert Image.open(thumbnails[0]).size == (28, 28)
    # generated, never committed: nothing of the kind in docs/
    assert not [p for p in (REPO / "docs").rglob("*") if p.suffix in (".onnx", ".wasm", ".mjs")]


def test_samples_are_test_images_with_pytorchs_probabilities(samples, model):
    images, labels = data.load("test", 16)
    indices = [s["index"] for s in samples["samples"]]
    assert [s["label"] for s in samples["samples"]] == [c for c in range(10) for _ in range(4)]
    assert [int(labels[i]) for i in indices] == [s["label"] for s in samples["samples"]]
    pixels = np.array([s["pixels"] for s in samples["samples"]], dtype=np.float32).reshape(-1, 1, 16, 16)
    assert np.array_equal(pixels, images[indices].numpy())  # the exact [0, 1] arrays
    predicted, probabilities = predict(model, images[indices])
    stored = np.array([s["pytorch_probabilities"] for s in samples["samples"]])
    assert np.abs(stored - probabilities.double().numpy()).max() < 1e-6
    assert [s["pytorch_predicted"] for s in samples["samples"]] == predicted.tolist()
    assert samples["classes"][9] == "Ankle boot" and samples["model"]["image_size"] == 16


def test_the_sites_model_onnx_equals_pytorch(site, model):
    images, _ = data.load("test", 16)
    predicted, probabilities = onnx_predict(onnx_session(site / "demo" / "model.onnx"), images[:2000])
    torch_predicted, torch_probabilities = predict(model, images[:2000])
    assert np.array_equal(predicted, torch_predicted.numpy())
    assert np.abs(probabilities - torch_probabilities.double().numpy()).max() <= 1e-4


def test_page_predictions_equal_pytorch_for_20_test_images(browser, server, samples):
    visit = open_demo(browser, server)
    chosen = samples["samples"][::2]  # two per class
    assert len(chosen) == 20
    gaps = []
    for sample in chosen:
        before = runs(visit.page)
        visit.page.click(f".fmnist-demo__sample[data-index='{sample['index']}']")
        shown = wait_for_result(visit.page, "sample", before, sample["index"])
        assert shown["predicted"] == sample["pytorch_predicted"], sample["index"]
        gaps.append(np.abs(shown["probabilities"] - np.array(sample["pytorch_probabilities"])).max())
        name = samples["classes"][shown["predicted"]]
        assert visit.page.inner_text("#demo-prediction").startswith(name)
        bars = visit.page.eval_on_selector_all(
            ".fmnist-demo__bar", "rows => rows.map(r => Number(r.dataset.probability))"
        )
        assert np.allclose(bars, shown["probabilities"])
    print(f"\n20 test images: classes equal PyTorch's, max |Δprob| {max(gaps):.2e}")
    assert max(gaps) <= PAGE_TOLERANCE
    visit.assert_clean()
    visit.page.close()


def draw_trousers(page) -> None:
    """Two legs and a waistband, drawn with mouse events on the canvas."""
    canvas = page.locator("#demo-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    scale = box["width"] / 280

    def stroke(points):
        page.mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()

    stroke([(95, 40), (185, 40)])
    stroke([(95, 40), (85, 250)])
    stroke([(185, 40), (195, 250)])


def test_drawing_on_the_canvas_gives_a_prediction_from_pythons_pixels(browser, server, model):
    visit = open_demo(browser, server)
    before = runs(visit.page)
    draw_trousers(visit.page)
    shown = settle(visit.page, "drawing", before)  # the prediction of the finished drawing
    rgba = np.array(
        visit.page.evaluate(
            "Array.from(document.getElementById('demo-canvas').getContext('2d').getImageData(0, 0, 280, 280).data)"
        ),
        dtype=np.uint8,
    ).reshape(280, 280, 4)
    expected = preprocess_drawing(rgba, 16)
    assert np.abs(shown["input"] - expected.flatten()).max() <= PIXEL_TOLERANCE
    assert expected[0, 0].mean() < 0.5  # inverted: a light garment on a dark background
    assert np.abs(shown["probabilities"] - pytorch_probabilities(model, expected)).max() <= PAGE_TOLERANCE
    assert shown["probabilities"].sum() == pytest.approx(1, abs=1e-6)
    assert visit.page.inner_text("#demo-prediction").strip()
    ARTIFACTS.mkdir(exist_ok=True)
    visit.page.screenshot(path=str(ARTIFACTS / "demo_drawing.png"), full_page=True)
    visit.assert_clean()
    visit.page.close()


def test_an_uploaded_picture_is_preprocessed_like_python(browser, server, model, tmp_path):
    images, _ = data.load("test", 28)
    # A test garment as a photo might show it: dark on white paper, larger, not square.
    garment = 255 - (images[0, 0].numpy() * 255).round().astype(np.uint8)
    picture = np.full((100, 84), 255, dtype=np.uint8)
    picture[8:92, :] = np.asarray(Image.fromarray(garment).resize((84, 84), Image.NEAREST))
    path = tmp_path / "garment.png"
    Image.fromarray(picture).convert("RGB").save(path)
    visit = open_demo(browser, server)
    before = runs(visit.page)
    visit.page.set_input_files("#demo-upload", str(path))
    shown = wait_for_result(visit.page, "upload", before)
    expected = preprocess_drawing(np.asarray(Image.open(path).convert("RGBA")), 16)
    assert np.abs(shown["input"] - expected.flatten()).max() <= PIXEL_TOLERANCE
    assert np.abs(shown["probabilities"] - pytorch_probabilities(model, expected)).max() <= PAGE_TOLERANCE
    visit.assert_clean()
    visit.page.close()


def load_hook(monkeypatch) -> object:
    """build_tools/site_demo.py loaded as MkDocs loads a hook: by path, with its folder on sys.path."""
    monkeypatch.syspath_prepend(str(REPO / "build_tools"))
    spec = importlib.util.spec_from_file_location("site_demo_under_test", REPO / "build_tools" / "site_demo.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    return hook


def test_the_build_never_trains_it_stops_with_one_line_naming_the_command(tmp_path, monkeypatch):
    hook = load_hook(monkeypatch)
    monkeypatch.setenv("FMNIST_LAB_RESULTS", str(tmp_path / "no-results"))
    with pytest.raises(SystemExit) as stopped:
        hook.model_markdown()
    message = str(stopped.value)
    assert "\n" not in message and "run `make checkpoint` first" in message
    assert str(tmp_path / "no-results" / "lessons" / "seed0" / "model_weights.pth") in message
    assert not (tmp_path / "no-results").exists()  # nothing trained, nothing written


def test_the_build_stops_with_one_line_without_npm_ci(tmp_path, monkeypatch):
    hook = load_hook(monkeypatch)
    monkeypatch.setattr(hook, "ORT_DIST", tmp_path / "node_modules" / "onnxruntime-web" / "dist")
    with pytest.raises(SystemExit) as stopped:
        hook.on_config({})
    message = str(stopped.value)
    assert "\n" not in message and "run `npm ci`" in message and "onnxruntime-web" in message


OTHER_RUNTIMES = ("jsep", "webgpu", "jspi", "asyncify", "webgl")  # onnxruntime-web builds the page must not load


def test_the_page_fetches_only_the_files_whose_weight_it_states(browser, server, site):
    site_demo = build_tool("site_demo")
    context = browser.new_context()  # an empty cache: the first visit
    page = context.new_page()
    transferred: dict[str, int] = {}

    def finished(request) -> None:
        sizes = request.sizes()
        transferred[request.url] = sizes["responseBodySize"] + sizes["responseHeadersSize"]

    page.on("requestfinished", finished)
    page.goto(server + "demo/", wait_until="networkidle")
    page.wait_for_selector("#demo-result[data-ready='true']", timeout=READY_TIMEOUT_MS)
    page.wait_for_load_state("networkidle")
    demo = {
        url.removeprefix(server + "demo/"): size
        for url, size in transferred.items()
        if url.startswith(server + "demo/")
    }
    counted = site_demo.demo_files()
    assert set(demo) - {""} <= set(counted), set(demo) - set(counted)  # "" is the page itself
    assert {"model.onnx", "samples.json", *site_demo.ORT_FILES} <= set(demo)
    assert not [url for url in transferred if any(name in url for name in OTHER_RUNTIMES)]
    for name in set(demo) - {""}:  # what came over the wire is the file the build measured
        assert (site / "demo" / name).stat().st_size <= demo[name]
    weight = site_demo.demo_weight()
    total, own = sum(transferred.values()), sum(size for name, size in demo.items() if name)
    print(
        f"\ndemo page: {len(transferred)} requests, {total:,} bytes transferred uncompressed "
        f"({own:,} of them the demo's files, {weight['wasm_bytes']:,} WebAssembly); "
        f"gzip-compressed the demo's files are {weight['gzip_bytes']:,} bytes"
    )
    assert site_demo.weight_markdown() in page.inner_text("article")  # the page states the measured numbers
    context.close()


def test_clear_resets_the_prediction(browser, server):
    visit = open_demo(browser, server)
    before = runs(visit.page)
    draw_trousers(visit.page)
    settle(visit.page, "drawing", before)
    assert visit.page.inner_text("#demo-prediction").strip()
    visit.page.click("#demo-clear")
    assert visit.page.inner_text("#demo-prediction").strip() == ""
    state = visit.page.eval_on_selector("#demo-result", "r => ({...r.dataset})")
    assert "predicted" not in state and "source" not in state
    bars = visit.page.eval_on_selector_all(".fmnist-demo__bar-value", "values => values.map(v => v.textContent)")
    assert bars == [""] * 10
    assert visit.page.evaluate("window.fmnistDemo.lastInput") is None
    visit.page.wait_for_timeout(500)  # a prediction still on its way for the old drawing stays unshown
    assert visit.page.inner_text("#demo-prediction").strip() == ""
    visit.assert_clean()
    visit.page.close()


def test_a_tap_on_a_sample_brings_the_prediction_into_view_on_a_phone(browser, server, samples):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True)
    page = context.new_page()
    page.goto(server + "demo/", wait_until="networkidle")
    page.wait_for_selector("#demo-result[data-ready='true']", timeout=READY_TIMEOUT_MS)
    assert page.get_by_label("Picture of a garment").get_attribute("type") == "file"  # the upload has a name
    sample = samples["samples"][-1]
    button = page.locator(f".fmnist-demo__sample[data-index='{sample['index']}']")
    button.scroll_into_view_if_needed()
    below = page.eval_on_selector("#demo-prediction", "p => p.getBoundingClientRect().top > window.innerHeight")
    assert below, "on a phone the prediction starts below the samples"
    before = runs(page)
    button.tap()
    wait_for_result(page, "sample", before, sample["index"])
    page.wait_for_function(
        "() => { const b = document.getElementById('demo-prediction').getBoundingClientRect();"
        " return b.top >= 0 && b.bottom <= window.innerHeight; }",
        timeout=10_000,
    )
    assert page.inner_text("#demo-prediction").startswith(samples["classes"][sample["pytorch_predicted"]])
    context.close()
