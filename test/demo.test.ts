// `npm run demo` in real Chromium (Debian's /usr/bin/chromium through playwright-core; never a downloaded browser):
// a page built from a stand-in model, served locally with every request off its origin blocked, must show for
// clicked samples, a chosen file and a dropped file the same top-3 and probabilities as lib's predictFile in Node,
// and the same 32x32 view. Skips, saying why, when Chromium or playwright-core is missing.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import type { Server } from 'http';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { assembleModel, buildHead, headWeights, loadModel, saveModel, setHeadWeights } from '../lib/model/classifier';
import { predictFile, predictImage } from '../lib/model/predict';
import { buildDemo, serveDir, writePng } from '../scripts/demo';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function playwright(): any {
  try {
    return require('playwright-core');
  } catch {
    return null;
  }
}
const SKIP = !fs.existsSync(CHROMIUM)
  ? `SKIPPED, NOT RUN: ${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM=path)`
  : !playwright()
    ? 'SKIPPED, NOT RUN: playwright-core is not installed (it is a devDependency: npm install)'
    : null;

let root: string;
let modelDir: string;
let files: { file: string; kind: string }[] = [];
let server: Server | undefined;

/** Pictures with structure (gradients, stripes, blocks), not noise: different images get different predictions. */
function picture(w: number, h: number, seed: number): Uint8Array {
  const noise = fakeImages(Math.ceil((w * h) / 1024), seed);
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++)
      for (let c = 0; c < 3; c++) {
        const o = (y * w + x) * 3 + c;
        const base = c === 0 ? (255 * x) / w : c === 1 ? (255 * y) / h : ((x >> 2) + (y >> 2) + seed) % 2 ? 220 : 30;
        rgb[o] = Math.round(0.85 * ((base + seed * 53) % 256) + 0.15 * noise[o]);
      }
  return rgb;
}

before(async () => {
  await initBackend({ log: () => {} });
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'demo-test-'));
  const fake = await writeFakeBackbone(path.join(root, 'backbones'));
  const head = buildHead({ inputDim: 768, units: 16, dropout: 0.2, seed: 3 });
  const ws = headWeights(head);
  const r = (shape: number[], lo: number, hi: number, seed: number) => tf.randomUniform(shape, lo, hi, 'float32', seed);
  // spread-out logits, so the top-3 order is not decided by float noise
  setHeadWeights(head, [r([768], 0.5, 1.5, 1), r([768], -0.2, 0.2, 2), r([768], 0, 0.5, 3), r([768], 0.05, 1, 4), ws[4], ws[5], tf.mul(ws[6], 8), ws[7]]);
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 48, head, backbonesDir: fake });
  modelDir = path.join(root, 'model');
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 48, classNames: NAMES, head: { inputDim: 768, units: 16, dropout: 0.2 },
    metrics: { validation: 0.5 }, date: new Date().toISOString(), gitCommit: null,
  }, modelDir);
  tf.dispose([head, model] as any);
  const samples = [0, 1, 2].map((i) => ({ pixels: picture(32, 32, 10 + i), name: `sample-${i}.png`, label: NAMES[i], index: i }));
  buildDemo({ modelDir, outDir: path.join(root, 'demo'), samples });
  files = [
    ...samples.map((s) => ({ file: path.join(root, 'demo', 'samples', s.name), kind: 'sample' })),
    { file: path.join(root, 'big.png'), kind: 'choose' }, // area averaging, non-integer factors
    { file: path.join(root, 'small.png'), kind: 'drop' }, // bilinear enlarging
    { file: path.join(root, 'wide.png'), kind: 'drop' },
  ];
  writePng(files[3].file, picture(97, 61, 4), 97, 61);
  writePng(files[4].file, picture(20, 24, 5), 20, 24);
  writePng(files[5].file, picture(150, 40, 6), 150, 40);
  server = await serveDir(path.join(root, 'demo'), 0);
});

after(() => {
  server?.close();
  if (root) fs.rmSync(root, { recursive: true, force: true });
});

