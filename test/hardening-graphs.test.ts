// Frozen-graph caches are never shared or trusted blindly. With DATA_DIR not writable, graphs used to go to the fixed
// /tmp/cifar10-graphs/: a second user failed with EACCES when another had made it first, and anyone could plant a
// graph there for us to run. Now the fallback is a private mkdtemp folder (0700, ours, removed at exit), and a cached
// graph is loaded only when its saved_model.pb matches the sha256 written beside it.
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { ensureSavedModel, ensureSavedModelDir, GRAPH_HASH_FILE, loadFrozenGraph, privateGraphRoot, savedModelMismatch } from '../lib/engine/graph';
import { backboneArtifacts } from '../lib/features/backbones';
import { RECORD_BYTES, TEST_FILE, TRAIN_FILES, META_FILE } from '../lib/data/cifar10';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { writeFakeBackbone } from './fake-backbone';

const SHARED = path.join(os.tmpdir(), 'cifar10-graphs');
const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

/** Say loudly why a case did not run (node's own skip line is easy to miss in a long run). */
function skipLoudly(t: { skip: (m: string) => void }, why: string): void {
  console.log(`SKIPPED: ${why}`);
  t.skip(why);
}

let onTensorflow = false;
before(async () => {
  onTensorflow = (await initBackend({ log: () => {} })).name === 'tensorflow';
});

/** A root under a regular file: unwritableReason says "a parent is not a folder" even for root. */
function unwritableRoot(): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'graphs-ro-')), 'a-file');
  fs.writeFileSync(file, '');
  return path.join(file, 'graphs');
}

test('an unwritable cache root falls back to a private folder: mode 0700, ours, the same for the whole process', () => {
  const bytes = () => Buffer.from('not really a graph, but bytes with a hash');
  const dir = ensureSavedModelDir('fallback-k1', unwritableRoot(), bytes);
  const priv = privateGraphRoot();
  assert.equal(path.dirname(dir), priv, 'the graph is in the private folder');
  assert.notEqual(priv, SHARED);
  const st = fs.statSync(priv);
  assert.equal(st.mode & 0o777, 0o700, `mode ${(st.mode & 0o777).toString(8)}`);
  assert.equal(st.uid, process.getuid!());
  assert.equal(path.dirname(ensureSavedModelDir('fallback-k2', unwritableRoot(), bytes)), priv, 'one private folder per process');
  assert.equal(savedModelMismatch(dir), undefined, 'written with its hash');
});

test('a cached graph whose bytes do not match its hash is rebuilt with one note; one without a hash file silently', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'graphs-hash-'));
  const ours = Buffer.from('the graph this code writes');
  const dir = ensureSavedModelDir('k', root, () => ours);
  assert.match(fs.readFileSync(path.join(dir, GRAPH_HASH_FILE), 'utf8'), /^[0-9a-f]{64}  saved_model\.pb\n$/);

  fs.writeFileSync(path.join(dir, 'saved_model.pb'), 'a planted graph');
  assert.match(savedModelMismatch(dir) ?? '', /^saved_model\.pb has sha256 [0-9a-f]{16}…, saved_model\.pb\.sha256 records [0-9a-f]{16}…$/);
  const notes: string[] = [];
  assert.equal(ensureSavedModelDir('k', root, () => ours, (l) => notes.push(l)), dir);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'saved_model.pb')), ours, 'the planted bytes were replaced');
  assert.equal(notes.length, 1);
  assert.match(notes[0], new RegExp(`^note: cached graph ${dir} does not match its hash \\(.*\\); rebuilding it$`));

  fs.rmSync(path.join(dir, GRAPH_HASH_FILE));
  fs.writeFileSync(path.join(dir, 'saved_model.pb'), 'an old or planted graph without a hash');
  assert.equal(ensureSavedModelDir('k', root, () => ours, (l) => notes.push(l)), dir);
  assert.deepEqual(fs.readFileSync(path.join(dir, 'saved_model.pb')), ours);
  assert.equal(notes.length, 1, 'no note for a folder that only predates hash files');
  assert.deepEqual(fs.readdirSync(root), ['k'], 'no temp or stale folders left');
});

