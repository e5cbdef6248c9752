// lib/data/folder-dataset.ts and lib/data/dataset.ts on generated folders (no CIFAR-10, no backbones needed): what is
// loaded and what is said, the pixel cache keyed by content (a warm load decodes nothing, a renamed file keeps its
// pixels and its split, an edited file is decoded again), splits of the `splits` layout, duplicates across splits,
// and the square fit the demo page shares with predict.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import { loadFolderDataset, FolderDataset } from '../lib/data/folder-dataset';
import { datasetSplits, describeSplits } from '../lib/data/dataset';
import { sideOf } from '../lib/data/image-set';
import { fitSquare } from '../lib/data/pixels';
import { buildImageFolder, buildSplitFolder, removeFixtures, solid, tmpDir } from './image-folder-fixture';

after(removeFixtures);

const OPTS = { size: 24, fit: 'cover' as const, seed: 42, valFraction: 0.2, testFraction: 0.2, progress: false };

async function load(root: string, cacheDir: string, lines: string[] = []): Promise<FolderDataset> {
  return loadFolderDataset(root, { ...OPTS, cacheDir, log: (l) => lines.push(l) });
}

test('a folder loads with every skipped, rejected and undecodable file said, and the rest at one size', async () => {
  const root = await buildImageFolder();
  // dog needs enough images for a validation and a test image each: add two.
  for (const k of [6, 7]) await solid(20, 20, [k * 10, 50, 50]).png().toFile(path.join(root, 'dog', `d${k}.png`));
  const lines: string[] = [];
  const ds = await load(root, tmpDir('cache-'), lines);
  const text = lines.join('\n');
  assert.deepEqual(ds.classNames, ['Cat', 'bird', 'dog']);
  assert.match(text, /skipped \d+ hidden\/system entries/);
  assert.match(text, /^not used: bird\/notes\.jpg: not an image/m);
  assert.match(text, /^not used: bird\/empty\.png: empty file/m);
  assert.match(text, /^ {2}Cat\/corrupt\.png: corrupt/m);
  assert.match(text, /^ {2}Cat\/truncated\.jpg: corrupt or truncated JPEG/m);
  assert.ok(ds.failed.some((f) => f.rel === 'Cat/truncated.jpg') && ds.failed.some((f) => f.rel === 'Cat/corrupt.png'));
  assert.equal(ds.all.images.length, ds.all.n * 24 * 24 * 3, 'every image at 24x24');
  assert.equal(ds.all.size, 24);
  assert.equal(ds.all.classes, 3);
  assert.equal(ds.files.length, ds.all.n);
  assert.ok(!ds.files.some((f) => /truncated|corrupt|notes|empty|ipynb|MACOSX/.test(f)), 'nothing unusable is in the set');
  assert.equal(ds.stats.decoded, ds.all.n);
  // Each class gave at least one image to validation and one to test.
  for (let c = 0; c < 3; c++) assert.ok(ds.plan.counts.val[c] >= 1 && ds.plan.counts.test[c] >= 1, `class ${ds.classNames[c]}`);
  const splits = datasetSplits(ds, { seed: 42 });
  assert.equal(splits.testLabel, 'test');
  assert.equal(splits.train.n + splits.val.n + splits.testFull.n, ds.all.n);
  assert.match(describeSplits(ds, splits), /3 classes, 24x24 cover\): train \d+, validation \d+ \(held out of the training images\), test \d+ \(held out\)/);
});

test('the pixel cache: warm loads decode nothing, a renamed file keeps its pixels and split, an edited one is decoded again', async () => {
  const root = tmpDir('renames-');
  for (const cls of ['a', 'b']) {
    fs.mkdirSync(path.join(root, cls));
    for (let i = 0; i < 10; i++) await solid(30 + i, 20, cls === 'a' ? [200, i * 20, 0] : [0, i * 20, 200]).png().toFile(path.join(root, cls, `${i}.png`));
  }
  const cache = tmpDir('cache-');
  const cold = await load(root, cache);
  assert.equal(cold.stats.decoded, 20);
  const warm = await load(root, cache);
  assert.deepEqual([warm.stats.decoded, warm.stats.cached], [0, 20]);
  assert.deepEqual(Buffer.from(warm.all.images), Buffer.from(cold.all.images), 'the same pixels from the cache');

  const splitOf = (ds: FolderDataset, rel: string) => (['train', 'val', 'test'] as const).find((s) => ds.plan[s].includes(ds.files.indexOf(rel)));
  const before = Object.fromEntries(cold.files.map((f) => [f, splitOf(cold, f)]));
  fs.renameSync(path.join(root, 'a', '3.png'), path.join(root, 'a', 'renamed.png'));
  await solid(99, 20, [1, 2, 3]).png().toFile(path.join(root, 'b', '5.png')); // edited in place
  const after = await load(root, cache);
  assert.deepEqual([after.stats.decoded, after.stats.cached], [1, 19], 'only the edited file is decoded');
  assert.equal(splitOf(after, 'a/renamed.png'), before['a/3.png'], 'a renamed file keeps its split (placed by its content)');
  for (const f of cold.files.filter((x) => x.startsWith('a/') && x !== 'a/3.png')) assert.equal(splitOf(after, f), before[f], `${f} kept its split`);

  // A cache file of the wrong size is never trusted: it is decoded again (and rewritten).
  const cacheFiles: string[] = [];
  const walk = (d: string): void => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => (e.isDirectory() ? walk(path.join(d, e.name)) : cacheFiles.push(path.join(d, e.name))));
  walk(path.join(cache, 'pixels'));
  fs.truncateSync(cacheFiles[0], 100);
  const again = await load(root, cache);
  assert.deepEqual([again.stats.decoded, again.stats.cached], [1, 19]);
});

