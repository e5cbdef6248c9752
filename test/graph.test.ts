// Frozen TF graphs (lib/engine/graph.ts) compute what the tfjs models compute: a backbone's graph equals the compiled
// eager extractor, a saved classifier's graph equals its LayersModel, and the cache key follows the weights.
// Only meaningful on the tensorflow backend (a SavedModel runs in a TF session): skipped, saying so, elsewhere.
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { backboneArtifacts, compileExtractor } from '../lib/features/backbones';
import { ensureSavedModel, graphKey, loadFrozenGraph, savedModelBytes } from '../lib/engine/graph';
import { assembleModel, buildHead, loadModel, predictPixels, saveModel, usesFrozenGraph } from '../lib/model/classifier';
import { pixelsToTensor, preprocess } from '../lib/data/preprocess';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

let fakeDir: string;
let onTensorflow = false;
before(async () => {
  onTensorflow = (await initBackend({ log: () => {} })).name === 'tensorflow';
  fakeDir = await writeFakeBackbone();
});
const skip = () => (onTensorflow ? false : `frozen graphs run only on the tensorflow backend (this run: ${tf.getBackend()})`);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

test('a backbone graph (resize + normalise + folded net + pooling) equals the eager extractor', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const a = await backboneArtifacts('mobilenet_v1_0.75', { dir: fakeDir });
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'graphs-'));
  const dir = ensureSavedModel({ ...a, resizeTo: 48 }, root, 'fake');
  assert.equal(ensureSavedModel({ ...a, resizeTo: 48 }, root, 'fake'), dir, 'same spec, same folder');
  assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.tmp-')), [], 'no temp folder left');
  const graph = await loadFrozenGraph(dir);
  const x = pixelsToTensor(fakeImages(6, 4), 6);
  const viaGraph = graph.predict(x);
  const ex = compileExtractor(a);
  const eager = tf.tidy(() => ex.predict(preprocess(x, 48)));
  assert.deepEqual(viaGraph.shape, [6, 768]);
  const diff = maxAbsDiff(viaGraph.dataSync(), eager.dataSync());
  assert.ok(diff < 1e-4, `graph vs eager: max |diff| ${diff}`);
  assert.ok(maxAbsDiff(viaGraph.dataSync().subarray(0, 768), viaGraph.dataSync().subarray(768, 1536)) > 1e-4, 'images differ');
  tf.dispose([x, viaGraph, eager]);
  ex.dispose();
  graph.dispose();
});

test('the graph key changes with the weights, the resolution and nothing else', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const a = await backboneArtifacts('mobilenet_v1_0.75', { dir: fakeDir });
  const k = graphKey({ ...a, resizeTo: 48 });
  assert.equal(graphKey({ ...a, resizeTo: 48 }), k);
  assert.notEqual(graphKey({ ...a, resizeTo: 64 }), k);
  const changed = a.weightData.slice(0);
  new Float32Array(changed)[10] *= 0.5;
  assert.notEqual(graphKey({ ...a, weightData: changed, resizeTo: 48 }), k);
});

test('a saved classifier runs through its frozen graph, with the LayersModel\'s predictions', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const head = buildHead({ inputDim: 768, units: 16, dropout: 0.3, seed: 3 });
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 40, head, backbonesDir: fakeDir });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'graph-model-'));
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 40, classNames: 'abcdefghij'.split(''), head: { inputDim: 768, units: 16, dropout: 0.3 },
    metrics: {}, date: '', gitCommit: null,
  }, dir);
  const images = fakeImages(5, 9);
  const eager = await predictPixels(model, images, 5); // an assembled, in-memory model has no graph: the eager path
  const { model: loaded } = await loadModel(dir);
  assert.ok(usesFrozenGraph(loaded) && !usesFrozenGraph(model));
  const viaGraph = await predictPixels(loaded, images, 5);
  const diff = maxAbsDiff(eager, viaGraph);
  assert.ok(diff < 1e-5, `graph vs LayersModel: max |diff| ${diff}`);
  for (const m of [model, loaded, head]) m.dispose();
});

test('a layer the writer does not know is a one-line error naming it', async (t) => {
  if (skip()) return t.skip(skip() as string);
  const a = await backboneArtifacts('mobilenet_v1_0.75', { dir: fakeDir });
  const topology = JSON.parse(JSON.stringify(a.topology));
  const layers = (topology.model_config ?? topology).config.layers;
  layers[1].class_name = 'SeparableConv2D';
  assert.throws(() => savedModelBytes({ ...a, topology }), /^Error: graph: layer conv1 \(SeparableConv2D\) is not supported by the graph writer \(supported: InputLayer, Conv2D, DepthwiseConv2D, [A-Za-z0-9, ]+\)$/);
});
