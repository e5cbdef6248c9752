// `npm run export:keras`: the topology rewrite on its own, then the round trip tfjs -> tensorflowjs_converter ->
// Keras HDF5 -> tf-keras predictions == tfjs predictions (<= 1e-4) on a stand-in model, and on the real v1+v2 pair
// (whose `conv1` / `Conv1` clash is what the renaming is for) when BACKBONES_DIR has them. The round trips need the
// converter's venv (data/tools/keras-venv, made on first use: about a minute from PyPI) and skip, saying why, when
// it cannot be made.
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { BackboneName, BACKBONES } from '../lib/features/backbones';
import { assembleModel, buildHead, headWeights, saveModel, setHeadWeights } from '../lib/model/classifier';
import { checkKeras, ensureVenv, exportKeras, kerasTopology, TOLERANCE } from '../scripts/export-keras';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const ROOT = path.resolve(__dirname, '..');
const REAL = process.env.BACKBONES_DIR;
const HAS_REAL = !!REAL && Object.values(BACKBONES).every((b) => fs.existsSync(path.join(REAL, b.folder)));

let root: string;
let fakeDir: string;
let bin: string | undefined;
let noVenv: string | undefined;

before(async () => {
  await initBackend({ log: () => {} });
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'export-keras-'));
  fakeDir = await writeFakeBackbone(path.join(root, 'backbones'));
  try {
    bin = ensureVenv((s) => console.error(s));
  } catch (err) {
    noVenv = `SKIPPED, NOT RUN: the converter's venv cannot be made: ${(err as Error).message}`;
  }
});

async function savedModel(backbones: BackboneName[], dir: string, resolution: number): Promise<string> {
  const dim = backbones.reduce((a, b) => a + BACKBONES[b].featureSize, 0);
  const head = buildHead({ inputDim: dim, units: 16, dropout: 0.2, seed: 4 });
  const ws = headWeights(head);
  const r = (shape: number[], lo: number, hi: number, seed: number) => tf.randomUniform(shape, lo, hi, 'float32', seed);
  setHeadWeights(head, [r([dim], 0.5, 1.5, 1), r([dim], -0.2, 0.2, 2), r([dim], 0, 0.5, 3), r([dim], 0.05, 1, 4), ws[4], ws[5], tf.mul(ws[6], 6), ws[7]]);
  const model = await assembleModel({ backbones, resolution, head, backbonesDir: dir });
  const out = fs.mkdtempSync(path.join(root, 'model-'));
  await saveModel(model, {
    backbones, resolution, classNames: Array.from({ length: 10 }, (_, i) => `c${i}`), head: { inputDim: dim, units: 16, dropout: 0.2 },
    metrics: {}, date: new Date().toISOString(), gitCommit: null,
  }, out);
  tf.dispose([head, model] as any);
  return out;
}

