// Failures that must not lie: the reliability suite. Each case builds its own fixtures (a stand-in backbone, a
// synthetic CIFAR-10 folder, broken copies, read-only mounts), runs the real entry points as a user would, and
// asserts the exit status, the one-line message, and that finished work survives.
import { test, before, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BACKBONES } from '../lib/features/backbones';
import { RECORD_BYTES, TEST_FILE, TRAIN_FILES, META_FILE } from '../lib/data/cifar10';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { writeFakeBackbone } from './fake-backbone';

const TS_NODE = require.resolve('ts-node/register/transpile-only');
const MAIN = path.join(PROJECT_ROOT, 'scripts', 'main.ts');
const PREDICT = path.join(PROJECT_ROOT, 'scripts', 'predict.ts');
const SMALL = ['--backbones', 'mobilenet_v1_0.75', '--train-limit', '200', '--val-limit', '100', '--test-limit', '100', '--epochs', '1', '--sweep-epochs', '0', '--lr', '0.001', '--dropout', '0.3', '--tta', '0'];
const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

let cifarDir: string;
let backbonesDir: string;
let work: string;

/** A full-size CIFAR-10 folder (the loader insists on 10,000 records per file) of cheap synthetic images. */
function writeSyntheticCifar(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  [...TRAIN_FILES, TEST_FILE].forEach((f, b) => {
    const buf = Buffer.alloc(10000 * RECORD_BYTES);
    for (let i = 0; i < 10000; i++) {
      const label = (i + b) % 10;
      const o = i * RECORD_BYTES;
      buf[o] = label;
      // Class-dependent colour plus a per-image ramp: images differ, classes are learnable.
      for (let p = 0; p < 1024; p++) {
        buf[o + 1 + p] = (label * 25 + p) % 256;
        buf[o + 1025 + p] = (i * 7 + p) % 256;
        buf[o + 2049 + p] = (label * 40 + (p >> 5)) % 256;
      }
    }
    fs.writeFileSync(path.join(dir, f), buf);
  });
  fs.writeFileSync(path.join(dir, META_FILE), CLASSES.join('\n') + '\n');
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'reliability-'));
  cifarDir = path.join(work, 'cifar-10-batches-bin');
  writeSyntheticCifar(cifarDir);
  backbonesDir = await writeFakeBackbone(path.join(work, 'backbones'));
});

interface Run { status: number | null; stdout: string; stderr: string }

