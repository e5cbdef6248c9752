// The hand-written trainer: its gradients equal tfjs autodiff of the same head, early stopping restores the best
// epoch's weights, a NaN loss stops with a message and keeps the best weights, runs are logged.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/backend';
import { BN_EPSILON } from '../lib/model';
import { DEFAULT_TRAIN, HeadTrainer, LabeledFeatures, lrFind, scheduledLr, sweep, trainHead } from '../lib/train';
import { listRuns, readRun } from '../lib/runs';
import { rng } from '../lib/random';

const ready = initBackend({ log: () => {} });
process.env.DATA_DIR = fs.mkdtempSync(path.join(os.tmpdir(), 'train-test-'));

/** Gaussian blobs per class: learnable, with a noise level that makes validation accuracy wobble. */
function blobs(n: number, dim: number, seed: number, noise = 1.5): LabeledFeatures {
  const r = rng(seed);
  const c = rng(99);
  const centers = Float32Array.from({ length: 10 * dim }, () => c() * 2 - 1);
  const data = new Float32Array(n * dim);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    labels[i] = i % 10;
    for (let d = 0; d < dim; d++) data[i * dim + d] = centers[labels[i] * dim + d] + (r() + r() + r() - 1.5) * noise;
  }
  return { views: [data], labels, n, dim };
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

test('hand-written gradients equal tfjs autodiff of the same head', async () => {
  await ready;
  const B = 8, D = 12, U = 6;
  const cfg = { ...DEFAULT_TRAIN, units: U, dropout: 0.3, labelSmoothing: 0.1, bnAffine: true };
  const trainer = new HeadTrainer(D, cfg);
  // Non-trivial gamma/beta so their gradients matter.
  trainer.vars[0].assign(tf.randomUniform([D], 0.5, 1.5, 'float32', 3));
  trainer.vars[1].assign(tf.randomUniform([D], -0.5, 0.5, 'float32', 4));
  const r = rng(5);
  const xs = Float32Array.from({ length: B * D }, () => r() * 3);
  const m1 = Float32Array.from({ length: B * D }, () => (r() < 0.3 ? 0 : 1 / 0.7));
  const m2 = Float32Array.from({ length: B * U }, () => (r() < 0.3 ? 0 : 1 / 0.7));
  const ys = new Float32Array(B * 10).fill(0.01);
  for (let i = 0; i < B; i++) ys[i * 10 + (i % 10)] += 0.9;
  const before = trainer.weights();
  trainer.keepGrads = true;
  // Batch statistics as the trainer computes them (population variance).
  const mean = new Float32Array(D);
  const inv = new Float32Array(D);
  for (let c = 0; c < D; c++) {
    let s = 0, q = 0;
    for (let i = 0; i < B; i++) {
      s += xs[i * D + c];
      q += xs[i * D + c] ** 2;
    }
    mean[c] = s / B;
    inv[c] = 1 / Math.sqrt(q / B - mean[c] ** 2 + BN_EPSILON);
  }
  trainer.trainStep({ x: xs, m1, m2, y: ys, mean, inv }, B, 0);
  const ref = tf.tidy(() => {
    const [gamma, beta, , , w1, b1, w2, b2] = before.map((t) => tf.variable(t.clone()));
    const x = tf.tensor2d(xs, [B, D]);
    const f = () => {
      const { mean, variance } = tf.moments(x, 0);
      const a = tf.mul(tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, BN_EPSILON))), gamma), beta), tf.tensor2d(m1, [B, D]));
      const h = tf.mul(tf.relu(tf.add(tf.matMul(a as tf.Tensor2D, w1 as tf.Tensor as tf.Tensor2D), b1)), tf.tensor2d(m2, [B, U]));
      const logits = tf.add(tf.matMul(h as tf.Tensor2D, w2 as tf.Tensor as tf.Tensor2D), b2);
      return tf.neg(tf.mean(tf.sum(tf.mul(tf.tensor2d(ys, [B, 10]), tf.logSoftmax(logits)), 1))) as tf.Scalar;
    };
    const { grads } = tf.variableGrads(f, [gamma, beta, w1, b1, w2, b2]);
    return [gamma, beta, w1, b1, w2, b2].map((v) => grads[v.name]);
  });
  const mine = trainer.lastGrads!;
  const names = ['gamma', 'beta', 'w1', 'b1', 'w2', 'b2'];
  for (let i = 0; i < 6; i++) {
    const diff = maxAbsDiff(mine[i].dataSync(), ref[i].dataSync());
    const scale = Math.max(...Array.from(ref[i].dataSync(), Math.abs));
    assert.ok(scale > 1e-4, `${names[i]}: reference gradient is all zeros, the test would prove nothing`);
    assert.ok(diff < 1e-4 + 1e-3 * scale, `${names[i]}: hand-written gradient differs from autodiff by ${diff}`);
  }
  tf.dispose([...before, ...ref]);
  trainer.dispose();
});

