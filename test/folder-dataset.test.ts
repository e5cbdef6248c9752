// Your own images through the real entry points: a folder of class subfolders (CIFAR-10 photos re-encoded at varied
// sizes in seven formats, plus corrupt, empty, text and hidden files) goes through `npm start -- --dataset <folder>`
// (frozen everywhere, fine-tuning on tensorflow), is saved with its class names and input size, and `npm run predict`
// names the folder's classes. Warm reruns decode and extract nothing; new images cost only themselves; bad settings
// fail in one line with a non-zero exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { PROJECT_ROOT } from '../lib/settings/paths';

const TS_NODE = require.resolve('ts-node/register/transpile-only');
const HAVE_DATA = !!process.env.CIFAR10_DIR && !!process.env.BACKBONES_DIR;
const backend = process.env.TFJS_BACKEND ?? 'tensorflow';
const skip = HAVE_DATA ? false : 'SKIPPED: set CIFAR10_DIR and BACKBONES_DIR';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'folder-dataset-'));
const folder = path.join(work, 'pets');
const models = path.join(work, 'models');
const SETTINGS: Record<string, string> = {
  RESOLUTION: '96', SWEEP_EPOCHS: '1', EPOCHS: '3', FINE_TUNE_EPOCHS: '1', TRAINABLE_BLOCKS: '0,0',
  DATA_DIR: path.join(work, 'data'), MODELS_DIR: models, TFJS_BACKEND: backend,
};

function run(name: string, args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, ['-r', TS_NODE, path.join(PROJECT_ROOT, 'scripts', `${name}.ts`), ...args], {
    cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 600_000, maxBuffer: 64 << 20, env: { ...process.env, INIT_CWD: undefined, ...SETTINGS, ...env },
  });
  return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '', out: `${r.stdout}\n${r.stderr}` };
}

/** The run's "features: N image-views computed now, M read from the cache" line, as [N, M]. */
function computed(out: string): [number, number] {
  const m = /^(?:features|cached data): ([\d,]+) image-views computed now, ([\d,]+) read from the cache/m.exec(out);
  assert.ok(m, `no cache line in:\n${out.slice(0, 3000)}`);
  return [Number(m[1].replace(/,/g, '')), Number(m[2].replace(/,/g, ''))];
}

test('a folder of class subfolders goes through npm start, predict and a warm rerun', { skip, timeout: 1_200_000 }, async (t) => {
  const made = run('make-image-folder', ['--out', folder, '--per-class', '24', '--classes', 'cat,ship,truck', '--bad']);
  assert.equal(made.status, 0, made.out);

  const first = run('main', ['--dataset', folder]);
  assert.equal(first.status, 0, first.out.slice(-3000));
  const out = first.stdout;
  // What was not used, each with its reason; hidden entries in one line; the run went on.
  assert.match(out, /^skipped 3 hidden\/system entries.*\.ipynb_checkpoints\/ ×2, \.DS_Store ×1/m);
  assert.match(out, /^not used: cat\/notes\.txt: not an image: looks like text/m);
  assert.match(out, /^not used: ship\/README\.jpg: not an image/m);
  assert.match(out, /^not used: truck\/empty\.jpg: empty file \(0 bytes\)/m);
  assert.match(out, /^ {2}cat\/truncated\.jpg: corrupt or truncated JPEG \(.+\)$/m);
  assert.match(out, /^ {2}ship\/corrupt\.png: corrupt/m);
  assert.match(out, /^images: 72 loaded at 96x96 \(cover\) — 72 decoded and resized now, 0 from the pixel cache/m);
  // Stratified: each class gives 15% (4 of 24) to validation and to test.
  assert.match(out, /^cat +16 +4 +4$/m);
  assert.match(out, /^total +48 +12 +12$/m);
  assert.match(out, /^split +images +accuracy/m);
  assert.match(out, /^validation +12 /m);
  assert.match(out, /^test +12 /m);
  const acc = Number(/^validation +12 +([\d.]+)%/m.exec(out)?.[1]);
  t.diagnostic(`validation accuracy on 12 images of 3 classes: ${acc}%`);
  assert.ok(acc > 40, `a frozen ImageNet backbone separates cats, ships and trucks better than chance (${acc}%)`);

  // The saved model says what it is: its classes, its input size, its dataset.
  const id = JSON.parse(fs.readFileSync(path.join(models, 'current.json'), 'utf8')).id;
  const meta = JSON.parse(fs.readFileSync(path.join(models, id, 'metadata.json'), 'utf8'));
  assert.deepEqual(meta.classNames, ['cat', 'ship', 'truck']);
  assert.equal(meta.imageSize, 96);
  assert.deepEqual(meta.dataset, { kind: 'folder', name: 'pets', fit: 'cover' });
  assert.equal(meta.config.dataset, folder, 'the folder is recorded by its absolute path');

  // predict: a held-out photo (a CIFAR ship from beyond the folder's images, as a 500x333 WebP) gets the folder's names.
  const { loadCifar10 } = await import('../lib/data/cifar10');
  const data = await loadCifar10({ download: false });
  const ships = [];
  for (let i = data.test.n - 1; i >= 0 && ships.length < 1; i--) if (data.test.labels[i] === 8) ships.push(i);
  const photo = path.join(work, 'held-out-ship.webp');
  await sharp(Buffer.from(data.test.images.subarray(ships[0] * 3072, (ships[0] + 1) * 3072)), { raw: { width: 32, height: 32, channels: 3 } })
    .resize(500, 333, { fit: 'fill' }).webp().toFile(photo);
  const predicted = run('predict', [photo, path.join(folder, 'cat', 'truncated.jpg')]);
  assert.equal(predicted.status, 1, 'one file failed, so the exit status is 1');
  assert.match(predicted.stdout, /held-out-ship\.webp: (cat|ship|truck) [\d.]+%, (cat|ship|truck) [\d.]+%, (cat|ship|truck) [\d.]+%/);
  assert.match(predicted.stderr, /truncated\.jpg: corrupt or truncated JPEG/);
  assert.match(predicted.stderr, /3 classes of pets \(cat, ship, truck; 96x96 cover\)/);

  // Warm: nothing decoded, nothing extracted, the same table.
  const warm = run('main', ['--dataset', folder]);
  assert.equal(warm.status, 0, warm.out.slice(-3000));
  assert.match(warm.stdout, /— 0 decoded and resized now, 72 from the pixel cache/);
  const [none, all] = computed(warm.stdout);
  assert.equal(none, 0, 'every feature came from the cache');
  assert.equal(all, computed(out)[0], 'as many read as the first run computed');
  const table = (s: string) => s.slice(s.indexOf('==== summary')).split('\n').filter((l) => /^(validation|test) /.test(l)).join('\n');
  assert.equal(table(warm.stdout), table(out), 'the same numbers');

  // Three new photos: only they are decoded; only their features are computed (per backbone and view).
  for (const [i, cls] of [[5, 'cat'], [6, 'ship'], [7, 'truck']] as const) {
    const src = path.join(folder, cls, fs.readdirSync(path.join(folder, cls)).find((f) => /_\d{5}\.(png|jpg|webp)$/.test(f))!); // one the generator made
    await sharp(src).flop().rotate(i).jpeg().toFile(path.join(folder, cls, `new-${i}.jpg`));
  }
  const more = run('main', ['--dataset', folder]);
  assert.equal(more.status, 0, more.out.slice(-3000));
  assert.match(more.stdout, /^images: 75 loaded at 96x96 \(cover\) — 3 decoded and resized now, 72 from the pixel cache/m);
  const [c] = computed(more.stdout);
  t.diagnostic(`after adding 3 images: ${c} feature rows computed (2 backbones x their views)`);
  assert.ok(c > 0 && c <= 3 * 2 * 2, `only the new images are extracted (${c} rows for 3 images, 2 backbones, at most 2 views)`);
});