function run(script: string, args: string[], env: Record<string, string | undefined> = {}, cwd = PROJECT_ROOT): Run {
  const r = spawnSync(process.execPath, ['-r', TS_NODE, script, ...args], {
    cwd, encoding: 'utf8', timeout: 180_000,
    // Every run writes into the suite's temp folder unless a case says otherwise, never into the project.
    env: { ...process.env, CIFAR10_DIR: cifarDir, BACKBONES_DIR: backbonesDir, INIT_CWD: undefined, DATA_DIR: path.join(work, 'data'), MODELS_DIR: path.join(work, 'models'), ...env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const lastError = (r: Run) => r.stderr.split('\n').filter((l) => l.startsWith('error:')).pop() ?? `(no error line; stderr: ${r.stderr.slice(-300)})`;

/** A read-only view of `dir` through a bind mount (root only); undefined when this machine does not allow it. */
function readOnlyMount(dir: string): { path: string; release: () => void } | undefined {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'ro-'));
  const ok = spawnSync('mount', ['--bind', dir, mnt]).status === 0 && spawnSync('mount', ['-o', 'remount,bind,ro', mnt]).status === 0;
  if (!ok) {
    spawnSync('umount', [mnt]);
    return undefined;
  }
  return { path: mnt, release: () => void spawnSync('umount', [mnt]) };
}
const NO_MOUNT = 'read-only bind mounts need root (mount --bind, remount ro); this process cannot make one';

test('a backbone that breaks inside the extractor fails the run with a non-zero exit, 20 times in 20', () => {
  // The first backbone is fine; the second's files are all there but its topology lacks the layer the extractor
  // pools, which surfaces inside a feature worker (wasm) or the graph loader (tensorflow), after the first
  // backbone's features exist.
  const broken = path.join(work, 'broken-backbones');
  fs.cpSync(backbonesDir, broken, { recursive: true });
  const v1 = path.join(broken, BACKBONES['mobilenet_v1_0.75'].folder);
  const v2 = path.join(broken, BACKBONES.mobilenet_v2.folder);
  fs.cpSync(v1, v2, { recursive: true });
  for (let i = 0; i < 20; i++) {
    // The frozen regime: extraction runs backbone by backbone (auto would probe both backbones before any features).
    const r = run(MAIN, [...SMALL, '--backbones', 'mobilenet_v1_0.75,mobilenet_v2', '--trainable-blocks', '0,0'], {
      BACKBONES_DIR: broken, DATA_DIR: path.join(work, `race-${i}`), MODELS_DIR: path.join(work, `race-model-${i}`),
    });
    assert.notEqual(r.status, 0, `run ${i + 1}: exit status ${r.status} after: ${lastError(r)}`);
    assert.match(lastError(r), /^error: backbone mobilenet_v2: layer out_relu not found in model\.json$/, `run ${i + 1}`);
    assert.match(r.stdout + r.stderr, /features mobilenet_v1_0\.75/, 'the first backbone ran');
    assert.ok(!fs.existsSync(path.join(work, `race-model-${i}`, 'model.json')), 'no model saved from a failed run');
  }
});

test('a read-only MODELS_DIR fails at once, naming the folder, before any data is loaded', (t) => {
  const target = fs.mkdtempSync(path.join(os.tmpdir(), 'model-'));
  const ro = readOnlyMount(target);
  if (!ro) return t.skip(NO_MOUNT);
  try {
    const r = run(MAIN, SMALL, { MODELS_DIR: path.join(ro.path, 'cifar10'), DATA_DIR: path.join(work, 'ro-model-data') });
    assert.equal(r.status, 1);
    assert.match(lastError(r), new RegExp(`^error: MODELS_DIR ${ro.path}/cifar10 is not writable \\(`));
    assert.doesNotMatch(r.stdout, /^data: /m, 'it stopped before loading data'); // structural, not timed: CI machines are noisy
  } finally {
    ro.release();
  }
});

test('a read-only warm DATA_DIR is used for reading: same results, a note, exit 0', (t) => {
  const data = path.join(work, 'warm-data');
  const first = run(MAIN, SMALL, { DATA_DIR: data, MODELS_DIR: path.join(work, 'warm-model-1') });
  assert.equal(first.status, 0, lastError(first));
  const ro = readOnlyMount(data);
  if (!ro) return t.skip(NO_MOUNT);
  try {
    const second = run(MAIN, SMALL, { DATA_DIR: ro.path, MODELS_DIR: path.join(work, 'warm-model-2') });
    assert.equal(second.status, 0, lastError(second));
    assert.match(second.stdout, /note: DATA_DIR .* is not writable: its feature cache is read/);
    const table = (s: string) => s.split('\n').filter((l) => /^(validation|test 0-999)/.test(l)).join('\n');
    assert.ok(table(first.stdout).length > 0);
    assert.equal(table(second.stdout), table(first.stdout));
    const computing = /features mobilenet_v1_0\.75 160px/;
    assert.match(first.stdout + first.stderr, computing, 'the first run computed features');
    assert.doesNotMatch(second.stdout + second.stderr, computing, 'the second run computed none: all came from the read-only cache');
    assert.match(second.stderr, /note: run log in .* not saved/);
    const id = JSON.parse(fs.readFileSync(path.join(work, 'warm-model-2', 'current.json'), 'utf8')).id;
    assert.ok(fs.existsSync(path.join(work, 'warm-model-2', id, 'model.json')), 'the model was saved');
  } finally {
    ro.release();
  }
});

test('CIFAR10_DIR pointing at a file says "not a folder"', () => {
  const r = run(MAIN, SMALL, { CIFAR10_DIR: path.join(cifarDir, 'data_batch_1.bin'), DATA_DIR: path.join(work, 'file-data') });
  assert.equal(r.status, 1);
  assert.match(lastError(r), /^error: CIFAR10_DIR .*data_batch_1\.bin: not a folder/);
});

test('a model whose metadata.json is {} gets one clear line from predict', () => {
  const data = path.join(work, 'meta-data');
  const model = path.join(work, 'meta-model');
  assert.equal(run(MAIN, SMALL, { DATA_DIR: data, MODELS_DIR: model }).status, 0);
  const current = JSON.parse(fs.readFileSync(path.join(model, 'current.json'), 'utf8')).id;
  fs.writeFileSync(path.join(model, current, 'metadata.json'), '{}');
  const img = path.join(work, 'x.png');
  fs.copyFileSync(path.join(PROJECT_ROOT, 'package.json'), img); // never read: metadata fails first
  const r = run(PREDICT, [img], { MODELS_DIR: model, DATA_DIR: data });
  assert.equal(r.status, 1);
  assert.match(lastError(r), /metadata\.json: bad model metadata: "backbones" should be a non-empty list/);
});

test('relative paths are resolved against the folder the user typed them in (INIT_CWD under npm)', () => {
  const data = path.join(work, 'cwd-data');
  const elsewhere = fs.mkdtempSync(path.join(os.tmpdir(), 'elsewhere-'));
  const r1 = run(MAIN, SMALL, { DATA_DIR: data, MODELS_DIR: 'my-model', INIT_CWD: elsewhere });
  assert.equal(r1.status, 0, lastError(r1));
  const id = JSON.parse(fs.readFileSync(path.join(elsewhere, 'my-model', 'current.json'), 'utf8')).id;
  assert.ok(fs.existsSync(path.join(elsewhere, 'my-model', id, 'model.json')), 'MODELS_DIR=my-model landed in the caller\'s folder');
  // The saved model records the resolved settings, typed.
  const meta = JSON.parse(fs.readFileSync(path.join(elsewhere, 'my-model', id, 'metadata.json'), 'utf8'));
  assert.deepEqual([meta.config.trainLimit, meta.config.backbones, meta.config.tta, meta.config.lr], [200, ['mobilenet_v1_0.75'], false, 0.001]);
  // An image given relative to the caller's folder is found there, not in the project.
  const { PNG } = require('pngjs');
  const png = new PNG({ width: 32, height: 32 });
  png.data.fill(128);
  fs.writeFileSync(path.join(elsewhere, 'grey.png'), PNG.sync.write(png));
  const r2 = run(PREDICT, ['grey.png'], { MODELS_DIR: 'my-model', INIT_CWD: elsewhere, DATA_DIR: data });
  assert.equal(r2.status, 0, lastError(r2));
  assert.match(r2.stdout, /^grey\.png: \w+ \d+\.\d%/m);
});

test('two runs sharing one DATA_DIR share the work and agree', async () => {
  const cache = path.join(work, 'shared-cache');
  const code = `
    const { extractFeatures } = require(${JSON.stringify(path.join(PROJECT_ROOT, 'lib', 'features', 'features'))});
    const { loadCifar10 } = require(${JSON.stringify(path.join(PROJECT_ROOT, 'lib', 'data', 'cifar10'))});
    const crypto = require('crypto');
    (async () => {
      const c = await loadCifar10({ download: false });
      const n = 6000, images = c.train.images.subarray(0, n * 3072);
      const f = await extractFeatures({ images, n }, { backbone: 'mobilenet_v1_0.75', resolution: 32, cacheDir: ${JSON.stringify(cache)}, progress: false, workers: 0 });
      console.log(JSON.stringify({ computed: f.stats.computed, cached: f.stats.cached, md5: crypto.createHash('md5').update(Buffer.from(f.data.buffer)).digest('hex') }));
      process.exit(0);
    })().catch((e) => { console.error(e.message); process.exit(1); });`;
  const child = () =>
    new Promise<{ computed: number; cached: number; md5: string }>((resolve, reject) => {
      const p = spawn(process.execPath, ['-r', TS_NODE, '-e', code], { env: { ...process.env, CIFAR10_DIR: cifarDir, BACKBONES_DIR: backbonesDir } });
      let out = '';
      let err = '';
      p.stdout.on('data', (d) => (out += d));
      p.stderr.on('data', (d) => (err += d));
      p.on('exit', (status) => (status === 0 ? resolve(JSON.parse(out.trim().split('\n').pop()!)) : reject(new Error(`child failed: ${err.slice(-400)}`))));
    });
  const [a, b] = await Promise.all([child(), child()]);
  assert.equal(a.md5, b.md5, 'both runs got the same features');
  assert.equal(a.computed + a.cached, 6000);
  assert.equal(b.computed + b.cached, 6000);
  // 6,000 images are 3 chunks: together they computed each chunk once (not 12,000 images).
  assert.ok(a.computed + b.computed <= 6000, `computed ${a.computed} + ${b.computed}`);
  assert.deepEqual(fs.readdirSync(path.join(cache, 'features', 'mobilenet_v1_0.75')).length, 1);
});

test('a cold read-only DATA_DIR costs only the caching: the run finishes, says so, and saves its model', (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'empty-data-'));
  const ro = readOnlyMount(empty);
  if (!ro) return t.skip(NO_MOUNT);
  try {
    const model = path.join(work, 'cold-ro-model');
    const r = run(MAIN, SMALL, { DATA_DIR: ro.path, MODELS_DIR: model });
    assert.equal(r.status, 0, lastError(r));
    assert.match(r.stdout, /note: DATA_DIR .* is not writable/);
    assert.match(r.stderr, /note: feature cache in .* not saved \(.*\); continuing without it/);
    const id = JSON.parse(fs.readFileSync(path.join(model, 'current.json'), 'utf8')).id;
    assert.ok(fs.existsSync(path.join(model, id, 'model.json')), 'the model was saved');
  } finally {
    ro.release();
  }
});

