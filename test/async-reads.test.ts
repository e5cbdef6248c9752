// Issue 23: everything runs on webgpu, whose Node binding cannot read a GPU tensor synchronously (dataSync/arraySync/
// bufferSync throw there, see lib/engine/webgpu.ts). Two guards:
//
// 1. A source scan: no `.dataSync(`, `.arraySync(` or `.bufferSync(` call in lib/, scripts/ or the notebooks' code cells,
//    except the entries of ALLOWED below, each naming the one read it allows and why it can never run on webgpu. An
//    entry whose read is gone fails too, so the list stays exact.
// 2. On webgpu itself (SwiftShader without a GPU): head training (trainHead: its steps' loss reads, validation each
//    epoch), evaluation (predictFeatures, headProbabilities) and Grad-CAM run and agree with the reference backend. A synchronous
//    read that sneaks back into those paths throws there (checked below: a sync read of a GPU tensor does throw).
//    Skipped, saying why, when webgpu cannot start here; under CI=true that is a failure.
import { test, describe, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { tryWebgpu, WEBGPU_SYNC_READ_ERROR } from '../lib/engine/webgpu';
import { trainHead } from '../lib/train/training-loop';
import { predictFeatures } from '../lib/evaluate/evaluate';
import { headProbabilities } from '../lib/experiment/pipeline';
import { gradCam, headLogits } from '../lib/evaluate/gradcam';
import { buildHead } from '../lib/model/classifier';
import { initRuntimeContext } from '../lib/settings/context';
import { blobs, maxAbsDiff } from './blobs';
import { webgpuGate } from './webgpu-gate';

const ROOT = path.join(__dirname, '..');
const SYNC_READ = /\.(dataSync|arraySync|bufferSync)\s*\(/g;

/** Synchronous reads that stay, by file (relative to the project) and the text of their line, with the reason. */
const ALLOWED: { file: string; line: string; why: string }[] = [
  {
    file: 'scripts/native/probe.js',
    line: 'const product = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1, 0], [0, 1]])).dataSync();',
    why: 'the native install check: it loads tfjs-node itself, so it always runs on the tensorflow backend, never on webgpu',
  },
];

function sources(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true })) {
      const rel = path.join(dir, e.name);
      if (e.isDirectory()) {
        if (e.name !== 'node_modules' && e.name !== 'vendor') walk(rel);
      } else if (/\.(ts|js)$/.test(e.name)) out.push(rel);
    }
  };
  walk('lib');
  walk('scripts');
  return out;
}

/** Lines (1-based) with a synchronous read call, comments included: a commented-out read is one edit from coming back. */
function syncReads(text: string): { n: number; line: string }[] {
  return text.split('\n').flatMap((line, i) => (line.match(SYNC_READ) ? [{ n: i + 1, line: line.trim() }] : []));
}

describe('no synchronous tensor reads (source scan)', () => {
  test('lib/ and scripts/: only the allowed reads, each with its reason', () => {
    const found: string[] = [];
    const used = new Set<number>();
    const files = sources();
    assert.ok(files.includes(path.join('lib', 'engine', 'batches.ts')) && files.length > 50, `the scan sees the sources (${files.length} files)`);
    for (const f of files) {
      for (const r of syncReads(fs.readFileSync(path.join(ROOT, f), 'utf8'))) {
        const k = ALLOWED.findIndex((a) => a.file === f.split(path.sep).join('/') && a.line === r.line);
        if (k >= 0) used.add(k);
        else found.push(`${f}:${r.n}: ${r.line}`);
      }
    }
    assert.deepEqual(found, [], 'synchronous reads throw on webgpu in Node: use await data() / array() / buffer()');
    const stale = ALLOWED.filter((_, k) => !used.has(k)).map((a) => `${a.file}: ${a.line}`);
    assert.deepEqual(stale, [], 'allow-list entries whose read is gone: remove them');
  });

  test('the notebooks\' code cells', () => {
    const dir = path.join(ROOT, 'notebooks');
    const found: string[] = [];
    const books = fs.readdirSync(dir).filter((f) => f.endsWith('.ipynb'));
    assert.ok(books.length > 0);
    for (const f of books) {
      const nb = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as { cells: { cell_type: string; source: string[] | string }[] };
      nb.cells.forEach((c, i) => {
        if (c.cell_type !== 'code') return;
        const src = Array.isArray(c.source) ? c.source.join('') : c.source;
        for (const r of syncReads(src)) found.push(`${f} cell ${i + 1} line ${r.n}: ${r.line}`);
      });
    }
    assert.deepEqual(found, []);
  });

  test('the scan finds what it looks for', () => {
    assert.deepEqual(syncReads('a\nconst v = t.dataSync()[0];\nx.arraySync ()\n// y.bufferSync()\nawait t.data()').map((r) => r.n), [2, 3, 4]);
  });
});

// ---- on webgpu