test('demo page in Chromium predicts what Node predicts, offline', { timeout: 180_000 }, async (t) => {
  if (SKIP) return t.skip(SKIP);
  const { model } = await loadModel(modelDir);
  const want = await Promise.all(files.map(async (f) => ({ ...f, ...(await predictFile(model, NAMES, f.file)) })));
  model.dispose();
  for (let i = 1; i < want.length; i++) assert.notDeepEqual(want[i].top, want[0].top, 'test images must not all predict alike');

  const origin = `http://127.0.0.1:${(server!.address() as net.AddressInfo).port}`;
  const ctx = await playwright().chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), {
    executablePath: CHROMIUM, args: ARGS, headless: true,
  });
  const offOrigin: string[] = [];
  try {
    await ctx.route('**', (route: any) => {
      const url = route.request().url();
      if (url.startsWith(`${origin}/`)) return route.continue();
      offOrigin.push(url);
      return route.abort();
    });
    // the page's pick (wasm), then the plain-JS fallback (webgl is left out: headless Chromium only has a
    // deprecated software GL)
    for (const query of ['', '?backend=cpu']) {
      const page = await ctx.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e: Error) => errors.push(e.message));
      await page.goto(`${origin}/${query}`);
      await page.waitForFunction(() => ['ready', 'error'].includes((globalThis as any).demo?.status), null, { timeout: 60_000 });
      const state = await page.evaluate(() => ({ status: (globalThis as any).demo.status, error: (globalThis as any).demo.error, backend: (globalThis as any).demo.backend }));
      assert.equal(state.status, 'ready', `page${query} did not start: ${state.error}`);
      assert.equal(await page.locator('#samples button').count(), 3);

      let worst = 0;
      for (const w of want) {
        const before = await page.evaluate(() => (globalThis as any).demo.predictions);
        if (w.kind === 'sample') {
          await page.locator(`#samples button[data-file="samples/${path.basename(w.file)}"]`).click();
        } else if (w.kind === 'choose') {
          await page.setInputFiles('#file', w.file);
        } else {
          const bytes = Array.from(fs.readFileSync(w.file));
          const dt = await page.evaluateHandle(({ bytes, name }: { bytes: number[]; name: string }) => {
            const d = new (globalThis as any).DataTransfer();
            d.items.add(new (globalThis as any).File([new Uint8Array(bytes)], name, { type: 'image/png' }));
            return d;
          }, { bytes, name: path.basename(w.file) });
          await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
        }
        await page.waitForFunction((n: number) => (globalThis as any).demo.predictions > n || (globalThis as any).demo.error, before, { timeout: 30_000 });
        assert.equal(await page.evaluate(() => (globalThis as any).demo.error), null, `${w.kind} ${path.basename(w.file)}: the page reports an error`);
        const got = await page.evaluate(() => ({
          last: (globalThis as any).demo.last,
          shown: [...(globalThis as any).document.querySelectorAll('#top li')].map((li: any) => ({ name: li.dataset.class, probability: Number(li.dataset.probability), text: li.textContent })),
        }));
        const label = `${state.backend}: ${w.kind} ${path.basename(w.file)}`;
        assert.deepEqual(got.last.pixels, Array.from(w.pixels), `${label}: the page's 32x32 view differs from lib/predict's`);
        assert.deepEqual(got.shown.map((x: any) => x.name), w.top.map((x) => x.name), `${label}: top-3 classes`);
        for (const [j, x] of got.shown.entries()) {
          worst = Math.max(worst, Math.abs(x.probability - w.top[j].probability));
          assert.ok(Math.abs(x.probability - w.top[j].probability) <= 1e-3, `${label}: ${x.name} ${x.probability} in the page, ${w.top[j].probability} in Node`);
          assert.ok(x.text.includes(`${(100 * x.probability).toFixed(1)}%`), `${label}: bar text "${x.text}"`);
        }
        assert.equal(await page.locator('#result').isVisible(), true);
      }
      t.diagnostic(`backend ${state.backend}: ${want.length} images (3 clicked, 1 chosen, 2 dropped), max |p_page - p_node| over the top 3 = ${worst.toExponential(2)}`);
      assert.deepEqual(errors, [], 'page errors');
      await page.close();
    }
    assert.deepEqual(offOrigin, [], 'requests outside the page origin');

    // file:// (no server): Chromium refuses module scripts and fetch() there; the page must say so, not hang.
    await ctx.unroute('**'); // the route sees file:// navigations too
    const local = await ctx.newPage();
    await local.goto(`file://${path.join(root, 'demo', 'index.html')}`);
    await local.waitForTimeout(500);
    assert.match(await local.locator('#status').textContent(), /file:\/\/.*Serve this folder over HTTP/);
    const fetched = await local.evaluate(() => fetch('model/model.json').then(() => 'loaded', (e: Error) => `refused (${e.message})`));
    t.diagnostic(`file:// fetch of model/model.json: ${fetched}`);
    assert.match(fetched, /^refused/, 'Chromium now fetches over file://: the README and the page message can be relaxed');
  } finally {
    await ctx.close();
  }
});

