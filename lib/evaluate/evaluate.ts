// Evaluating a classifier's predictions: accuracy, per-class precision/recall/F1, confusion matrix, most-confused
// pairs, top losses, and test-time augmentation (average of plain + flipped predictions). Every report names its
// split, because in the shared copy only test images 0-999 are exact (see lib/data/cifar10 EXACT_TEST_RANGE).
import { mapRowBatches } from '../engine/batches';
import { percent } from '../util/format';
import * as tf from '@tensorflow/tfjs';
import { formatTable } from '../experiment/runs';

/** The labels reports use for each split. */
export const SPLIT_LABELS = {
  validation: 'validation',
  exactTest: 'test 0-999 (exact)',
  fullTest: 'full test (images 1000-9999 JPEG-rebuilt)',
} as const;

export interface ClassMetrics {
  name: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface TopLoss {
  /** Index of the image in its source (CIFAR-10: train 0..49999 / test 0..9999; a folder: its image list). */
  index: number;
  /** The image's file, relative to the dataset folder (folder datasets). */
  file?: string;
  trueClass: string;
  predicted: string;
  /** Probability of the predicted class. */
  probability: number;
  /** Probability given to the true class. */
  trueProbability: number;
  loss: number;
}

export interface Evaluation {
  split: string;
  n: number;
  accuracy: number;
  /** Mean cross-entropy of the true class. */
  loss: number;
  perClass: ClassMetrics[];
  /** confusion[true][predicted] counts. */
  confusion: number[][];
  mostConfused: { trueClass: string; predicted: string; count: number }[];
  topLosses: TopLoss[];
}

function checkProbs(probs: Float32Array, n: number, k: number): void {
  if (probs.length !== n * k) throw new Error(`predictions have ${probs.length} values, expected ${n} images x ${k} classes`);
}

/** Arg-max class per row of [n, k] probabilities. */
export function predictedClasses(probs: Float32Array, k: number): Uint8Array {
  const n = probs.length / k;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < k; c++) if (probs[i * k + c] > probs[i * k + best]) best = c;
    out[i] = best;
  }
  return out;
}

export function accuracy(probs: Float32Array, labels: Uint8Array, k = 10): number {
  checkProbs(probs, labels.length, k);
  const pred = predictedClasses(probs, k);
  let correct = 0;
  for (let i = 0; i < labels.length; i++) if (pred[i] === labels[i]) correct++;
  return labels.length ? correct / labels.length : NaN;
}

export function confusionMatrix(pred: Uint8Array, labels: Uint8Array, k = 10): number[][] {
  const m = Array.from({ length: k }, () => new Array(k).fill(0));
  for (let i = 0; i < labels.length; i++) m[labels[i]][pred[i]]++;
  return m;
}

export function perClassMetrics(confusion: number[][], classNames: string[]): ClassMetrics[] {
  const k = confusion.length;
  return Array.from({ length: k }, (_, c) => {
    const tp = confusion[c][c];
    const support = confusion[c].reduce((a, b) => a + b, 0);
    const predicted = confusion.reduce((a, row) => a + row[c], 0);
    const precision = predicted ? tp / predicted : 0;
    const recall = support ? tp / support : 0;
    const f1 = precision + recall ? (2 * precision * recall) / (precision + recall) : 0;
    return { name: classNames[c] ?? String(c), precision, recall, f1, support };
  });
}

/** Off-diagonal cells, largest first. */
export function mostConfused(confusion: number[][], classNames: string[], top = 5): Evaluation['mostConfused'] {
  const pairs: Evaluation['mostConfused'] = [];
  confusion.forEach((row, t) =>
    row.forEach((count, p) => {
      if (t !== p && count > 0) pairs.push({ trueClass: classNames[t] ?? String(t), predicted: classNames[p] ?? String(p), count });
    }),
  );
  return pairs.sort((a, b) => b.count - a.count).slice(0, top);
}

/** The `top` images with the highest loss (lowest probability on the true class). */
export function topLosses(probs: Float32Array, labels: Uint8Array, indices: ArrayLike<number>, classNames: string[], top = 10, files?: readonly string[]): TopLoss[] {
  const k = classNames.length;
  checkProbs(probs, labels.length, k);
  const pred = predictedClasses(probs, k);
  const order = Array.from({ length: labels.length }, (_, i) => i).sort(
    (a, b) => probs[a * k + labels[a]] - probs[b * k + labels[b]],
  );
  return order.slice(0, top).map((i) => {
    const pt = probs[i * k + labels[i]];
    return {
      index: indices[i],
      ...(files ? { file: files[indices[i]] } : {}),
      trueClass: classNames[labels[i]],
      predicted: classNames[pred[i]],
      probability: probs[i * k + pred[i]],
      trueProbability: pt,
      loss: -Math.log(Math.max(pt, 1e-12)),
    };
  });
}