test('split folders are used as they are; duplicates across splits and classes are reported', async () => {
  const root = await buildSplitFolder();
  fs.mkdirSync(path.join(root, 'test', 'ant'), { recursive: true });
  fs.mkdirSync(path.join(root, 'test', 'bee'), { recursive: true });
  await solid(16, 16, [5, 5, 5]).png().toFile(path.join(root, 'test', 'ant', 't0.png'));
  await solid(16, 16, [250, 5, 5]).png().toFile(path.join(root, 'test', 'bee', 't1.png'));
  const lines: string[] = [];
  const ds = await load(root, tmpDir('cache-'), lines);
  assert.deepEqual(ds.plan.carved, { val: false, test: false });
  assert.deepEqual([ds.plan.train.length, ds.plan.val.length, ds.plan.test.length], [8, 4, 2]);
  const text = lines.join('\n');
  assert.match(text, /\(from the split folders\)/);
  assert.match(text, /^duplicates: 2 groups of identical images, 2 across splits or classes/m);
  assert.match(text, /same pixels in train and val: train\/ant\/a0\.png, val\/ant\/copy\.webp/);
  assert.match(text, /same pixels within train, labelled ant and bee: train\/ant\/a1\.png, train\/bee\/b3\.png/);
});

test('a folder without class folders, or with one, is refused in one line', async () => {
  const empty = tmpDir('empty-');
  await assert.rejects(load(empty, tmpDir('cache-')), /found 0 class folders; a classifier needs at least 2, one subfolder of images per class/);
  const one = tmpDir('one-');
  fs.mkdirSync(path.join(one, 'cat'));
  await sharp({ create: { width: 8, height: 8, channels: 3, background: 'red' } }).png().toFile(path.join(one, 'cat', 'a.png'));
  await assert.rejects(load(one, tmpDir('cache-')), /found 1 class folder \(cat\/\); a classifier needs at least 2/);
});

test('fitSquare crops the centre (cover) or pads with black (contain), as libvips does', async () => {
  // 4x2: columns 0..3 with values 10, 20, 30, 40.
  const img = { width: 4, height: 2, data: Uint8Array.from({ length: 24 }, (_, i) => 10 * (Math.floor(i / 3) % 4 + 1)) };
  const cover = fitSquare(img, 'cover');
  assert.deepEqual([cover.width, cover.height], [2, 2]);
  assert.deepEqual(Array.from(cover.data.filter((_, i) => i % 3 === 0)), [20, 30, 20, 30]);
  const contain = fitSquare(img, 'contain');
  assert.deepEqual([contain.width, contain.height], [4, 4]);
  assert.deepEqual(Array.from(contain.data.filter((_, i) => i % 3 === 0)), [0, 0, 0, 0, 10, 20, 30, 40, 10, 20, 30, 40, 0, 0, 0, 0]);
  // The same as sharp's own crop and pad at the same size (no resampling involved).
  const raw = Buffer.from(img.data);
  const viaSharp = await sharp(raw, { raw: { width: 4, height: 2, channels: 3 } }).resize(2, 2, { fit: 'cover', position: 'centre' }).raw().toBuffer();
  assert.deepEqual(Array.from(viaSharp), Array.from(cover.data));
});

test('sideOf reads the side from a buffer and a count, and refuses what is not n square images', () => {
  assert.equal(sideOf(5 * 3072, 5), 32);
  assert.equal(sideOf(2 * 160 * 160 * 3, 2), 160);
  assert.equal(sideOf(0, 0), 32);
  assert.throws(() => sideOf(12288, 5), /12288 bytes is not 5 square RGB images \(expected n=5 x size x size x 3 bytes/);
  assert.throws(() => sideOf(3 * 32 * 16 * 3, 3), /not 3 square RGB images/);
});
