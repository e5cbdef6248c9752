// Metrics on hand-checkable predictions, TTA averaging, and the splits: validation never comes from the test set.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { Cifar10, ImageSet } from '../lib/data/cifar10';
import { accuracy, evaluate, predictFeaturesTTA, SPLIT_LABELS } from '../lib/evaluate/evaluate';
import { buildHead } from '../lib/model/classifier';
import { makeSplits } from '../lib/experiment/pipeline';

const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/** One-hot-ish probabilities for the given predicted classes (p on the prediction, the rest spread). */
function probsFor(pred: number[], p = 0.91): Float32Array {
  const out = new Float32Array(pred.length * 10).fill((1 - p) / 9);
  pred.forEach((c, i) => (out[i * 10 + c] = p));
  return out;
}

test('accuracy, per-class precision/recall/F1, confusion, most-confused pairs, top losses', () => {
  const labels = Uint8Array.from([0, 0, 0, 1, 1, 3, 3, 3]);
  const pred = [0, 0, 1, 1, 3, 3, 3, 0];
  const probs = probsFor(pred);
  probs[7 * 10 + 3] = 0.001; // image 7 (true cat, predicted airplane) is the worst
  const ev = evaluate(probs, labels, { split: SPLIT_LABELS.validation, classNames: NAMES, indices: [10, 11, 12, 13, 14, 15, 16, 17] });
  assert.equal(ev.accuracy, 5 / 8);
  assert.equal(accuracy(probs, labels), 5 / 8);
  assert.deepEqual(ev.confusion[0].slice(0, 4), [2, 1, 0, 0]);
  assert.deepEqual(ev.confusion[3].slice(0, 4), [1, 0, 0, 2]);
  const airplane = ev.perClass[0];
  assert.equal(airplane.precision, 2 / 3); // predicted airplane 3 times, 2 right
  assert.equal(airplane.recall, 2 / 3);
  assert.ok(Math.abs(airplane.f1 - 2 / 3) < 1e-12);
  assert.equal(ev.perClass[1].precision, 1 / 2);
  assert.equal(ev.perClass[1].recall, 1 / 2);
  assert.equal(ev.perClass[2].support, 0);
  assert.equal(ev.mostConfused.length, 3);
  assert.ok(ev.mostConfused.every((p) => p.count === 1));
  assert.equal(ev.topLosses[0].index, 17);
  assert.equal(ev.topLosses[0].trueClass, 'cat');
  assert.equal(ev.topLosses[0].predicted, 'airplane');
  assert.ok(Math.abs(ev.topLosses[0].probability - 0.91) < 1e-6);
  assert.equal(ev.split, 'validation');
});

test('a prediction array of the wrong size is rejected with the sizes', () => {
  assert.throws(() => evaluate(new Float32Array(15), new Uint8Array(2), { split: 'x', classNames: NAMES }), /15 values, expected 2 images x 10 classes/);
});

test('TTA is the mean of the per-view probabilities', async () => {
  await initBackend({ log: () => {} });
  const head = buildHead({ inputDim: 6, units: 4, dropout: 0.2, seed: 3 });
  const a = Float32Array.from({ length: 12 }, (_, i) => i / 5);
  const b = Float32Array.from({ length: 12 }, (_, i) => (12 - i) / 3);
  const pa = (head.predict(tf.tensor2d(a, [2, 6])) as tf.Tensor).dataSync();
  const pb = (head.predict(tf.tensor2d(b, [2, 6])) as tf.Tensor).dataSync();
  const t = await predictFeaturesTTA(head, [a, b], 2, 6);
  for (let i = 0; i < 20; i++) assert.ok(Math.abs(t[i] - (pa[i] + pb[i]) / 2) < 1e-6);
  assert.ok(Array.from(pa).some((v, i) => Math.abs(v - pb[i]) > 1e-4), 'views should give different predictions');
});

test('validation never comes from the test set (and never overlaps training)', () => {
  // Every image carries its split and index in its first bytes, so provenance can be read back from the pixels.
  const set = (n: number, split: number): ImageSet => {
    const images = new Uint8Array(n * 3072);
    for (let i = 0; i < n; i++) {
      images[i * 3072] = split;
      images[i * 3072 + 1] = i & 255;
      images[i * 3072 + 2] = i >> 8;
    }
    return { images, labels: Uint8Array.from({ length: n }, (_, i) => i % 10), n, indices: Int32Array.from({ length: n }, (_, i) => i) };
  };
  const data: Cifar10 = { train: set(2000, 1), test: set(500, 2), classNames: NAMES, dir: '(synthetic)' };
  const s = makeSplits(data, { valSize: 300, testLimit: 400 });
  assert.equal(s.val.n, 300);
  const seen = new Set<number>();
  for (let i = 0; i < s.val.n; i++) {
    assert.equal(s.val.images[i * 3072], 1, `validation image ${i} is not from the training set`);
    const idx = s.val.images[i * 3072 + 1] + 256 * s.val.images[i * 3072 + 2];
    assert.equal(idx, s.val.indices[i]);
    seen.add(idx);
  }
  for (let i = 0; i < s.train.n; i++) assert.ok(!seen.has(s.train.indices[i]), `training image ${s.train.indices[i]} is also in validation`);
  assert.equal(s.train.n + s.val.n, 2000);
  for (let i = 0; i < s.testFull.n; i++) assert.equal(s.testFull.images[i * 3072], 2);
  assert.equal(s.testFull.n, 400);
  assert.equal(s.testExact.n, 400); // limited below 1000: the exact range is cut to the limit
  assert.deepEqual(Array.from(s.testExact.indices.slice(0, 3)), [0, 1, 2]);
});
