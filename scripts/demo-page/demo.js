// The demo page: the saved classifier (model/, tfjs layers format) in the browser. An image is decoded by the
// browser, made the size the model says (its metadata's imageSize: 32x32 for CIFAR-10, by the same code as
// `npm run predict`; a folder-trained model's side after its fit — pixels.js is lib/data/pixels.ts, transpiled by
// scripts/demo.ts) and classified, reading results asynchronously only; the top 3 classes are drawn as bars.
import { fitSquare, imageHeaderSize, oversizeReason, resizeTo, rgbaToRgb } from './pixels.js';

const tf = window.tf;
const $ = (id) => document.getElementById(id);

// lib/data/preprocess.ts's ResizeNormalize, which the saved model names: x / 127.5 - 1, then bilinear resize with
// half-pixel centres. It must stay arithmetically identical (test/demo.test.ts compares with Node).
class ResizeNormalize extends tf.layers.Layer {
  static className = 'ResizeNormalize';
  constructor(args) {
    super(args);
    this.size = args.size;
    this.trainable = false;
  }
  computeOutputShape(inputShape) {
    const s = Array.isArray(inputShape[0]) ? inputShape[0] : inputShape;
    return [s[0], this.size, this.size, s[3]];
  }
  call(inputs) {
    return tf.tidy(() => {
      const x = tf.sub(tf.div(tf.cast(Array.isArray(inputs) ? inputs[0] : inputs, 'float32'), 127.5), 1);
      if (x.shape[1] === this.size && x.shape[2] === this.size) return x;
      return tf.image.resizeBilinear(x, [this.size, this.size], false, true);
    });
  }
  getConfig() {
    return { ...super.getConfig(), size: this.size };
  }
}
tf.serialization.registerClass(ResizeNormalize);

/**
 * State for scripted checks (test/demo.test.ts): `backend` is the tfjs backend in use, `adapter` the WebGPU adapter the
 * browser gave (null: none, or not asked because ?backend= forced another), `predictions` counts results, `last` is
 * the latest.
 */
const demo = (window.demo = { status: 'loading', backend: null, adapter: null, predictions: 0, last: null, error: null });

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').className = isError ? 'error' : '';
}

/** The browser's WebGPU adapter, described ("google swiftshader, software fallback adapter"), or null when it gives none. */
async function webgpuAdapter() {
  if (!navigator.gpu || !tf.findBackendFactory('webgpu')) return null; // no WebGPU here (or not a secure context)
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return null;
    const info = adapter.info ?? {};
    const fallback = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter);
    const name = [info.vendor, info.architecture].filter(Boolean).join(' ') || 'unknown adapter';
    return { vendor: info.vendor ?? '', architecture: info.architecture ?? '', fallback, text: `${name}${fallback ? ', software fallback adapter' : ''}` };
  } catch {
    return null;
  }
}

/**
 * webgpu when the browser gives an adapter (navigator.gpu.requestAdapter()), else wasm (SIMD, single-threaded: no
 * cross-origin isolation needed; the .wasm files sit in vendor/): both compute in float32 like Node, and wasm measured
 * faster than webgl on a machine whose WebGL is software. Then webgl, then plain JS. ?backend=NAME forces one.
 * Every result is read asynchronously (await data()): on webgpu a synchronous read stalls the page and, on Chromium's
 * SwiftShader adapter, was measured to return zeros.
 */
async function startBackend() {
  tf.wasm.setWasmPaths('vendor/');
  const forced = new URLSearchParams(location.search).get('backend');
  demo.adapter = !forced || forced === 'webgpu' ? await webgpuAdapter() : null;
  const order = forced ? [forced] : demo.adapter ? ['webgpu', 'wasm', 'webgl', 'cpu'] : ['wasm', 'webgl', 'cpu'];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        return name;
      }
    } catch {
      // try the next one
    }
  }
  throw new Error(`no TensorFlow.js backend starts in this browser${forced ? ` (asked for ${forced})` : ''}`);
}

/** "webgpu (google swiftshader, software fallback adapter)", "wasm (no WebGPU adapter)", "cpu (forced by ?backend=cpu)". */
function backendText() {
  const forced = new URLSearchParams(location.search).get('backend');
  const why = demo.backend === 'webgpu' && demo.adapter ? demo.adapter.text
    : forced ? `forced by ?backend=${forced}`
      : demo.adapter ? `WebGPU adapter ${demo.adapter.text} did not start` : 'no WebGPU adapter';
  return `${demo.backend} (${why})`;
}

let model;
let classNames;
/** The model's input side and, for a folder-trained model, how an image is made square (metadata). */
let size = 32;
let fit = null;

