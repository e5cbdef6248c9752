// The webgpu backend (Dawn's node binding + tfjs-backend-webgpu, lib/engine/webgpu.ts) against the native tensorflow
// backend (tfjs cpu when the native build is absent): a conv2d, a depthwise conv, a matMul, a conv2d gradient and a
// tiny tf.layers model trained for 2 epochs must agree. Without a GPU this runs on SwiftShader (Debian's chromium
// package), a CPU rasteriser: slow, so the shapes are small (the whole file takes ~15 s here). Every read is async:
// in Node, dataSync() cannot read a tensor back from webgpu.
//
// The project's feature extraction (lib/features/features.ts extractFeatures) on webgpu, in a child process started
// with TFJS_BACKEND=webgpu, must give the reference backend's features for 8 CIFAR-10 test images, both real
// backbones at 96 px (~55 s on SwiftShader; skipped without CIFAR-10 or the weights, and when TFJS_BACKEND names
// another backend: CI runs it once, in its webgpu step).
//
// Also the ladder (lib/engine/backend.ts) with an injected adapter probe: a software-only adapter is skipped with the
// reason, a forced TFJS_BACKEND=webgpu uses it, a hardware adapter beats tensorflow on the CPU but not on a GPU.
//
// When webgpu cannot start here the agreement tests skip, saying why; under CI=true they fail instead (CI installs
// chromium, so SwiftShader is there: a skip would hide a broken setup).
import { test, describe, before } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { locateCifar10, readFirstTestImages } from '../lib/data/cifar10';
import { BackboneName, findBackboneDir } from '../lib/features/backbones';
import { extractFeatures } from '../lib/features/features';
import { AdapterDescription, describeAdapter, tryWebgpu, WEBGPU_SYNC_READ_ERROR } from '../lib/engine/webgpu';
import { webgpuGate } from './webgpu-gate';


function capture() {
  const lines: string[] = [];
  const warnings: string[] = [];
  return { lines, warnings, log: (l: string) => lines.push(l), warn: (l: string) => warnings.push(l) };
}

const SWIFTSHADER = describeAdapter({ vendor: 'google', architecture: 'swiftshader', device: 'swiftshader-device-subzero-', description: 'SwiftShader driver 5.0.0', isFallbackAdapter: true });
const HARDWARE = describeAdapter({ vendor: 'nvidia', architecture: 'ampere', device: '', description: 'NVIDIA GeForce RTX 3060', isFallbackAdapter: false });
const NOT_INSTALLED = () => {
  throw new Error('native TensorFlow not installed (run `npm run setup:native`)');
};
/** Stand-in for the native addon, as in backend.test.ts; `gpu` says what its binding.isUsingGpuDevice() answers. */
function standInTensorflow(gpu: boolean) {
  return () => {
    const { MathBackendCPU } = require('@tensorflow/tfjs-backend-cpu');
    tf.registerBackend('tensorflow', () => Object.assign(new MathBackendCPU(), { binding: { TF_Version: '2.21.0', isUsingGpuDevice: () => gpu } }), 0);
  };
}

// ---- can webgpu start here? (once; the ladder tests that really start it share the answer)
let webgpuWhy: string | null | undefined;
async function webgpuUnavailable(): Promise<string | null> {
  if (webgpuWhy === undefined) {
    const before = tf.getBackend();
    try {
      await tryWebgpu({ allowSoftware: true });
      webgpuWhy = null;
    } catch (err) {
      webgpuWhy = `webgpu could not start: ${(err as Error).message.split('\n')[0]}`;
    }
    if (before) await tf.setBackend(before);
  }
  return webgpuWhy;
}
/** Skip (saying why) when webgpu cannot start; in CI that is a failure. */
async function needWebgpu(t: { skip(msg: string): void }): Promise<boolean> {
  return webgpuGate(t, await webgpuUnavailable());
}

