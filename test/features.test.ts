import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../lib/engine/backend';
import { BACKBONES, backboneFingerprint } from '../lib/features/backbones';
import { cacheFolder, extractFeatures, ExtractOptions, terminateFeaturePool } from '../lib/features/features';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const REAL = process.env.BACKBONES_DIR;
const SKIP_REAL = REAL && fs.existsSync(path.join(REAL, BACKBONES.mobilenet_v2.folder))
  ? false
  : 'real weights absent: set BACKBONES_DIR to the folder holding mobilenet_v2_1.0_224/ (e.g. ../shared/models) to enable';

let fakeDir: string;
let cacheDir: string;
const N = 8;
const images = fakeImages(N, 11);
const base = (): ExtractOptions => ({ backbone: 'mobilenet_v1_0.75', backbonesDir: fakeDir, resolution: 48, cacheDir, progress: false, workers: 0 });

before(async () => {
  await initBackend({ log: () => {} });
  fakeDir = await writeFakeBackbone();
  cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'feature-cache-'));
});
after(() => terminateFeaturePool());

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
const row = (f: { data: Float32Array; dim: number }, i: number) => f.data.subarray(i * f.dim, (i + 1) * f.dim);
function featFiles(opts: ExtractOptions): string[] {
  const weights = backboneFingerprint(path.join(opts.backbonesDir!, BACKBONES[opts.backbone].folder));
  const dir = cacheFolder(cacheDir, { backbone: opts.backbone, weights, resolution: opts.resolution!, view: opts.view ?? 'plain' });
  return fs.readdirSync(dir).filter((f) => f.endsWith('.feat')).map((f) => path.join(dir, f));
}

test('worker pool features equal in-process features (within 1e-4), in input order', async () => {
  const inProc = await extractFeatures({ images, n: N }, { ...base(), cache: false });
  const pooled = await extractFeatures({ images, n: N }, { ...base(), cache: false, workers: 2, batchSize: 3 });
  assert.equal(pooled.stats!.workers, 2);
  assert.equal(inProc.dim, 768);
  assert.ok(maxAbsDiff(inProc.data, pooled.data) < 1e-4);
  assert.ok(maxAbsDiff(row(inProc, 0), row(inProc, 1)) > 1e-6, 'different images should give different features');
});

test('cache round-trips, serves subsets in any order, and is invalidated by pixels and settings', async () => {
  const first = await extractFeatures({ images, n: N }, base());
  assert.equal(first.stats!.computed, N);
  const again = await extractFeatures({ images, n: N }, base());
  assert.deepEqual([again.stats!.cached, again.stats!.computed], [N, 0]);
  assert.deepEqual(again.data, first.data);

  // A reversed subset is all cache hits, rows follow the new order.
  const idx = [5, 2, 0];
  const sub = new Uint8Array(idx.length * 3072);
  idx.forEach((k, j) => sub.set(images.subarray(k * 3072, (k + 1) * 3072), j * 3072));
  const s = await extractFeatures({ images: sub, n: idx.length }, base());
  assert.equal(s.stats!.computed, 0);
  idx.forEach((k, j) => assert.deepEqual(row(s, j), row(first, k)));

  // One changed pixel: only that image is recomputed, and its features change.
  const changed = images.slice();
  changed[3 * 3072 + 100] ^= 0xff;
  const c = await extractFeatures({ images: changed, n: N }, base());
  assert.deepEqual([c.stats!.cached, c.stats!.computed], [N - 1, 1]);
  assert.ok(maxAbsDiff(row(c, 3), row(first, 3)) > 0);

  // Other settings never read these entries.
  assert.equal((await extractFeatures({ images, n: N }, { ...base(), resolution: 64 })).stats!.computed, N);
  const flipped = await extractFeatures({ images, n: N }, { ...base(), view: 'flip' });
  assert.equal(flipped.stats!.computed, N);
  assert.ok(maxAbsDiff(flipped.data, first.data) > 1e-6);
});

