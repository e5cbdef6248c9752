// The feature table the head trains on: cached backbone features of a set of labelled images, possibly several
// views of each (plain, flipped, augmented), as row-major Float32Arrays — and its helpers: checking one, taking a
// subset of its rows, joining per-backbone features column-wise, per-column statistics.
import { NUM_CLASSES } from '../data/cifar10';

/** Features of a set of images, possibly several views of each (views[0] = plain; e.g. [plain, flip]). */
export interface LabeledFeatures {
  /** Each view is a row-major [n, dim] array of the same images in the same order. */
  views: Float32Array[];
  labels: Uint8Array;
  n: number;
  dim: number;
  /** The dataset's class count (absent: 10, CIFAR-10): the head's outputs. */
  classes?: number;
}

/** The class count the head trained on these features needs. */
export const classesOf = (d: Pick<LabeledFeatures, 'classes'>): number => d.classes ?? NUM_CLASSES;

/** Throws, naming `what`, unless every view holds n x dim values and every label is a class. */
export function checkData(d: LabeledFeatures, what: string): void {
  if (!d.views.length) throw new Error(`${what}: no feature views`);
  for (const [i, v] of d.views.entries()) {
    if (v.length !== d.n * d.dim) throw new Error(`${what}: view ${i} has ${v.length} values, expected n=${d.n} x dim=${d.dim}`);
  }
  if (d.labels.length !== d.n) throw new Error(`${what}: ${d.labels.length} labels for ${d.n} feature rows`);
  for (let i = 0; i < d.n; i++) {
    if (d.labels[i] >= classesOf(d)) throw new Error(`${what}: label ${d.labels[i]} at row ${i} is not a class 0..${classesOf(d) - 1}`);
  }
}

/** Mean and (population) variance of every feature column over all views: initial BN moving statistics. */
export function columnStats(d: LabeledFeatures): { mean: Float32Array; variance: Float32Array } {
  const sum = new Float64Array(d.dim);
  const sq = new Float64Array(d.dim);
  for (const v of d.views) {
    for (let r = 0; r < d.n; r++) {
      const o = r * d.dim;
      for (let c = 0; c < d.dim; c++) {
        const x = v[o + c];
        sum[c] += x;
        sq[c] += x * x;
      }
    }
  }
  const m = d.n * d.views.length;
  const mean = new Float32Array(d.dim);
  const variance = new Float32Array(d.dim);
  for (let c = 0; c < d.dim; c++) {
    mean[c] = sum[c] / m;
    variance[c] = Math.max(0, sq[c] / m - (sum[c] / m) ** 2);
  }
  return { mean, variance };
}

/** The rows `idx` of every view (e.g. a stratified subset for a quick sweep). */
export function subsetFeatures(d: LabeledFeatures, idx: ArrayLike<number>): LabeledFeatures {
  const n = idx.length;
  const views = d.views.map((v) => {
    const out = new Float32Array(n * d.dim);
    for (let i = 0; i < n; i++) {
      const r = idx[i];
      if (!(r >= 0 && r < d.n)) throw new Error(`subsetFeatures: row ${r} is outside 0..${d.n - 1}`);
      out.set(v.subarray(r * d.dim, (r + 1) * d.dim), i * d.dim);
    }
    return out;
  });
  return { views, labels: Uint8Array.from(idx as ArrayLike<number>, (r) => d.labels[r]), n, dim: d.dim, ...(d.classes !== undefined ? { classes: d.classes } : {}) };
}

/** Concatenate per-backbone features of the same images column-wise: [n, d1] + [n, d2] -> [n, d1 + d2]. */
export function concatFeatures(parts: { data: Float32Array; n: number; dim: number }[]): { data: Float32Array; n: number; dim: number } {
  if (!parts.length) throw new Error('concatFeatures: nothing to concatenate');
  const n = parts[0].n;
  for (const p of parts) if (p.n !== n) throw new Error(`concatFeatures: row counts differ (${parts.map((q) => q.n).join(' vs ')})`);
  if (parts.length === 1) return parts[0];
  const dim = parts.reduce((a, p) => a + p.dim, 0);
  const data = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    let o = r * dim;
    for (const p of parts) {
      data.set(p.data.subarray(r * p.dim, (r + 1) * p.dim), o);
      o += p.dim;
    }
  }
  return { data, n, dim };
}