describe('the ladder and webgpu (injected adapter probe)', () => {
  test('a software-only adapter is never chosen automatically: skipped, saying why', async () => {
    const out = capture();
    let probed = 0;
    const choice = await initBackend({ reset: true, prefer: 'auto', ...out, loadNative: NOT_INSTALLED, probeWebgpu: async () => (probed++, SWIFTSHADER) });
    assert.equal(probed, 1);
    assert.equal(choice.name, 'wasm');
    assert.deepEqual(choice.skipped.map((s) => s.name), ['tensorflow', 'webgpu']);
    assert.equal(choice.skipped[1].reason, 'only a software adapter (google/swiftshader): slow, used only when TFJS_BACKEND=webgpu');
    assert.equal(out.lines.length, 1);
    assert.match(out.lines[0], /^tfjs backend: wasm \(SIMD, [^;]*\); the native TensorFlow backend is not installed \(run `npm run setup:native`\); webgpu skipped: only a software adapter \(google\/swiftshader\): slow, used only when TFJS_BACKEND=webgpu$/);
    assert.deepEqual(out.warnings, []);
  });

  test('tensorflow on the CPU beats a software adapter; a missing webgpu stack is a reason, not a crash', async () => {
    const out = capture();
    try {
      const choice = await initBackend({
        reset: true, prefer: 'auto', ...out, loadNative: standInTensorflow(false),
        probeWebgpu: async () => { throw new Error('the webgpu package is not installed (an optional dependency: npm install)'); },
      });
      assert.equal(choice.name, 'tensorflow');
      assert.equal(tf.getBackend(), 'tensorflow');
      assert.match(out.lines[0], /^tfjs backend: tensorflow \(libtensorflow 2\.21\.0, CPU, [^;]*\); webgpu skipped: the webgpu package is not installed \(an optional dependency: npm install\)$/);
    } finally {
      tf.removeBackend('tensorflow');
    }
  });

  test('tensorflow on a GPU is the top rung: webgpu is not even probed', async () => {
    const out = capture();
    let probed = 0;
    try {
      const choice = await initBackend({ reset: true, prefer: 'auto', ...out, loadNative: standInTensorflow(true), probeWebgpu: async () => (probed++, HARDWARE) });
      assert.equal(choice.name, 'tensorflow');
      assert.equal(probed, 0);
      assert.deepEqual(choice.skipped, []);
      assert.match(out.lines[0], /^tfjs backend: tensorflow \(libtensorflow 2\.21\.0, GPU\)$/);
    } finally {
      tf.removeBackend('tensorflow');
    }
  });

  test('TFJS_BACKEND=webgpu forces webgpu, software adapter allowed, with a warning', async (t) => {
    if (!(await needWebgpu(t))) return;
    const out = capture();
    // The injected probe says "software" (true here anyway: SwiftShader); tfjs then starts on the real adapter.
    const choice = await initBackend({ reset: true, prefer: 'webgpu', ...out, probeWebgpu: async () => SWIFTSHADER });
    assert.equal(choice.name, 'webgpu');
    assert.equal(tf.getBackend(), 'webgpu');
    assert.equal(out.lines[0], 'tfjs backend: webgpu (google swiftshader, software fallback adapter) [forced by TFJS_BACKEND]');
    assert.match(out.warnings[0], /software adapter.*every tensor read must be async/);
    // A GPU-resident tensor cannot be read synchronously in Node: the error says what to do. (Past 1000 elements:
    // smaller ops on CPU-resident inputs run on the CPU, WEBGPU_CPU_HANDOFF_SIZE_THRESHOLD, and read fine.)
    const y = tf.add(tf.ones([40, 40]), tf.ones([40, 40]));
    assert.throws(() => y.dataSync(), (err: Error) => err.message === WEBGPU_SYNC_READ_ERROR);
    assert.deepEqual(Array.from(await y.data()), new Array(1600).fill(2));
    y.dispose();
  });

  test('a hardware adapter beats tensorflow on the CPU, and the line says why', async (t) => {
    if (!(await needWebgpu(t))) return;
    const out = capture();
    try {
      const choice = await initBackend({ reset: true, prefer: 'auto', ...out, loadNative: standInTensorflow(false), probeWebgpu: async () => HARDWARE });
      assert.equal(choice.name, 'webgpu');
      assert.equal(out.lines[0], 'tfjs backend: webgpu (nvidia ampere, hardware adapter: NVIDIA GeForce RTX 3060); the native TensorFlow backend runs on the CPU here: a hardware WebGPU adapter is faster');
      assert.deepEqual(out.warnings, []);
    } finally {
      await tf.setBackend('cpu');
      tf.removeBackend('tensorflow');
    }
  });

  test('describeAdapter: fallback flag or a known CPU rasteriser means software', () => {
    assert.equal(SWIFTSHADER.software, true);
    assert.equal(HARDWARE.software, false);
    assert.equal(describeAdapter({ vendor: 'mesa', architecture: '', description: 'llvmpipe (LLVM 15.0.6, 256 bits)' }).software, true);
    assert.equal(SWIFTSHADER.text, 'webgpu (google swiftshader, software fallback adapter)');
  });
});

