// The live demo of fmnist-lab. The course's model, exported to ONNX when the site is built, classifies a
// test image, an uploaded picture or a drawing in the browser with ONNX Runtime Web. The preprocessing
// follows fmnist_lab.export.preprocess_drawing step by step; tests/test_demo.py checks that both give
// the same pixels and that the page's probabilities match PyTorch's.
import * as ort from "./ort.wasm.min.mjs";

const HERE = new URL("./", import.meta.url).href;
ort.env.wasm.numThreads = 1; // threads need cross-origin isolation, which a static site cannot turn on
ort.env.wasm.proxy = false;
ort.env.wasm.wasmPaths = HERE; // the .mjs glue and the .wasm binary sit beside this file (site_demo.py)

const GRAY_WEIGHTS = [0.299, 0.587, 0.114]; // ITU-R BT.601 luma, as PIL's convert("L")
const LIGHT_BACKGROUND = 0.5; // a border lighter than this on average: a drawing on paper, so invert
const SOURCE_SIZE = 28; // Fashion-MNIST's own size
const MAX_UPLOAD_SIDE = 1024; // larger uploads are first scaled down by the browser

// --- Preprocessing: the same steps as fmnist_lab.export -----------------------------------------

/** Gray levels in [0, 1] from RGBA bytes, a transparent pixel counting as white paper. */
export function toGrayscale(rgba, width, height) {
  const gray = new Float64Array(width * height);
  for (let i = 0; i < width * height; i++) {
    const value = (rgba[4 * i] / 255) * GRAY_WEIGHTS[0] + (rgba[4 * i + 1] / 255) * GRAY_WEIGHTS[1]
      + (rgba[4 * i + 2] / 255) * GRAY_WEIGHTS[2];
    const alpha = rgba[4 * i + 3] / 255;
    gray[i] = alpha * value + (1 - alpha);
  }
  return gray;
}

/** True when the one-pixel border is light on average (a dark drawing on white paper). */
export function isLightBackground(gray, width, height) {
  let sum = 0;
  let count = 0;
  for (let x = 0; x < width; x++) {
    sum += gray[x] + gray[(height - 1) * width + x];
    count += 2;
  }
  for (let y = 1; y < height - 1; y++) {
    sum += gray[y * width] + gray[y * width + width - 1];
    count += 2;
  }
  return sum / count > LIGHT_BACKGROUND;
}

/** The image centred on a dark square whose side is the longer side. */
export function padToSquare(gray, width, height) {
  const side = Math.max(width, height);
  const square = new Float64Array(side * side);
  const top = Math.floor((side - height) / 2);
  const left = Math.floor((side - width) / 2);
  for (let y = 0; y < height; y++) {
    square.set(gray.subarray(y * width, (y + 1) * width), (top + y) * side + left);
  }
  return { data: square, side };
}

/** PIL's bilinear filter: for each output pixel, the first input pixel and the normalised weights. */
export function resizeWeights(inSize, outSize) {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const rows = [];
  for (let out = 0; out < outSize; out++) {
    const center = (out + 0.5) * scale;
    const first = Math.max(Math.trunc(center - support + 0.5), 0);
    const last = Math.min(Math.trunc(center + support + 0.5), inSize);
    const taps = new Float64Array(last - first);
    let total = 0;
    for (let x = first; x < last; x++) {
      taps[x - first] = Math.max(0, 1 - Math.abs((x - center + 0.5) / filterScale));
      total += taps[x - first];
    }
    for (let k = 0; k < taps.length; k++) taps[k] /= total;
    rows.push({ first, taps });
  }
  return rows;
}

/** Resize a square gray image (side × side) to size × size: rows first, then columns. */
export function resizeImage(gray, side, size) {
  const weights = resizeWeights(side, size);
  const across = new Float64Array(side * size);
  for (let y = 0; y < side; y++) {
    for (let out = 0; out < size; out++) {
      const { first, taps } = weights[out];
      let value = 0;
      for (let k = 0; k < taps.length; k++) value += taps[k] * gray[y * side + first + k];
      across[y * size + out] = value;
    }
  }
  const result = new Float64Array(size * size);
  for (let out = 0; out < size; out++) {
    const { first, taps } = weights[out];
    for (let x = 0; x < size; x++) {
      let value = 0;
      for (let k = 0; k < taps.length; k++) value += taps[k] * across[(first + k) * size + x];
      result[out * size + x] = value;
    }
  }
  return result;
}