test('demo page of a folder-trained model: its classes, its input size and fit, the same probabilities as predict', { timeout: 180_000 }, async (t) => {
  if (SKIP) return t.skip(SKIP);
  // A 3-class model taking 48x48 images (a folder's images are stored at the resolution), 'cover' fit.
  const fake = path.join(root, 'backbones');
  const classNames = ['cat', 'ship', 'truck'];
  const head = buildHead({ inputDim: 768, units: 16, dropout: 0.2, seed: 5, numClasses: 3 });
  const ws = headWeights(head);
  const r = (shape: number[], lo: number, hi: number, seed: number) => tf.randomUniform(shape, lo, hi, 'float32', seed);
  setHeadWeights(head, [r([768], 0.5, 1.5, 1), r([768], -0.2, 0.2, 2), r([768], 0, 0.5, 3), r([768], 0.05, 1, 4), ws[4], ws[5], tf.mul(ws[6], 8), ws[7]]);
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 48, head, backbonesDir: fake, imageSize: 48 });
  const dir = path.join(root, 'folder-model');
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 48, classNames, imageSize: 48, dataset: { kind: 'folder', name: 'pets', fit: 'cover' },
    head: { inputDim: 768, units: 16, dropout: 0.2, numClasses: 3 }, metrics: { validation: 0.5 }, date: new Date().toISOString(), gitCommit: null,
  }, dir);
  tf.dispose([head, model] as any);
  const samples = [0, 1, 2].map((i) => ({ pixels: picture(48, 48, 20 + i), size: 48, name: `sample-${i}.png`, label: classNames[i] }));
  const out = path.join(root, 'demo-folder');
  buildDemo({ modelDir: dir, outDir: out, samples });
  const wide = path.join(root, 'wide-photo.png'); // cropped to its centre square, then reduced: page and libvips resample differently
  writePng(wide, picture(180, 120, 9), 180, 120);
  const { model: loaded, metadata } = await loadModel(dir);
  const want = await Promise.all([...samples.map((s) => path.join(out, 'samples', s.name)), wide].map((f) => predictImage(loaded, metadata, f)));
  loaded.dispose();
  const srv = await serveDir(out, 0);
  const ctx = await playwright().chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), { executablePath: CHROMIUM, args: ARGS, headless: true });
  try {
    const page = await ctx.newPage();
    await page.goto(`http://127.0.0.1:${(srv.address() as net.AddressInfo).port}/`);
    await page.waitForFunction(() => ['ready', 'error'].includes((globalThis as any).demo?.status), null, { timeout: 60_000 });
    assert.equal(await page.evaluate(() => (globalThis as any).demo.status), 'ready');
    assert.match(await page.locator('#samples-hint').textContent(), /test images of pets/);
    assert.match(await page.locator('#view-caption').textContent(), /48×48/);
    let worst = 0;
    for (const [i, w] of want.entries()) {
      const before = await page.evaluate(() => (globalThis as any).demo.predictions);
      if (i < samples.length) await page.locator(`#samples button[data-file="samples/${samples[i].name}"]`).click();
      else await page.setInputFiles('#file', wide);
      await page.waitForFunction((n: number) => (globalThis as any).demo.predictions > n || (globalThis as any).demo.error, before, { timeout: 30_000 });
      const last = await page.evaluate(() => (globalThis as any).demo.last);
      assert.equal(last.pixels.length, 48 * 48 * 3, 'the page feeds the model its 48x48 input');
      assert.deepEqual(last.top.map((x: any) => x.name), w.top.map((x) => x.name), `image ${i}: top-3 classes`);
      const d = Math.max(...last.top.map((x: any, j: number) => Math.abs(x.probability - w.top[j].probability)));
      if (i < samples.length) {
        // Samples are at the model's size: no resampling anywhere, so the page and predict see the same pixels.
        assert.deepEqual(last.pixels, Array.from(w.pixels), `sample ${i}: the same pixels as predict`);
        worst = Math.max(worst, d);
        assert.ok(d <= 1e-3, `sample ${i}: |p_page - p_predict| = ${d}`);
      } else {
        t.diagnostic(`a 180x120 photo: page (centre crop + area averaging) vs predict (libvips crop + lanczos): max |dp| over the top 3 = ${d.toExponential(2)}`);
        assert.ok(d <= 0.05, `the page's reduction of a photo strays too far from predict's (${d})`);
      }
    }
    t.diagnostic(`folder model, ${samples.length} samples: max |p_page - p_predict| = ${worst.toExponential(2)}`);
  } finally {
    await ctx.close();
    srv.close();
  }
});