// ---- agreement with the reference backend

/** Deterministic inputs in [-1, 1) (an LCG), identical on every backend. */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32) * 2 - 1;
  }
  return out;
}
const T = (shape: number[], seed: number) => tf.tensor(values(shape.reduce((a, b) => a * b, 1), seed), shape);
const T4 = (shape: number[], seed: number) => T(shape, seed) as tf.Tensor4D;

let reference = '';

/** Run `f` on the reference backend and on webgpu; return both results, read asynchronously. */
async function onBoth(f: () => tf.Tensor[] | Promise<number[][]>): Promise<{ ref: Float32Array[]; gpu: Float32Array[] }> {
  const run = async (backend: string): Promise<Float32Array[]> => {
    assert.ok(await tf.setBackend(backend), `${backend} did not start`);
    const r = await f();
    if (r.length && r[0] instanceof tf.Tensor) {
      const ts = r as tf.Tensor[];
      const out = await Promise.all(ts.map(async (x) => Float32Array.from(await x.data())));
      tf.dispose(ts);
      return out;
    }
    return (r as number[][]).map((a) => Float32Array.from(a));
  };
  const ref = await run(reference);
  const gpu = await run('webgpu');
  return { ref, gpu };
}

// Tolerance: float32 (eps 1.2e-7) dot products summed in a different order (tensorflow/oneDNN blocks and vectorises,
// the WGSL shaders tile per workgroup) differ by a few ulps of the largest partial sums. Measured here, max|diff| /
// max|ref| per tensor: conv2d 1.8e-7, depthwise 1.4e-7, matMul 2.2e-7 (3.9e-7 vs tfjs cpu), conv2d gradients 3.1e-7
// and 5.3e-7 (sums over batch x 12 x 12 positions). 1e-5 leaves ~20x headroom and still catches any wrong index,
// padding or stride, which moves values by O(max|ref|).
const REL_TOL = 1e-5;

function agree(t: { diagnostic(msg: string): void }, name: string, ref: Float32Array[], gpu: Float32Array[], relTol = REL_TOL): void {
  assert.equal(gpu.length, ref.length);
  ref.forEach((r, i) => {
    const g = gpu[i];
    assert.equal(g.length, r.length, `${name}[${i}] size`);
    let scale = 0;
    let worst = 0;
    for (let j = 0; j < r.length; j++) {
      scale = Math.max(scale, Math.abs(r[j]));
      worst = Math.max(worst, Math.abs(r[j] - g[j]));
    }
    assert.ok(scale > 0.1, `${name}[${i}] reference is degenerate`);
    t.diagnostic(`${name}[${i}] vs ${reference}: max|diff| ${worst.toExponential(2)}, max|ref| ${scale.toFixed(3)}, ratio ${(worst / scale).toExponential(2)}`);
    assert.ok(worst <= relTol * scale, `${name}[${i}]: max |webgpu - ${reference}| = ${worst.toExponential(2)} > ${relTol} x ${scale.toFixed(3)}`);
  });
}