test('loadFrozenGraph refuses a graph folder whose saved_model.pb was swapped after it was written', async (t) => {
  if (!onTensorflow) return skipLoudly(t, `frozen graphs run only on the tensorflow backend (this run: ${tf.getBackend()})`);
  const a = await backboneArtifacts('mobilenet_v1_0.75', { dir: await writeFakeBackbone() });
  const dir = ensureSavedModel({ ...a, resizeTo: 32 }, fs.mkdtempSync(path.join(os.tmpdir(), 'graphs-swap-')), 'fake');
  (await loadFrozenGraph(dir)).dispose(); // the genuine one loads
  const pb = path.join(dir, 'saved_model.pb');
  const bytes = fs.readFileSync(pb);
  bytes[bytes.length - 1] ^= 1;
  fs.writeFileSync(pb, bytes);
  await assert.rejects(loadFrozenGraph(dir), (err: Error) => {
    assert.match(err.message, new RegExp(`^graph: refusing to load ${dir}: saved_model\\.pb has sha256 [0-9a-f]{16}…, .* records [0-9a-f]{16}…$`));
    return true;
  });
});

/** A full-size CIFAR-10 folder (the loader insists on 10,000 records per file) of cheap synthetic images. */
function writeSyntheticCifar(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  [...TRAIN_FILES, TEST_FILE].forEach((f, b) => {
    const buf = Buffer.alloc(10000 * RECORD_BYTES);
    for (let i = 0; i < 10000; i++) {
      const label = (i + b) % 10;
      const o = i * RECORD_BYTES;
      buf[o] = label;
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

const NOBODY = 65534;
const ourFallbacks = (uid: number) => fs.readdirSync(os.tmpdir()).filter((f) => f.startsWith('cifar10-graphs-') && fs.statSync(path.join(os.tmpdir(), f)).uid === uid);

/**
 * A second user's run, with root's /tmp/cifar10-graphs already there and DATA_DIR root's (so not writable by
 * nobody): `run(env)` runs the entry point as nobody; the checks are the same whichever entry point it is.
 */
async function asSecondUser(t: { skip: (m: string) => void }, run: (work: string, env: Record<string, string | undefined>) => { status: number | null; stdout: string; stderr: string } | undefined): Promise<void> {
  if (process.getuid!() !== 0) return skipLoudly(t, 'needs root to run the entry point as a second user (nobody) via setpriv');
  if (spawnSync('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'true']).status !== 0) return skipLoudly(t, 'setpriv cannot switch to nobody here');
  if (!onTensorflow) return skipLoudly(t, `frozen graphs are written only on the tensorflow backend (this run: ${tf.getBackend()})`);
  // Root's shared folder, as another user's earlier run would have left it (removed again only if we made it).
  const madeShared = !fs.existsSync(SHARED);
  if (madeShared) fs.mkdirSync(SHARED, { mode: 0o755 });
  const sharedBefore = fs.readdirSync(SHARED);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-graphs-'));
  try {
    fs.chmodSync(work, 0o755); // nobody must read the fixtures
    writeSyntheticCifar(path.join(work, 'cifar'));
    const backbones = await writeFakeBackbone(path.join(work, 'backbones'));
    const readOnlyData = path.join(work, 'data'); // root's, 0755: not writable by nobody
    fs.mkdirSync(readOnlyData, { mode: 0o755 });
    for (const d of ['home', 'model', 'models']) {
      fs.mkdirSync(path.join(work, d));
      fs.chownSync(path.join(work, d), NOBODY, NOBODY);
    }
    const fallbacksBefore = ourFallbacks(NOBODY);
    const r = run(work, {
      ...process.env, HOME: path.join(work, 'home'), npm_config_cache: path.join(work, 'home', '.npm'), INIT_CWD: undefined,
      CIFAR10_DIR: path.join(work, 'cifar'), BACKBONES_DIR: backbones, DATA_DIR: readOnlyData, MODEL_DIR: path.join(work, 'model'), MODELS_DIR: path.join(work, 'models'),
    });
    if (!r) return;
    const out = r.stdout + r.stderr;
    // The feature cache's own "not saved (EACCES ...)" note is expected (DATA_DIR is read-only); a graph must not fail.
    assert.doesNotMatch(out, /^error:/m);
    assert.deepEqual(out.split('\n').filter((l) => /EACCES/.test(l) && !/^note: (feature cache|run log) .* not saved/.test(l)), []);
    assert.equal(r.status, 0, out.slice(-600));
    const saved = ['model', 'models'].flatMap((d) => fs.readdirSync(path.join(work, d), { recursive: true }) as string[]).filter((f) => f.endsWith('model.json'));
    assert.ok(saved.length > 0, 'the model was saved');
    assert.deepEqual(fs.readdirSync(SHARED), sharedBefore, 'nothing was written to the shared folder');
    assert.deepEqual(ourFallbacks(NOBODY), fallbacksBefore, 'the private folder was removed at exit');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    if (madeShared) fs.rmSync(SHARED, { recursive: true, force: true });
  }
}
const AS_NOBODY = ['--reuid=nobody', '--regid=nogroup', '--clear-groups'];

test('as a second user with a read-only DATA_DIR, after root made /tmp/cifar10-graphs: npm start finishes, 0', (t) =>
  asSecondUser(t, (work, env) => {
    const args = ['--backbones', 'mobilenet_v1_0.75', '--train-limit', '200', '--val-limit', '100', '--test-limit', '100', '--epochs', '1',
      '--sweep-epochs', '0', '--lr', '0.001', '--dropout', '0.3', '--tta', '0', '--trainable-blocks', '0'];
    const r = spawnSync('setpriv', [...AS_NOBODY, 'npm', 'start', '--', ...args], { cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 240_000, env });
    // The experiment script may be mid-refactor in a working tree: only a run that got as far as the backend counts.
    if (!/tfjs backend: tensorflow/.test(r.stdout)) {
      skipLoudly(t, `npm start did not reach the backend (${(r.stderr.split('\n').find((l) => l.startsWith('error:')) ?? r.stderr.slice(-200)).trim()}); the next case covers the same callers`);
      return undefined;
    }
    return r;
  }));

test('as a second user with a read-only DATA_DIR, after root made /tmp/cifar10-graphs: feature extraction and a saved classifier\'s graph work', (t) =>
  asSecondUser(t, (work, env) => {
    // The two callers of the graph cache, as npm start uses them: extractFeatures (backbone graphs) and loadModel
    // (attachFrozenGraph, the classifier's graph), both keyed under DATA_DIR/cache/graphs.
    const script = path.join(work, 'second-user.ts');
    const lib = (m: string) => JSON.stringify(path.join(PROJECT_ROOT, 'lib', m));
    fs.writeFileSync(script, `
      import * as path from 'path';
      import { initBackend } from ${lib('engine/backend')};
      import { extractFeatures, terminateFeaturePool } from ${lib('features/features')};
      import { assembleModel, buildHead, loadModel, predictPixels, saveModel, usesFrozenGraph } from ${lib('model/classifier')};
      (async () => {
        const be = await initBackend({ log: () => {} });
        const images = new Uint8Array(4 * 3072).map((_, i) => (i * 37) % 256);
        const f = await extractFeatures({ images, n: 4 }, { backbone: 'mobilenet_v1_0.75', resolution: 48, backbonesDir: process.env.BACKBONES_DIR, progress: false });
        const head = buildHead({ inputDim: 768, units: 8, dropout: 0.1, seed: 2 });
        const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 48, head, backbonesDir: process.env.BACKBONES_DIR });
        await saveModel(model, { backbones: ['mobilenet_v1_0.75'], resolution: 48, classNames: 'abcdefghij'.split(''), head: { inputDim: 768, units: 8, dropout: 0.1 }, metrics: {}, date: '', gitCommit: null }, process.env.MODEL_DIR!);
        const { model: loaded } = await loadModel(process.env.MODEL_DIR!);
        const p = await predictPixels(loaded, images, 4);
        console.log('backend ' + be.name + ', features ' + f.data.length + ', classifier graph ' + usesFrozenGraph(loaded) + ', probabilities ' + p.length);
        await terminateFeaturePool();
      })().catch((err) => { console.error('error: ' + err.message.split('\\n')[0]); process.exit(1); });
    `);
    fs.chmodSync(script, 0o644);
    const r = spawnSync('setpriv', [...AS_NOBODY, process.execPath, '-r', require.resolve('ts-node/register/transpile-only'), script], {
      cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000, env,
    });
    assert.match(r.stdout, /^backend tensorflow, features 3072, classifier graph true, probabilities 40$/m, r.stdout + r.stderr);
    return r;
  }));
