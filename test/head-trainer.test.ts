// The hand-written step: its gradients and loss equal tfjs autodiff of the same head, the step applies them, LR
// schedules, config validation.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { BN_EPSILON } from '../lib/model/classifier';
import { DEFAULT_TRAIN, HeadBatch, headGradients, HeadTrainer, resolveTrainConfig, scheduledLr } from '../lib/train/head-trainer';
import { rng } from '../lib/util/random';
import { maxAbsDiff } from './blobs';

const ready = initBackend({ log: () => {} });

/** A random batch of B x D features with dropout masks and smoothed one-hot targets, batch statistics as the trainer computes them. */
function randomBatch(B: number, D: number, U: number): HeadBatch {
  const r = rng(5);
  const x = Float32Array.from({ length: B * D }, () => r() * 3);
  const m1 = Float32Array.from({ length: B * D }, () => (r() < 0.3 ? 0 : 1 / 0.7));
  const m2 = Float32Array.from({ length: B * U }, () => (r() < 0.3 ? 0 : 1 / 0.7));
  const y = new Float32Array(B * 10).fill(0.01);
  for (let i = 0; i < B; i++) y[i * 10 + (i % 10)] += 0.9;
  // Population variance, as the trainer's training-mode BN.
  const mean = new Float32Array(D);
  const inv = new Float32Array(D);
  for (let c = 0; c < D; c++) {
    let s = 0, q = 0;
    for (let i = 0; i < B; i++) {
      s += x[i * D + c];
      q += x[i * D + c] ** 2;
    }
    mean[c] = s / B;
    inv[c] = 1 / Math.sqrt(q / B - mean[c] ** 2 + BN_EPSILON);
  }
  return { x, m1, m2, y, mean, inv };
}

test('hand-written gradients and loss equal tfjs autodiff of the same head', async () => {
  await ready;
  const B = 8, D = 12, U = 6;
  const cfg = { ...DEFAULT_TRAIN, units: U, dropout: 0.3, labelSmoothing: 0.1, bnAffine: true };
  const trainer = new HeadTrainer(D, cfg);
  // Non-trivial gamma/beta so their gradients matter.
  trainer.vars[0].assign(tf.randomUniform([D], 0.5, 1.5, 'float32', 3));
  trainer.vars[1].assign(tf.randomUniform([D], -0.5, 0.5, 'float32', 4));
  const b = randomBatch(B, D, U);
  const mine = headGradients(trainer.vars, b, cfg);
  const ref = tf.tidy(() => {
    const [gamma, beta, , , w1, b1, w2, b2] = trainer.vars.map((t) => tf.variable(t.clone()));
    const x = tf.tensor2d(b.x, [B, D]);
    const f = () => {
      const { mean, variance } = tf.moments(x, 0);
      const a = tf.mul(tf.add(tf.mul(tf.div(tf.sub(x, mean), tf.sqrt(tf.add(variance, BN_EPSILON))), gamma), beta), tf.tensor2d(b.m1, [B, D]));
      const h = tf.mul(tf.relu(tf.add(tf.matMul(a as tf.Tensor2D, w1 as tf.Tensor as tf.Tensor2D), b1)), tf.tensor2d(b.m2, [B, U]));
      const logits = tf.add(tf.matMul(h as tf.Tensor2D, w2 as tf.Tensor as tf.Tensor2D), b2);
      return tf.neg(tf.mean(tf.sum(tf.mul(tf.tensor2d(b.y, [B, 10]), tf.logSoftmax(logits)), 1))) as tf.Scalar;
    };
    const { value, grads } = tf.variableGrads(f, [gamma, beta, w1, b1, w2, b2]);
    return { value, grads: [gamma, beta, w1, b1, w2, b2].map((v) => grads[v.name]) };
  });
  const loss = mine.loss.dataSync()[0];
  assert.ok(Math.abs(loss - ref.value.dataSync()[0]) < 1e-5, `loss ${loss} vs autodiff ${ref.value.dataSync()[0]}`);
  const names = ['gamma', 'beta', 'w1', 'b1', 'w2', 'b2'];
  for (let i = 0; i < 6; i++) {
    const diff = maxAbsDiff(mine.grads[i].dataSync(), ref.grads[i].dataSync());
    const scale = Math.max(...Array.from(ref.grads[i].dataSync(), Math.abs));
    assert.ok(scale > 1e-4, `${names[i]}: reference gradient is all zeros, the test would prove nothing`);
    assert.ok(diff < 1e-4 + 1e-3 * scale, `${names[i]}: hand-written gradient differs from autodiff by ${diff}`);
  }
  tf.dispose([mine, ref]);
  trainer.dispose();
});

test('headGradients is pure; trainStep applies its moving statistics and moves exactly the trained weights', async () => {
  await ready;
  const B = 8, D = 12, U = 6;
  const b = randomBatch(B, D, U);
  for (const bnAffine of [false, true]) {
    const cfg = { ...DEFAULT_TRAIN, units: U, bnAffine };
    const trainer = new HeadTrainer(D, cfg);
    const values = () => trainer.vars.map((v) => v.dataSync().slice());
    const before = values();
    const g = headGradients(trainer.vars, b, cfg);
    assert.ok(values().every((w, i) => maxAbsDiff(w, before[i]) === 0), 'headGradients changed a weight');
    const expectedMean = g.newMean.dataSync().slice();
    const expectedVar = g.newVar.dataSync().slice();
    tf.dispose(g);
    const loss = await trainer.trainStep(b, 0.01);
    assert.ok(Number.isFinite(loss));
    const after = values();
    assert.equal(maxAbsDiff(after[2], expectedMean), 0, 'moving mean');
    assert.equal(maxAbsDiff(after[3], expectedVar), 0, 'moving variance');
    // gamma/beta move only with bnAffine; the dense kernels and biases always do.
    const moved = after.map((w, i) => maxAbsDiff(w, before[i]) > 0);
    assert.deepEqual(moved, [bnAffine, bnAffine, true, true, true, true, true, true]);
    trainer.dispose();
  }
});

test('LR schedules', () => {
  const cfg = { ...DEFAULT_TRAIN, lr: 1, epochs: 10, stepEvery: 3, stepGamma: 0.5 };
  assert.equal(scheduledLr({ ...cfg, schedule: 'constant' }, 7), 1);
  assert.equal(scheduledLr({ ...cfg, schedule: 'step' }, 7), 0.25);
  assert.ok(Math.abs(scheduledLr({ ...cfg, schedule: 'cosine' }, 5) - 0.5) < 1e-12);
  assert.equal(scheduledLr({ ...cfg, schedule: 'constant', warmupEpochs: 2 }, 0.5), 0.25);
});

test('the config is completed from DEFAULT_TRAIN and checked, naming the bad setting', () => {
  assert.deepEqual(resolveTrainConfig({ lr: 0.01 }), { ...DEFAULT_TRAIN, lr: 0.01 });
  assert.throws(() => resolveTrainConfig({ lr: 0 }), /train config lr=0: expected a positive number/);
  assert.throws(() => resolveTrainConfig({ dropout: 1 }), /dropout=1/);
  assert.throws(() => resolveTrainConfig({ units: 2.5 }), /units=2.5/);
  assert.throws(() => resolveTrainConfig({ schedule: 'linear' as any }), /schedule="linear"/);
});