test('kerasTopology: ResizeNormalize -> Rescaling + Resizing, case-insensitive name clashes renamed with their weights', () => {
  const layer = (class_name: string, name: string, from: string | null, config: any = {}) => ({
    class_name, name, config: { name, ...config }, inbound_nodes: from ? [[[from, 0, 0, {}]]] : [],
  });
  const json = {
    modelTopology: {
      class_name: 'Model',
      config: {
        layers: [
          layer('InputLayer', 'pixels', null),
          layer('ResizeNormalize', 'resize_normalize', 'pixels', { size: 96 }),
          layer('Conv2D', 'conv1', 'resize_normalize'),
          {
            class_name: 'Model', name: 'inner', inbound_nodes: [[['conv1', 0, 0, {}]]],
            config: { name: 'inner', layers: [layer('InputLayer', 'in', null), layer('Conv2D', 'Conv1', 'in')], input_layers: [['in', 0, 0]], output_layers: [['Conv1', 0, 0]] },
          },
        ],
        input_layers: [['pixels', 0, 0]],
        output_layers: [['inner', 1, 0]],
      },
    },
    weightsManifest: [{ paths: ['weights.bin'], weights: [{ name: 'conv1/kernel' }, { name: 'Conv1/kernel' }, { name: 'Conv1/bias' }] }],
  };
  const k = kerasTopology(json);
  const layers = k.modelTopology.config.layers;
  assert.deepEqual(layers.map((l: any) => l.class_name), ['InputLayer', 'Rescaling', 'Resizing', 'Conv2D', 'Model']);
  assert.deepEqual(layers[1].config, { name: 'resize_normalize_rescale', trainable: false, dtype: 'float32', scale: 1 / 127.5, offset: -1 });
  assert.deepEqual([layers[2].config.height, layers[2].config.width, layers[2].config.interpolation, layers[2].config.crop_to_aspect_ratio], [96, 96, 'bilinear', false]);
  assert.equal(layers[3].inbound_nodes[0][0][0], 'resize_normalize', 'consumers still read the layer by its old name');
  const inner = layers[4].config;
  assert.equal(inner.layers[1].name, 'Conv1_1');
  assert.equal(inner.output_layers[0][0], 'Conv1_1');
  assert.deepEqual(k.weightsManifest[0].weights.map((w: any) => w.name), ['conv1/kernel', 'Conv1_1/kernel', 'Conv1_1/bias']);
  assert.equal(json.modelTopology.config.layers[1].class_name, 'ResizeNormalize', 'the input is not modified');
  // at 32 px ResizeNormalize does not resize: Rescaling alone, under the old name
  (json.modelTopology.config.layers[1].config as any).size = 32;
  const k32 = kerasTopology(json).modelTopology.config.layers;
  assert.deepEqual(k32.slice(1, 3).map((l: any) => [l.class_name, l.name]), [['Rescaling', 'resize_normalize'], ['Conv2D', 'conv1']]);
});

/** Textured pictures, so images get different predictions (pure noise pools to nearly the same features). */
function pictures(n: number): Uint8Array {
  const noise = fakeImages(n, 9);
  return noise.map((v, i) => Math.round(0.7 * ((((i % 3072) / 3) % 32) * 8 + Math.floor(i / 3072) * 37) % 256 + 0.3 * v));
}

function roundTrip(t: any, name: string, backbones: BackboneName[], dir: () => string, resolution: number) {
  return async () => {
    if (noVenv) return t.skip(noVenv);
    const modelDir = await savedModel(backbones, dir(), resolution);
    const out = path.join(modelDir, 'cifar10.h5');
    const t0 = Date.now();
    exportKeras(modelDir, out, bin);
    const line = await checkKeras(modelDir, out, pictures(20), 20, bin);
    t.diagnostic(`${name}: ${line} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    const diff = Number(/max abs difference (\S+)/.exec(line)?.[1]);
    assert.ok(diff <= TOLERANCE, line);
    assert.match(line, /Rescaling, Resizing/);
  };
}

test('round trip on a stand-in backbone at 48 px: Keras predicts what tfjs predicts', { timeout: 180_000 }, async (t) => {
  await roundTrip(t, 'stand-in', ['mobilenet_v1_0.75'], () => fakeDir, 48)();
});

test('round trip on the real MobileNet v1 0.75 + v2 pair at 64 px', { timeout: 180_000, skip: HAS_REAL ? false : 'real weights absent: set BACKBONES_DIR (e.g. /work/shared/models) to enable' }, async (t) => {
  await roundTrip(t, 'real v1+v2', ['mobilenet_v1_0.75', 'mobilenet_v2'], () => REAL!, 64)();
});

test('without python3 the export says so in one line and exits 1', async () => {
  const modelDir = await savedModel(['mobilenet_v1_0.75'], fakeDir, 32);
  const bare = fs.mkdtempSync(path.join(root, 'path-'));
  fs.symlinkSync(process.execPath, path.join(bare, 'node'));
  const r = spawnSync(process.execPath, ['--require', 'ts-node/register/transpile-only', path.join(ROOT, 'scripts', 'export-keras.ts'), '--model', modelDir], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, PATH: bare, KERAS_VENV: path.join(root, 'no-venv') },
  });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /^error: python3 not found[^\n]*\n$/);
});