describe(`webgpu agrees with the reference backend (tensorflow, or tfjs cpu without it)`, () => {
  let skipWhy: string | null = null;
  before(async () => {
    skipWhy = await webgpuUnavailable();
    try {
      reference = (await initBackend({ reset: true, prefer: 'tensorflow', log: () => {} })).name;
    } catch {
      reference = 'cpu';
    }
  });
  const gate = (t: { skip(msg: string): void }): boolean => webgpuGate(t, skipWhy);

  test('conv2d (same, stride 1; valid, stride 2)', async (t) => {
    if (!gate(t)) return;
    const { ref, gpu } = await onBoth(() => [
      tf.conv2d(T4([2, 16, 16, 8], 1), T4([3, 3, 8, 16], 2), 1, 'same'),
      tf.conv2d(T4([2, 16, 16, 8], 1), T4([3, 3, 8, 16], 2), 2, 'valid'),
    ]);
    agree(t, 'conv2d', ref, gpu);
  });

  test('depthwise conv2d (multiplier 2, same; stride 2)', async (t) => {
    if (!gate(t)) return;
    const { ref, gpu } = await onBoth(() => [
      tf.depthwiseConv2d(T4([2, 16, 16, 8], 3), T4([3, 3, 8, 2], 4), 1, 'same'),
      tf.depthwiseConv2d(T4([2, 16, 16, 8], 3), T4([3, 3, 8, 1], 5), 2, 'same'),
    ]);
    agree(t, 'depthwiseConv2d', ref, gpu);
  });

  test('matMul (64x256 by 256x32)', async (t) => {
    if (!gate(t)) return;
    const { ref, gpu } = await onBoth(() => [tf.matMul(T([64, 256], 6) as tf.Tensor2D, T([256, 32], 7) as tf.Tensor2D)]);
    agree(t, 'matMul', ref, gpu);
  });

  test('conv2d gradient (tf.grads: d/dx and d/dw of sum(conv2d^2))', async (t) => {
    if (!gate(t)) return;
    const f = (x: tf.Tensor, w: tf.Tensor) => tf.sum(tf.square(tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, 1, 'same')));
    const { ref, gpu } = await onBoth(() => tf.grads(f)([T([2, 12, 12, 4], 8), T([3, 3, 4, 8], 9)]));
    agree(t, 'conv2d gradient', ref, gpu);
  });

  test('a tiny tf.layers model: 2 epochs of fit give the same losses and weights', async (t) => {
    if (!gate(t)) return;
    const train = async (): Promise<number[][]> => {
      const model = tf.sequential({
        layers: [
          tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
          tf.layers.flatten(),
          tf.layers.dense({ units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
        ],
      });
      model.compile({ optimizer: tf.train.sgd(0.1), loss: 'categoricalCrossentropy' });
      const x = T([32, 8, 8, 3], 10);
      const y = tf.oneHot(tf.tensor1d(Array.from({ length: 32 }, (_, i) => i % 3), 'int32'), 3);
      const h = await model.fit(x, y, { epochs: 2, batchSize: 8, shuffle: false, verbose: 0 });
      const weights = await Promise.all(model.getWeights().map(async (w) => Array.from(await w.data())));
      tf.dispose([x, y]);
      model.dispose();
      return [h.history.loss as number[], ...weights];
    };
    const { ref, gpu } = await onBoth(train);
    // Losses: measured equal to 4e-8 (1.1806, then 0.9791); 1e-5 absolute, far below the 0.2 the second epoch gains.
    assert.equal(ref[0].length, 2);
    assert.ok(ref[0][1] < ref[0][0], 'the reference model learns');
    t.diagnostic(`losses vs ${reference}: ${Array.from(ref[0]).join(', ')}; webgpu ${Array.from(gpu[0]).join(', ')}`);
    for (let e = 0; e < 2; e++) assert.ok(Math.abs(gpu[0][e] - ref[0][e]) <= 1e-5, `epoch ${e + 1} loss: webgpu ${gpu[0][e]} vs ${reference} ${ref[0][e]}`);
    // Weights after 8 SGD steps: measured max|diff| 1.9e-9 (max|w| ~0.5); the kernel tolerance covers them.
    // One vector: the biases alone are near zero, their scale is the kernels'.
    const flat = (ws: Float32Array[]) => [Float32Array.from(ws.slice(1).flatMap((w) => Array.from(w)))];
    agree(t, 'trained weights', flat(ref), flat(gpu));
  });
});

// ---- the project's feature extraction on webgpu

const ROOT = path.resolve(__dirname, '..');
const FEATURE_IMAGES = 8;
const FEATURE_RESOLUTION = 96;
const FEATURE_BACKBONES: BackboneName[] = ['mobilenet_v1_0.75', 'mobilenet_v2'];
// Tolerance: max|webgpu - reference| <= 5e-5 x max|reference| per backbone (max|reference| is 6: the features are
// average-pooled relu6 outputs). Measured here, 8 images at 96 px, batches of 4: webgpu vs tensorflow 7.8e-6
// (mobilenet_v1_0.75, 4.7e-5 absolute) and 4.5e-6 (mobilenet_v2, 2.7e-5), about 60x the single-op ratios above,
// because float32 rounding grows through 28 / 52 conv layers (BN folded, sums of up to 1280 terms). The two engines
// the project already accepts differ by more: wasm (eager, as webgpu is) vs tensorflow (a frozen TF graph)
// 1.4e-5 and 1.1e-5. 5e-5 is ~6x the webgpu figure; a wrong padding, stride, layout or BN fold moves features by
// O(0.1-1), i.e. 1e-2 of max|reference| or more.
const FEATURE_REL_TOL = 5e-5;

/** extractFeatures in a fresh process with TFJS_BACKEND=webgpu (the backend is per process): its rows, its backend. */
function webgpuFeatures(pixelsFile: string, outFile: string): Promise<{ stdout: string; stderr: string }> {
  const lib = (f: string) => JSON.stringify(path.join(ROOT, 'lib', f));
  const child = `
    const fs = require('fs');
    const tf = require('@tensorflow/tfjs');
    const { extractFeatures } = require(${lib('features/features')});
    (async () => {
      const [pixelsFile, outFile, n, resolution, ...backbones] = process.argv.slice(1);
      const images = new Uint8Array(fs.readFileSync(pixelsFile));
      const out = { backend: null, features: {}, ms: {} };
      for (const backbone of backbones) {
        const t0 = Date.now();
        const f = await extractFeatures({ images, n: Number(n) }, { backbone, resolution: Number(resolution), cache: false, workers: 0, batchSize: 4, progress: false });
        out.ms[backbone] = Date.now() - t0;
        out.features[backbone] = Array.from(f.data);
        out.backend = tf.getBackend();
      }
      fs.writeFileSync(outFile, JSON.stringify(out));
    })().catch((err) => { console.error(err && err.stack || String(err)); process.exit(1); });`;
  const args = ['--require', 'ts-node/register/transpile-only', '-e', child, pixelsFile, outFile, String(FEATURE_IMAGES), String(FEATURE_RESOLUTION), ...FEATURE_BACKBONES];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { cwd: ROOT, env: { ...process.env, TFJS_BACKEND: 'webgpu' }, timeout: 240_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`the webgpu child failed (${err.message.split('\n')[0]}):\n${stderr}\n${stdout}`));
      else resolve({ stdout, stderr });
    });
  });
}

