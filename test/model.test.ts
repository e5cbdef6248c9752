// The assembled end-to-end model: its predictions equal head(features(batch)) from the feature engine, and a saved
// model loads back (with only the lib) and predicts identically.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { BackboneName, BACKBONES } from '../lib/features/backbones';
import { extractFeatures, terminateFeaturePool } from '../lib/features/features';
import { assembleModel, buildHead, headWeights, loadModel, predictPixels, saveModel, setHeadWeights, usesFrozenGraph } from '../lib/model/classifier';
import { predictFeatures } from '../lib/evaluate/evaluate';
import { concatFeatures } from '../lib/features/labeled-features';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const REAL = process.env.BACKBONES_DIR;
const SKIP_REAL =
  REAL && fs.existsSync(path.join(REAL, BACKBONES.mobilenet_v2.folder)) && fs.existsSync(path.join(REAL, BACKBONES['mobilenet_v1_0.75'].folder))
    ? false
    : 'real weights absent: set BACKBONES_DIR to the folder holding mobilenet_v2_1.0_224/ and mobilenet_v1_0.75_224/ (e.g. /work/shared/models) to enable';

let fakeDir: string;
before(async () => {
  await initBackend({ log: () => {} });
  fakeDir = await writeFakeBackbone();
});
after(() => terminateFeaturePool());

/** A head with random (non-trivial) weights, including BN statistics, for `dim` features. */
function randomHead(dim: number, units = 16): tf.LayersModel {
  const head = buildHead({ inputDim: dim, units, dropout: 0.3, seed: 5 });
  const ws = headWeights(head);
  const r = (shape: number[], lo: number, hi: number, seed: number) => tf.randomUniform(shape, lo, hi, 'float32', seed);
  setHeadWeights(head, [r([dim], 0.5, 1.5, 1), r([dim], -0.2, 0.2, 2), r([dim], 0, 0.5, 3), r([dim], 0.05, 1, 4), ...ws.slice(4)]);
  return head;
}

/** Images that differ in colour and texture (pure noise images all pool to nearly the same features). */
function variedImages(n: number): Uint8Array {
  const noise = fakeImages(n, 3);
  const out = new Uint8Array(n * 3072);
  for (let i = 0; i < n; i++)
    for (let p = 0; p < 1024; p++)
      for (let c = 0; c < 3; c++) {
        const base = ((i * 97 + c * 61) % 256) * ((p % 32) / 31);
        out[i * 3072 + p * 3 + c] = Math.round(0.8 * base + 0.2 * noise[i * 3072 + p * 3 + c]);
      }
  return out;
}

const maxAbsDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
};

async function checkEndToEnd(backbones: BackboneName[], dir: string, resolution: number, n: number): Promise<void> {
  const images = variedImages(n);
  const parts = [];
  for (const backbone of backbones) {
    parts.push(await extractFeatures({ images, n }, { backbone, backbonesDir: dir, resolution, cache: false, workers: 0, progress: false }));
  }
  const feats = concatFeatures(parts);
  const head = randomHead(feats.dim);
  const model = await assembleModel({ backbones, resolution, head, backbonesDir: dir });
  const viaModel = await predictPixels(model, images, n);
  const viaHead = await predictFeatures(head, feats.data, n, feats.dim);
  const diff = maxAbsDiff(viaModel, viaHead);
  assert.ok(diff < 1e-4, `end-to-end vs head(features): max |diff| ${diff}`);
  // The check is not vacuous: predictions differ between images.
  let spread = 0;
  for (let i = 1; i < n; i++) spread = Math.max(spread, maxAbsDiff(viaModel.subarray(0, 10), viaModel.subarray(i * 10, (i + 1) * 10)));
  assert.ok(spread > 1e-4, `all images get the same prediction (max spread ${spread})`);
  model.dispose();
  head.dispose();
}

test('end-to-end model == head(features(batch)) (stand-in backbone)', async () => {
  await checkEndToEnd(['mobilenet_v1_0.75'], fakeDir, 48, 4);
});

test('end-to-end model == head(features(batch)) with real v1+v2 concatenated', { skip: SKIP_REAL }, async () => {
  await checkEndToEnd(['mobilenet_v1_0.75', 'mobilenet_v2'], REAL!, 64, 3);
});

test('a saved model loads back and predicts identically; metadata round-trips', async () => {
  const head = randomHead(BACKBONES['mobilenet_v1_0.75'].featureSize);
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 40, head, backbonesDir: fakeDir });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'saved-model-'));
  const classNames = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 40, classNames, head: { inputDim: 768, units: 16, dropout: 0.3 },
    metrics: { validation: 0.5 }, date: new Date().toISOString(), gitCommit: null,
  }, dir);
  assert.ok(fs.existsSync(path.join(dir, 'model.json')) && fs.existsSync(path.join(dir, 'weights.bin')));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'temp files left behind');
  const images = variedImages(5);
  const before = await predictPixels(model, images, 5);
  model.dispose();
  const { model: loaded, metadata } = await loadModel(dir);
  const after = await predictPixels(loaded, images, 5);
  // Eager: the same ops in the same order, bit-identical. On tensorflow the loaded model runs as a frozen TF graph
  // (fused kernels), equal to rounding.
  if (usesFrozenGraph(loaded)) assert.ok(maxAbsDiff(before, after) < 1e-5, `graph vs eager ${maxAbsDiff(before, after)}`);
  else assert.equal(maxAbsDiff(before, after), 0);
  assert.deepEqual(metadata.classNames, classNames);
  assert.equal(metadata.resolution, 40);
  // Frozen parts stay frozen after loading: only the head's weights are trainable.
  assert.ok(loaded.trainableWeights.every((w) => w.name.startsWith('head_')), loaded.trainableWeights.map((w) => w.name).join(','));
  loaded.dispose();
  // A missing shard is named.
  fs.rmSync(path.join(dir, 'weights.bin'));
  await assert.rejects(loadModel(dir), /weights\.bin/);
  head.dispose();
});

test('loading from a folder without a model says how to get one', async () => {
  await assert.rejects(loadModel(fs.mkdtempSync(path.join(os.tmpdir(), 'empty-'))), /model\.json missing.*npm start/);
});