/** The model's input (size × size floats in [0, 1], light garment on dark) from RGBA bytes. */
export function preprocessDrawing(rgba, width, height, imageSize) {
  if (Math.min(width, height) < 2) throw new Error(`the image is too small: ${width}×${height} pixels`);
  let gray = toGrayscale(rgba, width, height);
  if (isLightBackground(gray, width, height)) gray = gray.map((v) => 1 - v);
  const { data, side } = padToSquare(gray, width, height);
  let image = resizeImage(data, side, SOURCE_SIZE);
  if (imageSize !== SOURCE_SIZE) image = resizeImage(image, SOURCE_SIZE, imageSize);
  return Float32Array.from(image, (v) => Math.min(1, Math.max(0, v)));
}

export function softmax(logits) {
  const max = Math.max(...logits);
  const exps = Array.from(logits, (z) => Math.exp(z - max));
  const total = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / total);
}

// --- The model --------------------------------------------------------------------------------------

let session = null;
let meta = null;
let queue = Promise.resolve(); // one inference at a time
let latest = 0; // only the newest request updates the page

/** Class probabilities for one image given as size × size floats. */
export function classify(pixels) {
  const run = queue.then(async () => {
    const size = meta.model.image_size;
    const input = new ort.Tensor("float32", Float32Array.from(pixels), [1, 1, size, size]);
    const outputs = await session.run({ [meta.model.input]: input });
    const probabilities = softmax(outputs[meta.model.output].data);
    const predicted = probabilities.indexOf(Math.max(...probabilities));
    return { probabilities, predicted };
  });
  queue = run.catch(() => undefined);
  return run;
}

// --- The page ---------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const result = $("demo-result");
const status = $("demo-status");
const percent = (p) => `${(100 * p).toFixed(1)}%`;

function drawInput(pixels, size) {
  const canvas = $("demo-input");
  canvas.width = size;
  canvas.height = size;
  const context = canvas.getContext("2d");
  const image = context.createImageData(size, size);
  pixels.forEach((v, i) => {
    const level = Math.round(255 * v);
    image.data.set([level, level, level, 255], 4 * i);
  });
  context.putImageData(image, 0, 0);
}

function buildBars() {
  const bars = $("demo-bars");
  bars.replaceChildren(...meta.classes.map((name, id) => {
    const row = document.createElement("div");
    row.className = "fmnist-demo__bar";
    row.setAttribute("role", "listitem");
    row.dataset.class = String(id);
    row.innerHTML = '<span class="fmnist-demo__bar-name"></span><span class="fmnist-demo__bar-track">'
      + '<span class="fmnist-demo__bar-fill"></span></span><span class="fmnist-demo__bar-value"></span>';
    row.querySelector(".fmnist-demo__bar-name").textContent = name;
    return row;
  }));
}

/** Classify `pixels` and show the result, unless a newer request has started meanwhile. */
async function predictAndShow(pixels, source, detail = {}) {
  const ticket = ++latest;
  const { probabilities, predicted } = await classify(pixels);
  if (ticket !== latest) return;
  const size = meta.model.image_size;
  drawInput(pixels, size);
  document.querySelectorAll(".fmnist-demo__bar").forEach((row, id) => {
    row.classList.toggle("is-predicted", id === predicted);
    row.dataset.probability = String(probabilities[id]);
    row.querySelector(".fmnist-demo__bar-fill").style.width = `${100 * probabilities[id]}%`;
    row.querySelector(".fmnist-demo__bar-value").textContent = percent(probabilities[id]);
  });
  $("demo-prediction").textContent = `${meta.classes[predicted]} (${percent(probabilities[predicted])})`;
  $("demo-truth").textContent = detail.truth === undefined ? ""
    : `Test image ${detail.index}: true class ${meta.classes[detail.truth]}.`;
  window.fmnistDemo.lastInput = Array.from(pixels);
  result.dataset.source = source;
  result.dataset.index = detail.index === undefined ? "" : String(detail.index);
  result.dataset.predicted = String(predicted);
  result.dataset.probabilities = JSON.stringify(probabilities);
  result.dataset.runs = String(Number(result.dataset.runs || 0) + 1);
  status.textContent = source === "drawing" ? "Keep drawing; the prediction follows your pen."
    : "Pick, upload or draw another.";
}

/** Back to no prediction: empty bars, no class, no input shown (the Clear button). */
function resetPrediction() {
  latest += 1; // a prediction still running for the old drawing is not shown
  document.querySelectorAll(".fmnist-demo__bar").forEach((row) => {
    row.classList.remove("is-predicted");
    delete row.dataset.probability;
    row.querySelector(".fmnist-demo__bar-fill").style.width = "0";
    row.querySelector(".fmnist-demo__bar-value").textContent = "";
  });
  document.querySelectorAll(".fmnist-demo__sample.is-selected").forEach((b) => b.classList.remove("is-selected"));
  $("demo-prediction").textContent = "";
  $("demo-truth").textContent = "";
  $("demo-input").getContext("2d").clearRect(0, 0, $("demo-input").width, $("demo-input").height);
  window.fmnistDemo.lastInput = null;
  for (const key of ["source", "index", "predicted", "probabilities"]) delete result.dataset[key];
  status.textContent = "Cleared: pick, upload or draw another.";
}