describe('saving the classifier', () => {
  let setup: Awaited<ReturnType<typeof trainSmall>>;
  before(async () => {
    setup = await trainSmall();
  });

  /** A small trained head on stand-in features, everything saveClassifier needs. */
  async function trainSmall() {
    const { initBackend } = await import('../lib/engine/backend');
    const { loadCifar10 } = await import('../lib/data/cifar10');
    const { evaluateHead, experimentSplits, featuresFor, EXPERIMENT } = await import('../lib/experiment/pipeline');
    const { trainHead } = await import('../lib/train/training-loop');
    const { initRuntimeContext } = await import('../lib/settings/context');
    initRuntimeContext({ ...process.env, CIFAR10_DIR: cifarDir, BACKBONES_DIR: backbonesDir });
    await initBackend({ log: () => {} });
    const data = await loadCifar10({ download: false });
    const p = { ...EXPERIMENT, backbones: ['mobilenet_v1_0.75' as const], resolution: 32, trainLimit: 200, valLimit: 100, testLimit: 100, tta: false };
    const splits = experimentSplits(data, p);
    const fo = { backbones: ['mobilenet_v1_0.75' as const], resolution: 32, backbonesDir, cacheDir: path.join(work, 'save-cache'), progress: false };
    const train = await featuresFor(splits.train, ['plain'], fo);
    const val = await featuresFor(splits.val, ['plain'], fo);
    const test = await featuresFor(splits.testFull, ['plain'], fo);
    const res = await trainHead(train, val, { epochs: 1, lr: 0.001, dropout: 0.3 }, { progress: false });
    const evals = await evaluateHead(res.head, val, test, splits);
    return { p, splits, test, evals, head: res.head };
  }
  const save = async (dir: string, test = setup.test) => {
    const { saveClassifier } = await import('../lib/experiment/pipeline');
    return saveClassifier({ head: setup.head, params: setup.p, splits: setup.splits, test, evals: setup.evals, training: {}, dir });
  };

  test('a saved model that disagrees with its cached features fails the save, and the previous model stays', async () => {
    const dir = path.join(work, 'check-model');
    const good = await save(dir);
    assert.ok(good.maxDiff < 1e-4, `agreement ${good.maxDiff}`);
    const before = fs.readFileSync(path.join(dir, 'weights.bin'));
    // Features that did not come from these weights (as a stale cache would serve): every value halved.
    const stale = { ...setup.test, views: setup.test.views.map((v) => v.map((x) => x * 0.5)) };
    await assert.rejects(save(dir, stale), /the saved model disagrees with the head on cached features \(max \|dp\| = .* > 0\.001 on 16 test images\).*not saved/);
    assert.deepEqual(fs.readFileSync(path.join(dir, 'weights.bin')), before, 'the previous model is untouched');
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('.staging')), [], 'no staging folder left');
  });

  test('a model folder that turns read-only after the up-front check: the model is rescued, not lost', async (t) => {
    const target = fs.mkdtempSync(path.join(os.tmpdir(), 'late-'));
    const ro = readOnlyMount(target);
    if (!ro) return t.skip(NO_MOUNT);
    try {
      const err = await save(ro.path).then(() => undefined, (e: Error) => e);
      assert.ok(err, 'the save must fail');
      const m = /could not save the model \((\w+)\); it was saved to (\S+) instead$/.exec(err!.message);
      assert.ok(m, err!.message);
      assert.ok(fs.existsSync(path.join(m![2], 'model.json')) && fs.existsSync(path.join(m![2], 'metadata.json')), 'rescued files exist');
    } finally {
      ro.release();
    }
  });
});
