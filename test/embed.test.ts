// The feature-space map: UMAP gives n x 2 finite coordinates, the same ones for the same seed, keeps well-separated
// clusters apart; the split sample is stratified and traceable; the figure has one legend entry per class.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { embedSplit, pickRows, umap2d } from '../lib/evaluate/embed';
import { embeddingScatter } from '../lib/evaluate/plot';
import { rng } from '../lib/util/random';

/** `perCluster` points around each of `centres` in `dim` dimensions (Gaussian noise, sd 1), seeded. */
function clusters(centres: number[], perCluster: number, dim: number, seed = 3): { x: Float32Array; labels: Uint8Array } {
  const r = rng(seed);
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const n = centres.length * perCluster;
  const x = new Float32Array(n * dim);
  const labels = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    // interleaved, so the clusters are not contiguous blocks of rows
    const c = i % centres.length;
    labels[i] = c;
    for (let d = 0; d < dim; d++) x[i * dim + d] = centres[c] + gauss();
  }
  return { x, labels };
}

test('umap2d: n x 2 finite coordinates; the same seed gives the same map, another seed another', () => {
  const { x } = clusters([0, 6], 40, 16);
  const a = umap2d(x, 80, 16, { seed: 7 });
  assert.equal(a.length, 160);
  assert.ok(a.every(Number.isFinite), 'finite');
  assert.deepEqual(umap2d(x, 80, 16, { seed: 7 }), a, 'deterministic for a seed');
  assert.notDeepEqual(umap2d(x, 80, 16, { seed: 8 }), a, 'the seed is actually used');
  assert.throws(() => umap2d(x, 81, 16), /80 x 16|1280 values, expected 81 x 16/);
  assert.throws(() => umap2d(x.subarray(0, 10 * 16), 10, 16), /too few/);
});

test('umap2d keeps two well-separated clusters apart', () => {
  const dim = 64;
  const { x, labels } = clusters([0, 4], 60, dim);
  const xy = umap2d(x, 120, dim, { seed: 1 });
  // every point's nearest neighbour on the map is from its own cluster
  let same = 0;
  for (let i = 0; i < 120; i++) {
    let best = -1;
    let bestD = Infinity;
    for (let j = 0; j < 120; j++) {
      if (j === i) continue;
      const d = (xy[2 * i] - xy[2 * j]) ** 2 + (xy[2 * i + 1] - xy[2 * j + 1]) ** 2;
      if (d < bestD) [best, bestD] = [j, d];
    }
    if (labels[best] === labels[i]) same++;
  }
  assert.equal(same, 120, `${same}/120 nearest neighbours in the same cluster`);
  // and the clusters' centroids are further apart than either cluster is wide
  const centroid = (c: number) => {
    const p = [0, 0];
    for (let i = 0; i < 120; i++) if (labels[i] === c) [p[0], p[1]] = [p[0] + xy[2 * i] / 60, p[1] + xy[2 * i + 1] / 60];
    return p;
  };
  const radius = (c: number, m: number[]) => {
    let s = 0;
    for (let i = 0; i < 120; i++) if (labels[i] === c) s += Math.hypot(xy[2 * i] - m[0], xy[2 * i + 1] - m[1]) / 60;
    return s;
  };
  const [m0, m1] = [centroid(0), centroid(1)];
  const gap = Math.hypot(m0[0] - m1[0], m0[1] - m1[1]);
  assert.ok(gap > 2 * Math.max(radius(0, m0), radius(1, m1)), `centroid distance ${gap.toFixed(2)} vs radii ${radius(0, m0).toFixed(2)}, ${radius(1, m1).toFixed(2)}`);
});

test('embedSplit: a stratified, seeded sample of the split, traceable to its images', () => {
  const dim = 8;
  const { x, labels } = clusters([0, 5], 50, dim, 5);
  const indices = Int32Array.from({ length: 100 }, (_, i) => 1000 + i);
  const set = { labels, indices, n: 100 };
  const e = embedSplit({ views: [x], n: 100, dim }, set, { points: 40, seed: 2 });
  assert.equal(e.n, 40);
  assert.equal(e.xy.length, 80);
  assert.deepEqual([...e.labels].filter((l) => l === 0).length, 20, 'stratified: half of each class');
  e.positions.forEach((p, k) => {
    assert.equal(e.labels[k], labels[p]);
    assert.equal(e.indices[k], 1000 + p);
  });
  assert.deepEqual(embedSplit({ views: [x], n: 100, dim }, set, { points: 40, seed: 2 }).xy, e.xy, 'same seed, same map');
  // fewer images than points: all of them, in order
  assert.deepEqual(embedSplit({ views: [x], n: 100, dim }, set, { points: 500 }).positions, Array.from({ length: 100 }, (_, i) => i));
  assert.deepEqual(Array.from(pickRows(x, dim, [3])), Array.from(x.subarray(3 * dim, 4 * dim)));
  assert.throws(() => embedSplit({ views: [x], n: 100, dim }, { ...set, n: 99 }), /100 feature rows for 99 images/);
});

test('embeddingScatter: one trace (legend entry) per class, hover text per point, JSON-safe', () => {
  const xy = new Float32Array([0, 0, 1, 1, 2, 2]);
  const f = embeddingScatter({ title: 'map', xy, labels: new Uint8Array([1, 0, 1]), classNames: ['cat', 'dog'], hover: ['a', 'b', 'c'] });
  assert.deepEqual(JSON.parse(JSON.stringify(f)), f);
  assert.deepEqual(f.data.map((t) => [t.name, t.x, t.y, t.text]), [['cat', [1], [1], ['b']], ['dog', [0, 2], [0, 2], ['a', 'c']]]);
  assert.notEqual((f.data[0].marker as { color: string }).color, (f.data[1].marker as { color: string }).color);
  assert.throws(() => embeddingScatter({ xy, labels: new Uint8Array(2), classNames: ['a'] }), /6 coordinates for 2 points/);
  assert.throws(() => embeddingScatter({ xy, labels: new Uint8Array(3), classNames: ['a'], hover: ['x'] }), /1 hover texts for 3 points/);
});
