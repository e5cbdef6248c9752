// Stand-in feature tables for the trainer's tests: Gaussian blobs per class, learnable, with a noise level that
// makes validation accuracy wobble.
import { LabeledFeatures } from '../lib/features/labeled-features';
import { rng } from '../lib/util/random';

export function blobs(n: number, dim: number, seed: number, noise = 1.5): LabeledFeatures {
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

export const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};