/** On a phone the prediction sits below the inputs: bring it into view when it is off-screen. */
function revealPrediction() {
  const box = $("demo-prediction").getBoundingClientRect();
  if (box.top >= 0 && box.bottom <= window.innerHeight) return;
  const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  result.scrollIntoView({ behavior: smooth ? "smooth" : "auto", block: "start" });
}

function setUpSamples() {
  const container = $("demo-samples");
  container.replaceChildren(...meta.samples.map((sample) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "fmnist-demo__sample";
    button.dataset.index = String(sample.index);
    button.title = `Test image ${sample.index}: ${meta.classes[sample.label]}`;
    const img = document.createElement("img");
    img.src = HERE + sample.thumbnail;
    img.alt = `Test image ${sample.index}, a ${meta.classes[sample.label]}`;
    img.width = 28;
    img.height = 28;
    button.append(img);
    button.addEventListener("click", (event) => {
      const userTap = event.isTrusted; // the page's own first click shows a prediction without scrolling
      container.querySelectorAll(".is-selected").forEach((b) => b.classList.remove("is-selected"));
      button.classList.add("is-selected");
      predictAndShow(Float32Array.from(sample.pixels), "sample", { index: sample.index, truth: sample.label })
        .then(() => userTap && revealPrediction())
        .catch(reportError);
    });
    return button;
  }));
}

function setUpUpload() {
  const input = $("demo-upload");
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
    } catch {
      status.textContent = `${file.name} is not an image this browser can read.`;
      return;
    }
    const scale = Math.min(1, MAX_UPLOAD_SIDE / Math.max(bitmap.width, bitmap.height));
    const width = Math.max(2, Math.round(bitmap.width * scale));
    const height = Math.max(2, Math.round(bitmap.height * scale));
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0, width, height);
    const rgba = context.getImageData(0, 0, width, height).data;
    document.querySelectorAll(".fmnist-demo__sample.is-selected").forEach((b) => b.classList.remove("is-selected"));
    await predictAndShow(preprocessDrawing(rgba, width, height, meta.model.image_size), "upload")
      .catch(reportError);
  });
}

function setUpCanvas() {
  const canvas = $("demo-canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  let drawing = false;
  let drawn = false;
  let busy = false;
  let again = false;

  const clear = () => {
    context.fillStyle = "#ffffff";
    context.fillRect(0, 0, canvas.width, canvas.height);
    drawn = false;
  };
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width),
      (event.clientY - box.top) * (canvas.height / box.height)];
  };
  const predict = async () => {
    if (!drawn) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      do {
        again = false;
        const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
        await predictAndShow(preprocessDrawing(rgba, canvas.width, canvas.height, meta.model.image_size),
          "drawing");
      } while (again);
    } finally {
      busy = false;
    }
  };

  clear();
  context.lineWidth = 18;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.strokeStyle = "#000000";
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    const [x, y] = point(event);
    context.beginPath();
    context.moveTo(x, y);
    context.lineTo(x, y);
    context.stroke();
    drawn = true;
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const [x, y] = point(event);
    context.lineTo(x, y);
    context.stroke();
    predict().catch(reportError);
  });
  const stop = () => {
    if (!drawing) return;
    drawing = false;
    predict().catch(reportError);
  };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("demo-clear").addEventListener("click", () => {
    clear();
    resetPrediction();
  });
}

function reportError(error) {
  status.textContent = `Something went wrong: ${error.message || error}`;
  console.error(error);
}

window.fmnistDemo = { preprocessDrawing, classify, lastInput: null };
window.fmnistDemo.ready = (async () => {
  const [loaded, samples] = await Promise.all([
    ort.InferenceSession.create(`${HERE}model.onnx`, { executionProviders: ["wasm"] }),
    fetch(`${HERE}samples.json`).then((response) => {
      if (!response.ok) throw new Error(`samples.json: HTTP ${response.status}`);
      return response.json();
    }),
  ]);
  session = loaded;
  meta = samples;
  $("demo-input-size").textContent = `${meta.model.image_size}×${meta.model.image_size}`;
  buildBars();
  setUpSamples();
  setUpUpload();
  setUpCanvas();
  result.dataset.ready = "true";
  status.textContent = "Ready: pick a test image, upload a picture or draw.";
  document.querySelector(".fmnist-demo__sample").click(); // start with the first test image shown
})().catch((error) => {
  reportError(new Error(`could not load the model: ${error.message || error}`));
  throw error;
});