async function start() {
  demo.backend = await startBackend();
  const [meta, samples] = await Promise.all([
    fetch('model/metadata.json').then((r) => r.json()),
    fetch('samples.json').then((r) => r.json()),
    tf.loadLayersModel('model/model.json').then((m) => (model = m)),
  ]);
  classNames = meta.classNames;
  size = meta.imageSize ?? 32;
  fit = meta.dataset?.kind === 'folder' ? meta.dataset.fit ?? 'cover' : null;
  $('view').width = $('view').height = size;
  $('view-caption').textContent = `what the model sees: ${size}×${size}`;
  if (meta.dataset?.kind === 'folder') $('samples-hint').textContent = `Or one of these test images of ${meta.dataset.name}:`;
  const metrics = Object.entries(meta.metrics ?? {}).map(([k, v]) => `${k} ${(100 * v).toFixed(1)}%`).join(', ');
  $('about').textContent = `${meta.backbones.join(' + ')} at ${meta.resolution} px + a small trained head` +
    `${metrics ? ` (${metrics})` : ''}, running in your browser with TensorFlow.js ${tf.version.tfjs}. Nothing leaves this page.`;
  for (const s of samples) {
    const b = document.createElement('button');
    b.type = 'button';
    b.title = s.index !== undefined ? `test image ${s.index}: ${s.label}` : s.label ? `test image: ${s.label}` : s.file;
    b.dataset.file = s.file;
    b.innerHTML = `<img src="${s.file}" alt="${b.title}">`;
    b.addEventListener('click', () => fetch(s.file).then((r) => r.blob()).then((blob) => classify(blob, b.title)).catch(fail));
    $('samples').append(b);
  }
  demo.status = 'ready';
  setStatus(`Ready. TensorFlow.js backend: ${backendText()}.`);
}

/** RGB bytes of an image file as the browser decodes it, without colour management (as pngjs/jpeg-js read it). */
async function decode(blob, name) {
  // The same pixel limit as `npm run predict`, from the header before the browser decodes (decompression bombs).
  // 256 KB reaches a JPEG's frame header behind the largest EXIF block (64 KB) with room to spare.
  const header = imageHeaderSize(new Uint8Array(await blob.slice(0, 256 * 1024).arrayBuffer()));
  const oversize = header && oversizeReason(name, header);
  if (oversize) throw Object.assign(new Error(oversize), { complete: true }); // names the file already
  const bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bmp, 0, 0);
  return rgbaToRgb(ctx.getImageData(0, 0, bmp.width, bmp.height));
}

async function classify(blob, caption) {
  demo.status = 'busy';
  const img = await decode(blob, caption ?? blob.name ?? 'your image');
  const pixels = resizeTo(fit ? fitSquare(img, fit) : img, size);
  // Asynchronous read only: on webgpu and webgl a synchronous one stalls the page, and on Chromium's SwiftShader WebGPU
  // adapter dataSync() was measured to return zeros where data() is right, and to break every later read.
  const out = tf.tidy(() => model.predict(tf.tensor4d(Float32Array.from(pixels), [1, size, size, 3])));
  const probs = await out.data();
  out.dispose();
  const top = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a]).slice(0, 3)
    .map((i) => ({ name: classNames[i] ?? String(i), probability: probs[i] }));
  show(blob, caption ?? `your image, ${img.width}×${img.height}`, pixels, top);
  demo.last = { caption, width: img.width, height: img.height, pixels: Array.from(pixels), probs: Array.from(probs), top };
  demo.predictions++;
  demo.status = 'ready';
  setStatus(`Ready. TensorFlow.js backend: ${backendText()}.`);
}

function show(blob, caption, pixels, top) {
  const old = $('original').src;
  $('original').src = URL.createObjectURL(blob);
  if (old.startsWith('blob:')) URL.revokeObjectURL(old);
  $('original-caption').textContent = caption;
  const view = new ImageData(size, size);
  for (let i = 0; i < size * size; i++) {
    view.data.set(pixels.subarray(i * 3, i * 3 + 3), i * 4);
    view.data[i * 4 + 3] = 255;
  }
  $('view').getContext('2d').putImageData(view, 0, 0);
  $('top').replaceChildren(...top.map((t) => {
    const li = document.createElement('li');
    li.dataset.class = t.name;
    li.dataset.probability = String(t.probability);
    li.innerHTML = `<span class="name"></span><span class="track"><span class="bar"></span></span><span class="pct"></span>`;
    li.querySelector('.name').textContent = t.name;
    li.querySelector('.bar').style.width = `${(100 * t.probability).toFixed(1)}%`;
    li.querySelector('.pct').textContent = `${(100 * t.probability).toFixed(1)}%`;
    return li;
  }));
  $('result').hidden = false;
}

function fail(err) {
  demo.status = 'ready';
  demo.error = String(err?.message ?? err);
  setStatus(`That did not work: ${demo.error}`, true);
}

function onFile(file) {
  if (!file) return;
  if (demo.status === 'loading') return fail(new Error('the model is still loading'));
  classify(file).catch((err) => fail(err.complete ? err : new Error(`${file.name} could not be read as an image (${err.message ?? err})`)));
}

$('file').addEventListener('change', (e) => {
  onFile(e.target.files[0]);
  e.target.value = ''; // so choosing the same file again is a change too
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  onFile(e.dataTransfer.files[0]);
});
// dropping beside the target must not navigate away from the page
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

start().catch((err) => {
  demo.status = 'error';
  demo.error = String(err?.message ?? err);
  setStatus(`Could not start: ${demo.error}`, true);
});