test('the demo builder refuses to wipe a folder that is not a demo build', () => {
  const dir = fs.mkdtempSync(path.join(root, 'other-'));
  fs.writeFileSync(path.join(dir, 'precious.txt'), 'keep');
  assert.throws(() => buildDemo({ modelDir, outDir: dir, samples: [] }), /not empty.*refusing/);
  assert.ok(fs.existsSync(path.join(dir, 'precious.txt')));
});

test('the static server serves files with their types and nothing outside its folder', async () => {
  const origin = `http://127.0.0.1:${(server!.address() as net.AddressInfo).port}`;
  const wasm = await fetch(`${origin}/vendor/tfjs-backend-wasm-simd.wasm`);
  assert.equal(wasm.headers.get('content-type'), 'application/wasm');
  assert.equal((await fetch(`${origin}/`)).headers.get('content-type'), 'text/html; charset=utf-8');
  for (const p of ['/..%2f..%2fetc%2fpasswd', '/%2e%2e/%2e%2e/etc/passwd', '/nope.js']) assert.equal((await fetch(`${origin}${p}`)).status, 404, p);
});

// WebGPU in the page. Headless Chromium gives no WebGPU adapter by default (requestAdapter() resolves to null, even
// without --disable-gpu); --enable-unsafe-webgpu gives SwiftShader's (vendor google, architecture swiftshader,
// isFallbackAdapter: true), also beside --disable-gpu, which only turns off the GPU process's GL compositing.
// --use-webgpu-adapter=swiftshader pins that adapter, so a machine with a real GPU runs the same test. (navigator.gpu
// exists only in a secure context: http://127.0.0.1 is one, data: URLs are not.)
const WEBGPU_ARGS = [...ARGS, '--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

test('demo page on WebGPU (Chromium\'s SwiftShader adapter) predicts what Node predicts; forced to wasm too', { timeout: 150_000 }, async (t) => {
  if (SKIP) return t.skip(SKIP);
  // The three clicked samples and the 97x61 chosen file (area averaging).
  const picks = files.filter((f) => f.kind === 'sample' || path.basename(f.file) === 'big.png');
  assert.equal(picks.length, 4);
  const { model } = await loadModel(modelDir);
  const want = await Promise.all(picks.map(async (f) => ({ ...f, ...(await predictFile(model, NAMES, f.file, NAMES.length)) })));
  model.dispose();

  const origin = `http://127.0.0.1:${(server!.address() as net.AddressInfo).port}`;
  const ctx = await playwright().chromium.launchPersistentContext(fs.mkdtempSync(path.join(root, 'profile-')), {
    executablePath: CHROMIUM, args: WEBGPU_ARGS, headless: true,
  });
  // tfjs-backend-webgpu reads a GPU tensor synchronously (dataSync/arraySync) by drawing it into an OffscreenCanvas's
  // 'webgpu' context. Measured here: such a read returned zeros where data() was right, and later async reads then
  // failed ("A valid external Instance reference no longer exists"). Count those contexts from the page's first
  // script on (model loading included): there must be none.
  await ctx.addInitScript(() => {
    const g = globalThis as any;
    g.webgpuSyncReads = 0;
    const getContext = g.OffscreenCanvas.prototype.getContext;
    g.OffscreenCanvas.prototype.getContext = function (type: string, ...rest: unknown[]) {
      if (type === 'webgpu') g.webgpuSyncReads++;
      return getContext.call(this, type, ...rest);
    };
  });
  try {
    for (const query of ['', '?backend=wasm']) {
      const page = await ctx.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e: Error) => errors.push(e.message));
      const started = Date.now();
      await page.goto(`${origin}/${query}`);
      await page.waitForFunction(() => ['ready', 'error'].includes((globalThis as any).demo?.status), null, { timeout: 60_000 });
      const state = await page.evaluate(() => {
        const d = (globalThis as any).demo;
        return { status: d.status, error: d.error, backend: d.backend, adapter: d.adapter };
      });
      assert.equal(state.status, 'ready', `page${query} did not start: ${state.error}`);
      const status = await page.locator('#status').textContent();
      if (query === '') {
        if (!state.adapter) {
          const why = `Chromium gives no WebGPU adapter with ${WEBGPU_ARGS.slice(ARGS.length).join(' ')} (the page runs on ${state.backend})`;
          if (process.env.CI === 'true') assert.fail(`${why} (CI=true: Debian's chromium ships SwiftShader)`);
          await page.close();
          return t.skip(`SKIPPED, NOT RUN: ${why}`);
        }
        assert.equal(state.backend, 'webgpu', `the browser gives an adapter (${state.adapter.text}) but the page picked ${state.backend}`);
        assert.match(status!, /TensorFlow\.js backend: webgpu \(google swiftshader, software fallback adapter\)/);
      } else {
        assert.equal(state.backend, 'wasm');
        assert.equal(state.adapter, null, 'a forced backend does not ask for an adapter');
        assert.match(status!, /TensorFlow\.js backend: wasm \(forced by \?backend=wasm\)/);
      }
      const ready = Date.now() - started;

      let worstTop = 0;
      let worstAll = 0;
      const times: number[] = [];
      for (const w of want) {
        const before = await page.evaluate(() => (globalThis as any).demo.predictions);
        const t0 = Date.now();
        if (w.kind === 'sample') await page.locator(`#samples button[data-file="samples/${path.basename(w.file)}"]`).click();
        else await page.setInputFiles('#file', w.file);
        await page.waitForFunction((n: number) => (globalThis as any).demo.predictions > n || (globalThis as any).demo.error, before, { timeout: 60_000 });
        times.push(Date.now() - t0);
        const label = `${state.backend}: ${w.kind} ${path.basename(w.file)}`;
        assert.equal(await page.evaluate(() => (globalThis as any).demo.error), null, `${label}: the page reports an error`);
        const last = await page.evaluate(() => (globalThis as any).demo.last);
        assert.deepEqual(last.pixels, Array.from(w.pixels), `${label}: the page's 32x32 view differs from lib/predict's`);
        assert.deepEqual(last.top.map((x: any) => x.name), w.top.slice(0, 3).map((x) => x.name), `${label}: top-3 classes`);
        for (const [j, x] of last.top.entries()) {
          const d = Math.abs(x.probability - w.top[j].probability);
          worstTop = Math.max(worstTop, d);
          assert.ok(d <= 1e-3, `${label}: ${x.name} ${x.probability} in the page, ${w.top[j].probability} in Node`);
        }
        for (const x of w.top) worstAll = Math.max(worstAll, Math.abs(last.probs[NAMES.indexOf(x.name)] - x.probability));
      }
      assert.equal(await page.evaluate(() => (globalThis as any).webgpuSyncReads), 0, 'synchronous reads of GPU tensors (OffscreenCanvas webgpu contexts)');
      t.diagnostic(`page on ${state.backend}${state.adapter ? ` (${state.adapter.text})` : ''}: ready in ${ready} ms, ` +
        `predictions ${times.join('/')} ms; ${want.length} images (3 samples, 1 chosen 97x61) vs Node's predictFile on ${tf.getBackend()}: ` +
        `max |dp| top 3 ${worstTop.toExponential(2)}, all 10 classes ${worstAll.toExponential(2)}`);
      assert.deepEqual(errors, [], 'page errors');
      await page.close();
    }
  } finally {
    await ctx.close();
  }
});