test('a truncated or corrupted cache file is detected and recomputed, never trusted', async () => {
  const opts = { ...base(), resolution: 40 };
  const ref = await extractFeatures({ images, n: N }, opts);
  const [file] = featFiles(opts);
  fs.truncateSync(file, fs.statSync(file).size - 4);
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (m: string) => warnings.push(m);
  try {
    const r1 = await extractFeatures({ images, n: N }, opts);
    assert.equal(r1.stats!.computed, N);
    assert.ok(maxAbsDiff(r1.data, ref.data) < 1e-6);
    assert.ok(warnings.some((w) => w.includes(file)), 'should say which file was ignored');
    // Same size, one flipped byte in the features: the body hash catches it.
    const buf = fs.readFileSync(file);
    buf[buf.length - 3] ^= 0x40;
    fs.writeFileSync(file, buf);
    const r2 = await extractFeatures({ images, n: N }, opts);
    assert.equal(r2.stats!.computed, N);
    assert.ok(maxAbsDiff(r2.data, ref.data) < 1e-6);
    assert.equal((await extractFeatures({ images, n: N }, opts)).stats!.cached, N, 'rewritten file is valid again');
  } finally {
    console.warn = warn;
  }
});

test('a bad cache file is moved to quarantine once: the next run neither reads it nor warns again', async () => {
  const opts = { ...base(), resolution: 36 };
  await extractFeatures({ images, n: N }, opts);
  const [file] = featFiles(opts);
  fs.truncateSync(file, 100);
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (m: string) => warnings.push(m);
  try {
    assert.equal((await extractFeatures({ images, n: N }, opts)).stats!.computed, N);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /is unusable \(.*\); moved to .*quarantine/);
    assert.ok(!fs.existsSync(file) || fs.statSync(file).size > 100, 'the bad file is gone from the cache folder');
    assert.equal((await extractFeatures({ images, n: N }, opts)).stats!.cached, N);
    assert.equal(warnings.length, 1, 'no second warning');
  } finally {
    console.warn = warn;
  }
});

test('changed backbone weights (same file sizes) are never served stale features', async () => {
  const root = await writeFakeBackbone();
  const opts = { ...base(), backbonesDir: root, resolution: 44 };
  const before = await extractFeatures({ images, n: N }, opts);
  assert.equal((await extractFeatures({ images, n: N }, opts)).stats!.cached, N);
  // Scale every float of the first shard by 0.5: same size, different weights.
  const shard = path.join(root, BACKBONES['mobilenet_v1_0.75'].folder, 'group1-shard1of2.bin');
  const buf = fs.readFileSync(shard);
  const f = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  for (let i = 0; i < f.length; i++) f[i] *= 0.5;
  fs.writeFileSync(shard, buf);
  const after = await extractFeatures({ images, n: N }, opts);
  assert.deepEqual([after.stats!.cached, after.stats!.computed], [0, N]);
  assert.ok(maxAbsDiff(after.data, before.data) > 1e-4, 'features follow the new weights');
});

test('identical images get identical features; bad input fails clearly', async () => {
  const dup = new Uint8Array(3 * 3072);
  dup.set(images.subarray(0, 3072), 0);
  dup.set(images.subarray(0, 3072), 3072);
  dup.set(images.subarray(3072, 6144), 2 * 3072);
  const f = await extractFeatures({ images: dup, n: 3 }, { ...base(), cache: false });
  assert.deepEqual(row(f, 0), row(f, 1));
  assert.ok(maxAbsDiff(row(f, 0), row(f, 2)) > 1e-6);
  await assert.rejects(extractFeatures({ images: dup, n: 4 }, base()), /expected n=4/);
  await assert.rejects(extractFeatures({ images: dup, n: 3 }, { ...base(), view: 'sideways' }), /view "sideways"/);
  await assert.rejects(extractFeatures({ images: dup, n: 3 }, { ...base(), backbone: 'resnet' as any }), /unknown backbone "resnet"/);
});

test('real MobileNetV2: pool == in-process within 1e-4 at 64 px', { skip: SKIP_REAL }, async () => {
  const opts: ExtractOptions = { backbone: 'mobilenet_v2', backbonesDir: REAL, resolution: 64, cache: false, progress: false };
  const a = await extractFeatures({ images, n: N }, { ...opts, workers: 0 });
  const b = await extractFeatures({ images, n: N }, { ...opts, workers: 2 });
  assert.equal(a.dim, 1280);
  assert.ok(maxAbsDiff(a.data, b.data) < 1e-4);
});
