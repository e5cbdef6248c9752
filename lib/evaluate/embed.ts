// A 2-D map of the feature space: UMAP (umap-js) of cached backbone features, seeded so a re-run draws the same map.
import { UMAP } from 'umap-js';
import { stratifiedSample } from '../data/cifar10';
import { rng } from '../util/random';

export interface EmbedOptions {
  /** Seeds every random choice umap-js makes (its random-projection trees, NN-descent and layout). Default 1. */
  seed?: number;
  /** Neighbours per point (umap-js default 15): larger keeps more global structure. */
  nNeighbors?: number;
  /** How tightly points may pack in the map (umap-js default 0.1). */
  minDist?: number;
  /** Layout epochs (umap-js default: 500 below 2,500 points, else 200). */
  nEpochs?: number;
  /**
   * Standardise each feature over the points (z-score, as the head's BatchNormalization does) before measuring
   * distances, so one backbone's larger activations don't dominate the concatenation. Default true.
   */
  standardize?: boolean;
}

/**
 * UMAP of `n` rows of `dim` features (row-major) to 2-D: returns [n * 2] coordinates (x0, y0, x1, y1, ...).
 * Deterministic for a seed: umap-js draws only from the `random` function it is given.
 */
export function umap2d(features: Float32Array, n: number, dim: number, opts: EmbedOptions = {}): Float32Array {
  if (features.length !== n * dim) throw new Error(`umap2d: features have ${features.length} values, expected ${n} x ${dim}`);
  const nNeighbors = opts.nNeighbors ?? 15;
  if (n <= nNeighbors) throw new Error(`umap2d: ${n} points is too few for ${nNeighbors} neighbours`);
  const mean = new Float64Array(dim);
  const scale = new Float64Array(dim).fill(1);
  if (opts.standardize ?? true) {
    for (let i = 0; i < n; i++) for (let d = 0; d < dim; d++) mean[d] += features[i * dim + d];
    for (let d = 0; d < dim; d++) mean[d] /= n;
    const sq = new Float64Array(dim);
    for (let i = 0; i < n; i++) for (let d = 0; d < dim; d++) sq[d] += (features[i * dim + d] - mean[d]) ** 2;
    for (let d = 0; d < dim; d++) scale[d] = 1 / Math.sqrt(sq[d] / n + 1e-6);
  }
  const rows: number[][] = new Array(n);
  for (let i = 0; i < n; i++) {
    const r = new Array<number>(dim);
    for (let d = 0; d < dim; d++) r[d] = (features[i * dim + d] - mean[d]) * scale[d];
    rows[i] = r;
  }
  const umap = new UMAP({
    nComponents: 2,
    nNeighbors,
    minDist: opts.minDist ?? 0.1,
    ...(opts.nEpochs ? { nEpochs: opts.nEpochs } : {}),
    random: rng(opts.seed ?? 1),
  });
  const y = umap.fit(rows);
  const out = new Float32Array(n * 2);
  y.forEach((p, i) => {
    out[i * 2] = p[0];
    out[i * 2 + 1] = p[1];
  });
  return out;
}

/** The rows `positions` of a [*, dim] feature matrix, as one [positions.length, dim] matrix. */
export function pickRows(features: Float32Array, dim: number, positions: ArrayLike<number>): Float32Array {
  const out = new Float32Array(positions.length * dim);
  for (let i = 0; i < positions.length; i++) out.set(features.subarray(positions[i] * dim, (positions[i] + 1) * dim), i * dim);
  return out;
}

export interface SplitEmbedding {
  n: number;
  /** x0, y0, x1, y1, ... */
  xy: Float32Array;
  /** Position of each point in the split, its class, and its index in the source split (train 0..49999 / test). */
  positions: number[];
  labels: Uint8Array;
  indices: Int32Array;
  seconds: number;
}

/**
 * UMAP of (a stratified, seeded sample of at most `points` of) a split's cached features, plain view: the sample
 * and the layout use the same seed, so a re-run draws the same map.
 */
export function embedSplit(
  features: { views: Float32Array[]; n: number; dim: number },
  set: { labels: Uint8Array; indices: Int32Array; n: number },
  opts: EmbedOptions & { points?: number } = {},
): SplitEmbedding {
  if (features.n !== set.n) throw new Error(`embedSplit: ${features.n} feature rows for ${set.n} images`);
  const seed = opts.seed ?? 1;
  const all = Array.from({ length: set.n }, (_, i) => i);
  const k = Math.min(opts.points ?? 2000, set.n);
  const positions = k === set.n ? all : stratifiedSample(set.labels, all, k, seed);
  const t0 = Date.now();
  const xy = umap2d(pickRows(features.views[0], features.dim, positions), k, features.dim, { ...opts, seed });
  return {
    n: k,
    xy,
    positions,
    labels: Uint8Array.from(positions, (p) => set.labels[p]),
    indices: Int32Array.from(positions, (p) => set.indices[p]),
    seconds: (Date.now() - t0) / 1000,
  };
}