/** Everything above for one split. */
export function evaluate(
  probs: Float32Array,
  labels: Uint8Array,
  opts: { split: string; classNames: string[]; indices?: ArrayLike<number>; topLosses?: number; mostConfused?: number; files?: readonly string[] },
): Evaluation {
  const k = opts.classNames.length;
  checkProbs(probs, labels.length, k);
  const pred = predictedClasses(probs, k);
  const confusion = confusionMatrix(pred, labels, k);
  let loss = 0;
  for (let i = 0; i < labels.length; i++) loss -= Math.log(Math.max(probs[i * k + labels[i]], 1e-12));
  const indices = opts.indices ?? Array.from({ length: labels.length }, (_, i) => i);
  return {
    split: opts.split,
    n: labels.length,
    accuracy: accuracy(probs, labels, k),
    loss: labels.length ? loss / labels.length : NaN,
    perClass: perClassMetrics(confusion, opts.classNames),
    confusion,
    mostConfused: mostConfused(confusion, opts.classNames, opts.mostConfused ?? 5),
    topLosses: topLosses(probs, labels, indices, opts.classNames, opts.topLosses ?? 10, opts.files),
  };
}

/** Head probabilities on cached features [n, dim], in batches. */
export function predictFeatures(head: tf.LayersModel, features: Float32Array, n: number, dim: number, batchSize = 2000): Promise<Float32Array> {
  if (features.length !== n * dim) throw new Error(`features have ${features.length} values, expected ${n} x ${dim}`);
  // One predict call per chunk with batchSize = chunk: predict's default (32) slices the input tensor per
  // mini-batch, and each slice of a 2000-row tensor costs more than the forward pass itself on wasm.
  return mapRowBatches(n, batchSize, head.outputs[0].shape[1] as number, (s, m) =>
    head.predict(tf.tensor2d(features.subarray(s * dim, (s + m) * dim), [m, dim]), { batchSize: m }) as tf.Tensor,
  );
}

/** Test-time augmentation: the mean of the head's probabilities over views (e.g. [plain, flip]) of the same images. */
export async function predictFeaturesTTA(head: tf.LayersModel, views: Float32Array[], n: number, dim: number): Promise<Float32Array> {
  if (!views.length) throw new Error('predictFeaturesTTA: no views');
  const sum = await predictFeatures(head, views[0], n, dim);
  for (const v of views.slice(1)) {
    const p = await predictFeatures(head, v, n, dim);
    for (let i = 0; i < sum.length; i++) sum[i] += p[i];
  }
  for (let i = 0; i < sum.length; i++) sum[i] /= views.length;
  return sum;
}


/** A printable report: accuracy, per-class table, most-confused pairs, top losses. */
export function formatEvaluation(ev: Evaluation, opts: { topLosses?: number } = {}): string {
  const lines = [`${ev.split}: accuracy ${percent(ev.accuracy)} on ${ev.n} images (loss ${ev.loss.toFixed(4)})`];
  lines.push(
    formatTable(
      ['class', 'precision', 'recall', 'F1', 'support'],
      ev.perClass.map((c) => [c.name, percent(c.precision), percent(c.recall), percent(c.f1), String(c.support)]),
    ),
  );
  lines.push(`most confused (true -> predicted): ${ev.mostConfused.map((p) => `${p.trueClass} -> ${p.predicted} (${p.count})`).join(', ')}`);
  const tl = ev.topLosses.slice(0, opts.topLosses ?? 5);
  if (tl.length) {
    lines.push('top losses:');
    lines.push(
      formatTable(
        [tl[0].file !== undefined ? 'file' : 'index', 'true', 'predicted', 'p(pred)', 'p(true)'],
        tl.map((t) => [t.file ?? String(t.index), t.trueClass, t.predicted, t.probability.toFixed(3), t.trueProbability.toFixed(3)]),
      ),
    );
  }
  return lines.join('\n');
}

/** Confusion matrix as a table (rows = true class). */
export function formatConfusion(ev: Evaluation, classNames: string[]): string {
  const short = classNames.map((c) => c.slice(0, 5));
  return formatTable(['true\\pred', ...short], ev.confusion.map((row, i) => [short[i], ...row.map(String)]));
}