test('early stopping restores the best epoch weights (not the last)', async () => {
  await ready;
  const train = blobs(600, 16, 1, 2.5);
  const val = blobs(200, 16, 2, 2.5);
  const snapshots = new Map<number, Float32Array[]>();
  const res = await trainHead(train, val, { units: 16, epochs: 12, batchSize: 32, lr: 0.02, schedule: 'constant', patience: 0, dropout: 0.5 }, {
    progress: false,
    onEpochEnd: (rec, weights) => {
      const ws = weights();
      snapshots.set(rec.epoch, ws.map((w) => w.dataSync().slice() as Float32Array));
      tf.dispose(ws);
    },
  });
  assert.equal(res.history.length, 12);
  const accs = res.history.map((h) => h.valAcc);
  assert.equal(res.bestValAcc, Math.max(...accs));
  assert.ok(res.bestEpoch < 12, `the noisy setup should peak before the last epoch (val accs ${accs.join(', ')})`);
  const final = (await import('../lib/model')).headWeights(res.head).map((w) => w.dataSync());
  const best = snapshots.get(res.bestEpoch)!;
  const last = snapshots.get(12)!;
  for (let i = 0; i < final.length; i++) assert.ok(maxAbsDiff(final[i], best[i]) === 0, `weight ${i} is not the best epoch's`);
  assert.ok(final.some((w, i) => maxAbsDiff(w, last[i]) > 0), 'final weights equal the last epoch: nothing was restored');
  // The restored head really scores the best validation accuracy.
  const p = (res.head.predict(tf.tensor2d(val.views[0], [val.n, val.dim])) as tf.Tensor).argMax(1).dataSync();
  const acc = Array.from(p).filter((c, i) => c === val.labels[i]).length / val.n;
  assert.ok(Math.abs(acc - res.bestValAcc) < 1e-9, `restored head scores ${acc}, best epoch scored ${res.bestValAcc}`);
  res.head.dispose();
});

test('a NaN loss stops the run with a one-line message and keeps the best weights so far', async () => {
  await ready;
  const train = blobs(300, 8, 3);
  const val = blobs(100, 8, 4);
  const poisoned: LabeledFeatures = { ...train, views: [train.views[0].slice()] };
  let epoch = 0;
  const messages: string[] = [];
  const res = await trainHead(train, val, { units: 8, epochs: 6, batchSize: 50, patience: 0 }, {
    progress: false,
    log: (l) => messages.push(l),
    // Poison the features from epoch 3 on: the loss becomes NaN mid-run.
    epochData: async (e) => {
      epoch = e;
      if (e >= 2) poisoned.views[0].fill(NaN);
      return e >= 2 ? poisoned : train;
    },
  });
  assert.equal(res.stopReason, 'non-finite-loss');
  assert.equal(epoch, 2);
  assert.ok(res.bestEpoch >= 1 && res.bestEpoch <= 2);
  assert.match(res.message ?? '', /^stopped at epoch 3: training loss became NaN .*keeping the best weights, from epoch [12]$/);
  assert.ok(!res.message!.includes('\n'));
  const w = (await import('../lib/model')).headWeights(res.head);
  assert.ok(w.every((t) => Array.from(t.dataSync()).every(Number.isFinite)), 'restored weights contain NaN');
  res.head.dispose();
});

test('runs are logged with params, history and best epoch; the sweep groups its runs', async () => {
  await ready;
  const train = blobs(200, 8, 5);
  const val = blobs(100, 8, 6);
  const s = await sweep(train, val, { lr: [0.001, 0.01], dropout: [0.1] }, { units: 8, epochs: 2, batchSize: 50 }, { progress: false });
  assert.equal(s.results.length, 2);
  const runs = listRuns({ group: s.group });
  assert.equal(runs.length, 2);
  const r = readRun(s.results[0].runId!);
  assert.equal(r.kind, 'sweep');
  assert.equal(r.params.lr, 0.001);
  assert.equal(r.history.length, 2);
  assert.equal(r.testAccuracy, null);
  assert.ok(r.backend.length > 0);
  assert.match(s.table, /0\.001/);
  s.best.head.dispose();
});

test('LR schedules and the LR finder', async () => {
  await ready;
  const cfg = { ...DEFAULT_TRAIN, lr: 1, epochs: 10, stepEvery: 3, stepGamma: 0.5 };
  assert.equal(scheduledLr({ ...cfg, schedule: 'constant' }, 7), 1);
  assert.equal(scheduledLr({ ...cfg, schedule: 'step' }, 7), 0.25);
  assert.ok(Math.abs(scheduledLr({ ...cfg, schedule: 'cosine' }, 5) - 0.5) < 1e-12);
  const f = lrFind(blobs(400, 8, 7), { units: 8, batchSize: 32 }, { steps: 80, minLr: 1e-5, maxLr: 10 });
  assert.ok(f.lrs.length > 20);
  for (let i = 1; i < f.lrs.length; i++) assert.ok(f.lrs[i] > f.lrs[i - 1]);
  assert.ok(f.suggested > 1e-5 && f.suggested < 10);
});

test('bnAffine: false keeps BN scale/offset at 1/0 and still trains', async () => {
  await ready;
  const train = blobs(500, 16, 8, 0.6);
  const val = blobs(200, 16, 9, 0.6);
  const res = await trainHead(train, val, { units: 16, epochs: 10, lr: 0.01, batchSize: 50, bnAffine: false, patience: 0 }, { progress: false, saveRun: false });
  const [gamma, beta] = (await import('../lib/model')).headWeights(res.head);
  assert.ok(Array.from(gamma.dataSync()).every((v) => v === 1));
  assert.ok(Array.from(beta.dataSync()).every((v) => v === 0));
  assert.ok(res.bestValAcc > 0.8, `val accuracy ${res.bestValAcc}`);
  res.head.dispose();
});