describe('head training and evaluation on webgpu (every read async) agree with the reference backend', () => {
  let why: string | null = null;
  let reference = 'cpu';
  before(async () => {
    initRuntimeContext({ ...process.env, DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'async-reads-test-')) });
    try {
      reference = (await initBackend({ reset: true, prefer: 'tensorflow', log: () => {} })).name;
    } catch {
      await tf.setBackend('cpu');
    }
    try {
      await tryWebgpu({ allowSoftware: true });
    } catch (err) {
      why = `webgpu could not start: ${(err as Error).message.split('\n')[0]}`;
    }
    await tf.setBackend(reference);
  });
  const gate = (t: { skip(msg: string): void }): boolean => webgpuGate(t, why);
  /** `run` on the reference backend, then on webgpu; the reference backend is current again afterwards. */
  async function onBoth<T>(run: (backend: string) => Promise<T>): Promise<{ ref: T; gpu: T }> {
    try {
      return { ref: await run(reference), gpu: await run('webgpu') };
    } finally {
      await tf.setBackend(reference);
    }
  }

  test('a synchronous read of a GPU tensor throws on webgpu (what makes the next test a guard)', async (t) => {
    if (!gate(t)) return;
    await tf.setBackend('webgpu');
    try {
      const a = tf.tensor2d(blobs(64, 32, 5).views[0], [64, 32]);
      const p = tf.matMul(a, a, false, true); // 4,096 elements: computed on the GPU
      assert.throws(() => p.dataSync(), (err: Error) => err.message === WEBGPU_SYNC_READ_ERROR);
      tf.dispose([a, p]);
    } finally {
      await tf.setBackend(reference);
    }
  });

  test('trainHead (2 epochs, validation each epoch), predictFeatures and headProbabilities (TTA)', { timeout: 300_000 }, async (t) => {
    if (!gate(t)) return;
    // 256 features: every batch ([32, 256]) and every matMul is well above webgpu's 1,000-element CPU forwarding.
    const train = blobs(192, 256, 1, 2.5);
    const val = { ...blobs(96, 256, 2, 2.5) };
    const valTwoViews = { ...val, views: [val.views[0], val.views[0].map((v) => -v)] };
    const run = async (backend: string) => {
      assert.ok(await tf.setBackend(backend), `${backend} did not start`);
      const res = await trainHead(train, val, { units: 32, epochs: 2, batchSize: 32, lr: 0.01, dropout: 0.2, seed: 7 }, { progress: false });
      try {
        const probs = await predictFeatures(res.head, val.views[0], val.n, val.dim);
        const split = await headProbabilities(res.head, valTwoViews);
        return { history: res.history, probs, tta: split.tta! };
      } finally {
        res.head.dispose();
      }
    };
    const { ref, gpu } = await onBoth(run);
    assert.equal(gpu.history.length, 2);
    for (const [i, h] of gpu.history.entries()) {
      const r = ref.history[i];
      t.diagnostic(`epoch ${i + 1}: loss ${h.loss.toFixed(6)} (${reference} ${r.loss.toFixed(6)}), val acc ${h.valAcc} (${r.valAcc}), val loss ${h.valLoss.toFixed(6)} (${r.valLoss.toFixed(6)})`);
      assert.ok(Math.abs(h.loss - r.loss) <= 1e-4 * Math.max(1, Math.abs(r.loss)), `epoch ${i + 1} training loss: webgpu ${h.loss}, ${reference} ${r.loss}`);
      assert.ok(Math.abs(h.valLoss - r.valLoss) <= 1e-4 * Math.max(1, Math.abs(r.valLoss)), `epoch ${i + 1} validation loss`);
      assert.equal(h.valAcc, r.valAcc, `epoch ${i + 1} validation accuracy`);
    }
    const dp = maxAbsDiff(gpu.probs, ref.probs);
    const dt = maxAbsDiff(gpu.tta, ref.tta);
    t.diagnostic(`probabilities: max |dp| ${dp.toExponential(2)} plain, ${dt.toExponential(2)} TTA (webgpu vs ${reference})`);
    assert.ok(dp < 1e-4 && dt < 1e-4, `probabilities differ: ${dp}, ${dt}`);
  });

  test('Grad-CAM (a small conv backbone and a head)', { timeout: 120_000 }, async (t) => {
    if (!gate(t)) return;
    const pixels = blobs(4, 16 * 16 * 3, 3, 1).views[0];
    const run = async (backend: string) => {
      assert.ok(await tf.setBackend(backend), `${backend} did not start`);
      const input = tf.input({ shape: [16, 16, 3] });
      const conv = tf.layers.conv2d({ filters: 32, kernelSize: 3, strides: 2, padding: 'same', activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 11 }) });
      const model = tf.model({ inputs: input, outputs: conv.apply(input) as tf.SymbolicTensor }); // maps [4, 8, 8, 32]: on the GPU
      const head = buildHead({ inputDim: 32, units: 16, dropout: 0.1, seed: 5 });
      const x = tf.tensor4d(pixels, [4, 16, 16, 3]);
      try {
        return await gradCam({ backbones: [{ name: 'conv', model }], logits: headLogits(head), input: x });
      } finally {
        tf.dispose([x]);
        model.dispose();
        head.dispose();
      }
    };
    const { ref, gpu } = await onBoth(run);
    assert.deepEqual(gpu.classes, ref.classes, 'the explained classes (arg-max logits)');
    const ds = maxAbsDiff(gpu.scores, ref.scores);
    const dm = maxAbsDiff(gpu.maps[0].data, ref.maps[0].data);
    t.diagnostic(`Grad-CAM webgpu vs ${reference}: scores max |d| ${ds.toExponential(2)}, maps (normalised to 1) max |d| ${dm.toExponential(2)}`);
    assert.ok(ref.maps[0].data.some((v) => v > 0.5), 'the reference maps are not empty');
    assert.ok(ds < 1e-4 && dm < 1e-4, `Grad-CAM differs: scores ${ds}, maps ${dm}`);
  });
});