test('fine-tuning on a folder (tensorflow backend)', { skip: skip || (backend !== 'tensorflow' ? `fine-tuning needs the tensorflow backend (${backend} in use)` : false), timeout: 900_000 }, () => {
  const r = run('main', ['--dataset', folder, '--trainable-blocks', '0,1']);
  assert.equal(r.status, 0, r.out.slice(-3000));
  assert.match(r.stdout, /^regime: fine-tune mobilenet_v2 top 1 /m);
  const id = JSON.parse(fs.readFileSync(path.join(models, 'current.json'), 'utf8')).id;
  const meta = JSON.parse(fs.readFileSync(path.join(models, id, 'metadata.json'), 'utf8'));
  assert.deepEqual(meta.regime.trainableBlocks, [0, 1]);
  assert.equal(meta.classNames.length, 3);
  assert.match(r.stdout, /end-to-end model vs head on cached features: max \|dp\| = /);
});

test('bad dataset settings fail in one line, before any work', { skip }, () => {
  const missing = run('main', ['--dataset', path.join(work, 'no-such-folder')]);
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /^error: --dataset .*no-such-folder: no such folder \(expected cifar10, or a folder with one subfolder of images per class\)$/m);

  const one = path.join(work, 'one-class');
  fs.mkdirSync(path.join(one, 'cat'), { recursive: true });
  fs.copyFileSync(path.join(folder, 'cat', fs.readdirSync(path.join(folder, 'cat')).find((f) => /_\d{5}\.png$/.test(f))!), path.join(one, 'cat', 'a.png'));
  const single = run('main', ['--dataset', one]);
  assert.notEqual(single.status, 0);
  assert.match(single.stderr, /^error: .*one-class: found 1 class folder \(cat\/\); a classifier needs at least 2, one subfolder of images per class$/m);

  const tiny = path.join(work, 'tiny');
  for (const [cls, n] of [['cat', 5], ['ship', 2]] as const) {
    fs.mkdirSync(path.join(tiny, cls), { recursive: true });
    const srcs = fs.readdirSync(path.join(folder, cls)).filter((f) => /_\d{5}\.(png|jpg)$/.test(f)).slice(0, n); // decodable ones
    for (const f of srcs) fs.copyFileSync(path.join(folder, cls, f), path.join(tiny, cls, f));
  }
  const few = run('main', ['--dataset', tiny]);
  assert.notEqual(few.status, 0);
  assert.match(few.stderr, /too few images to hold out validation and test per class .*class "ship" has 2/);
  assert.doesNotMatch(few.stderr, /class "cat"/, 'only the classes that are short are named');
});