describe('feature extraction (lib/features) on webgpu agrees with the reference backend', () => {
  test(`${FEATURE_IMAGES} CIFAR-10 test images at ${FEATURE_RESOLUTION} px, ${FEATURE_BACKBONES.join(' and ')}`, { timeout: 300_000 }, async (t) => {
    // The slowest test of the suite on SwiftShader, and the same whatever TFJS_BACKEND says (the reference is always
    // tensorflow): .ci/run runs it once, in its TFJS_BACKEND=webgpu step, not in each backend's pass.
    const forced = process.env.TFJS_BACKEND;
    if (forced && forced !== 'webgpu' && forced !== 'auto') return t.skip(`SKIPPED, NOT RUN: TFJS_BACKEND=${forced} (runs when TFJS_BACKEND is webgpu or unset: ~55 s on SwiftShader)`);
    const cifar = locateCifar10();
    const missing = FEATURE_BACKBONES.filter((b) => !findBackboneDir(b));
    if (!cifar || missing.length) {
      return t.skip(`SKIPPED, NOT RUN: ${!cifar ? 'CIFAR-10 not found (set CIFAR10_DIR)' : `no weights for ${missing.join(', ')} (set BACKBONES_DIR)`}`);
    }
    if (!(await needWebgpu(t))) return;
    const { images, n } = readFirstTestImages(cifar, FEATURE_IMAGES);
    assert.equal(n, FEATURE_IMAGES);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webgpu-features-'));
    try {
      const pixelsFile = path.join(dir, 'pixels.bin');
      const outFile = path.join(dir, 'features.json');
      fs.writeFileSync(pixelsFile, images);
      const started = Date.now();
      const child = webgpuFeatures(pixelsFile, outFile);
      child.catch(() => {}); // awaited below; the reference runs meanwhile

      let refName: string;
      try {
        refName = (await initBackend({ reset: true, prefer: 'tensorflow', log: () => {} })).name;
      } catch {
        refName = (await initBackend({ reset: true, prefer: 'cpu', log: () => {}, warn: () => {} })).name;
      }
      const ref: Record<string, Float32Array> = {};
      for (const backbone of FEATURE_BACKBONES) {
        ref[backbone] = (await extractFeatures({ images, n }, { backbone, resolution: FEATURE_RESOLUTION, cache: false, workers: 0, batchSize: 4, progress: false })).data;
      }
      await child;
      const got = JSON.parse(fs.readFileSync(outFile, 'utf8')) as { backend: string; features: Record<string, number[]>; ms: Record<string, number> };
      assert.equal(got.backend, 'webgpu', 'the child ran on webgpu');
      t.diagnostic(`webgpu child: ${FEATURE_BACKBONES.map((b) => `${b} ${got.ms[b]} ms`).join(', ')}; ${Date.now() - started} ms in all`);
      for (const backbone of FEATURE_BACKBONES) {
        const r = ref[backbone];
        const g = Float32Array.from(got.features[backbone]);
        assert.equal(g.length, r.length, `${backbone}: feature count`);
        const dim = r.length / n;
        let scale = 0;
        let worst = 0;
        for (let j = 0; j < r.length; j++) {
          scale = Math.max(scale, Math.abs(r[j]));
          worst = Math.max(worst, Math.abs(r[j] - g[j]));
        }
        // Different images must differ by far more than the tolerance, or agreement would prove nothing.
        let apart = Infinity;
        for (let i = 1; i < n; i++) {
          let d = 0;
          for (let j = 0; j < dim; j++) d = Math.max(d, Math.abs(r[i * dim + j] - r[j]));
          apart = Math.min(apart, d);
        }
        t.diagnostic(`${backbone} features, webgpu vs ${refName}: max|diff| ${worst.toExponential(2)}, max|ref| ${scale.toFixed(3)}, ratio ${(worst / scale).toExponential(2)} (tolerance ${FEATURE_REL_TOL}); images differ from image 0 by >= ${apart.toFixed(3)}`);
        assert.ok(scale > 0.1, `${backbone}: reference features are degenerate`);
        assert.ok(apart > 100 * FEATURE_REL_TOL * scale, `${backbone}: two images give nearly the same features`);
        assert.ok(worst <= FEATURE_REL_TOL * scale, `${backbone}: max |webgpu - ${refName}| = ${worst.toExponential(2)} > ${FEATURE_REL_TOL} x ${scale.toFixed(3)}`);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
