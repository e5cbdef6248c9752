// Issue 24, item 3: a class list (or resolution, or backbone list) that does not match the model. Before, a
// metadata.json with 5 class names for a 10-way model let `npm run predict` exit 0 and print
// "frog.png: 6 67.2%, cat 20.8%, 5 5.7%". Now loading checks the model against its metadata
// (lib/model/classifier.ts checkModelAgainstMetadata): predict exits 1 with one line naming both sides, prints no
// prediction, and the notebooks' loader (lib/experiment/saved-model.ts loadSavedModel) refuses the model the same way.
// A real model is trained by `npm start` (scripts/main.ts) on a synthetic CIFAR-10 with a stand-in backbone.
import { test, before, after, TestContext } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PNG } from 'pngjs';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { writeFakeBackbone } from './fake-backbone';
import { writeSyntheticCifar } from './synthetic-cifar';

const TS_NODE = require.resolve('ts-node/register/transpile-only');
const MAIN = path.join(PROJECT_ROOT, 'scripts', 'main.ts');
const PREDICT = path.join(PROJECT_ROOT, 'scripts', 'predict.ts');
// reliability.test.ts's small run, frozen (no regime probing): a 10-way model saved in a few seconds of training.
const SMALL = ['--backbones', 'mobilenet_v1_0.75', '--train-limit', '200', '--val-limit', '100', '--test-limit', '100', '--epochs', '1', '--sweep-epochs', '0', '--lr', '0.001', '--dropout', '0.3', '--tta', '0', '--trainable-blocks', '0'];

let work: string;
let env: Record<string, string>;
let models: string;
let id: string;
let image: string;

interface Run { status: number | null; stdout: string; stderr: string }
function run(script: string, args: string[], extra: Record<string, string> = {}): Run {
  // As npm runs it: from the project, with the user's folder (where frog.png is) in INIT_CWD.
  const r = spawnSync(process.execPath, ['-r', TS_NODE, script, ...args], { cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 300_000, env: { ...process.env, INIT_CWD: work, ...env, ...extra } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
const errorLines = (r: Run) => r.stderr.split('\n').filter((l) => l.startsWith('error:'));

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-metadata-'));
  env = {
    CIFAR10_DIR: writeSyntheticCifar(path.join(work, 'cifar-10-batches-bin')),
    BACKBONES_DIR: await writeFakeBackbone(path.join(work, 'backbones')),
    DATA_DIR: path.join(work, 'data'),
  };
  models = path.join(work, 'models');
  const r = run(MAIN, SMALL, { MODELS_DIR: models });
  assert.equal(r.status, 0, `npm start failed: ${r.stderr.slice(-500)}`);
  id = JSON.parse(fs.readFileSync(path.join(models, 'current.json'), 'utf8')).id;
  const png = new PNG({ width: 32, height: 32 });
  for (let i = 0; i < png.data.length; i += 4) png.data.set([60, 160, 60, 255], i);
  image = path.join(work, 'frog.png');
  fs.writeFileSync(image, PNG.sync.write(png));
});

after(() => fs.rmSync(work, { recursive: true, force: true }));

/** A copy of the saved models whose current model's metadata.json is edited by `edit`; returns its MODELS_DIR. */
function editedCopy(name: string, edit: (meta: Record<string, any>) => void): { models: string; dir: string } {
  const copy = path.join(work, `models-${name}`);
  fs.cpSync(models, copy, { recursive: true });
  const file = path.join(copy, id, 'metadata.json');
  const meta = JSON.parse(fs.readFileSync(file, 'utf8'));
  edit(meta);
  fs.writeFileSync(file, JSON.stringify(meta, null, 2));
  return { models: copy, dir: path.join(copy, id) };
}

/** predict with the edited model: exit 1, exactly one error line (matching `line`), no prediction printed. */
function assertRefused(t: TestContext, models: string, line: RegExp): string {
  const r = run(PREDICT, ['frog.png'], { MODELS_DIR: models });
  assert.equal(r.status, 1, `exit status ${r.status}; stdout: ${r.stdout}; stderr: ${r.stderr.slice(-400)}`);
  const errors = errorLines(r);
  assert.equal(errors.length, 1, `one error line, got:\n${r.stderr}`);
  assert.match(errors[0], line);
  assert.doesNotMatch(r.stdout, /frog\.png:/, 'no prediction from a model that disagrees with its metadata');
  t.diagnostic(`exit ${r.status}: ${errors[0]}`);
  return errors[0];
}

test('the model as saved predicts (the edits below are what fails)', () => {
  const r = run(PREDICT, ['frog.png'], { MODELS_DIR: models });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^frog\.png: (airplane|automobile|bird|cat|deer|dog|frog|horse|ship|truck) \d+\.\d%, /m);
});

test('5 class names for a 10-way model: predict exits 1 naming both counts, and the notebook loader refuses it', async (t) => {
  const { models: m, dir } = editedCopy('classes', (meta) => (meta.classNames = ['airplane', 'automobile', 'bird', 'cat', 'deer']));
  const line = assertRefused(t, m, /^error: \S+metadata\.json: 5 class names, but the model in \S+ has 10 outputs$/);
  assert.ok(line.includes(path.join(dir, 'metadata.json')), `names the file: ${line}`);

  // Notebook 06's door: the same refusal, the same line.
  const { initBackend } = await import('../lib/engine/backend');
  const { loadSavedModel } = await import('../lib/experiment/saved-model');
  const { withRuntimeContext } = await import('../lib/settings/context');
  await initBackend({ log: () => {} });
  await withRuntimeContext({ dataDir: env.DATA_DIR }, () =>
    assert.rejects(loadSavedModel({ models: m, model: 'current' }), (err: Error) => {
      assert.equal(`error: ${err.message}`, line);
      return true;
    }),
  );
});

test('a resolution that is not the model\'s resize: predict exits 1 naming both', (t) => {
  const saved = JSON.parse(fs.readFileSync(path.join(models, id, 'metadata.json'), 'utf8')).resolution as number;
  const { models: m } = editedCopy('resolution', (meta) => (meta.resolution = 96));
  assertRefused(t, m, new RegExp(`^error: \\S+metadata\\.json: resolution 96 px, but the model in \\S+ resizes to ${saved} px$`));
});

test('backbones that are not the model\'s: predict exits 1 naming both', (t) => {
  // Only the list edited: its features disagree with the head the metadata describes.
  const { models: a } = editedCopy('backbones', (meta) => (meta.backbones = ['mobilenet_v2']));
  assertRefused(t, a, /^error: \S+metadata\.json: backbones mobilenet_v2 give 1280 features, but its head.inputDim says 768$/);
  // The list and the head's size edited together: the model itself still has a head on 768 features.
  const { models: b } = editedCopy('backbones-head', (meta) => {
    meta.backbones = ['mobilenet_v1_0.75', 'mobilenet_v2'];
    meta.head.inputDim = 768 + 1280;
    meta.regime.trainableBlocks = [0, 0];
  });
  assertRefused(t, b, /^error: \S+metadata\.json: backbones mobilenet_v1_0\.75 \+ mobilenet_v2 give 2048 features, but the model in \S+ has a head on 768$/);
});

test('a regime whose trainable blocks do not match the backbones: predict exits 1 naming both', (t) => {
  const { models: m } = editedCopy('regime', (meta) => (meta.regime.trainableBlocks = [0, 2]));
  assertRefused(t, m, /^error: \S+metadata\.json: regime\.trainableBlocks \[0,2\] should be one whole number per backbone \(mobilenet_v1_0\.75\)$/);
});
