// Grad-CAM: the map lights up where the evidence for the explained class is, per backbone (the gradient reaches
// each backbone through its own slice of the concatenated features), is normalised to [0, 1], and, on a saved
// classifier, explains exactly the model's own prediction from the maps its nested backbones compute.
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { PNG } from 'pngjs';
import { initBackend } from '../lib/engine/backend';
import { BACKBONES, loadBackbone } from '../lib/features/backbones';
import { classifierGradCam, gradCam, gradCamGrid, headLogits, jet, overlay, SpatialBackbone, spatialBackbones, truncateAt, upsample } from '../lib/evaluate/gradcam';
import { assembleModel, BN_EPSILON, buildHead, predictPixels, saveModel, setHeadWeights } from '../lib/model/classifier';
import { loadClassifier } from '../lib/experiment/pipeline';
import { pixelsToTensor, preprocess } from '../lib/data/preprocess';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

let fakeDir: string;
before(async () => {
  await initBackend({ log: () => {} });
  fakeDir = await writeFakeBackbone();
});

/** A "backbone" that passes its input through: the test hands the feature maps in directly. */
function identityBackbone(name: string, h: number, w: number, c: number): SpatialBackbone {
  const input = tf.input({ shape: [h, w, c] });
  return { name, model: tf.model({ inputs: input, outputs: tf.layers.activation({ activation: 'linear' }).apply(input) as tf.SymbolicTensor }) };
}

/**
 * A head whose logit of class `cls` is sign * ReLU(feature[channel]) and every other logit 0: BN set to the identity,
 * one hidden unit reading that feature. Built with the real head layers, so headLogits is exercised as it is used.
 */
function oneChannelHead(dim: number, channel: number, cls: number, sign = 1): tf.LayersModel {
  const head = buildHead({ inputDim: dim, units: 2, dropout: 0.5 });
  const k1 = new Float32Array(dim * 2);
  k1[channel * 2] = 1;
  const k2 = new Float32Array(2 * 10);
  k2[cls] = sign;
  setHeadWeights(head, [
    tf.ones([dim]), tf.zeros([dim]), tf.zeros([dim]), tf.fill([dim], 1 - BN_EPSILON),
    tf.tensor2d(k1, [dim, 2]), tf.zeros([2]), tf.tensor2d(k2, [2, 10]), tf.zeros([10]),
  ]);
  return head;
}

/** Feature maps [1, h, w, c]: 0.1 everywhere, plus a bump of 5 at `bumps[k] = [y, x]` in channel k. */
function mapsWithBumps(h: number, w: number, c: number, bumps: ([number, number] | undefined)[]): tf.Tensor4D {
  const a = new Float32Array(h * w * c).fill(0.1);
  bumps.forEach((b, k) => {
    if (b) a[(b[0] * w + b[1]) * c + k] = 5;
  });
  return tf.tensor4d(a, [1, h, w, c]);
}

const argmax = (a: ArrayLike<number>) => Array.from(a).indexOf(Math.max(...Array.from(a)));

test('the map peaks where the channel the class depends on is active, not where other channels are', async () => {
  const bb = identityBackbone('b', 5, 5, 3);
  // channel 0 active at (0, 4), channel 1 (the one class 4 reads) at (3, 1), channel 2 at (4, 4)
  const input = mapsWithBumps(5, 5, 3, [[0, 4], [3, 1], [4, 4]]);
  const head = oneChannelHead(3, 1, 4);
  const r = await gradCam({ backbones: [bb], logits: headLogits(head), input });
  assert.deepEqual(r.classes, [4], 'default class = the arg-max logit');
  const m = r.maps[0];
  assert.deepEqual([m.h, m.w, m.data.length], [5, 5, 25]);
  assert.equal(argmax(m.data), 3 * 5 + 1, 'peak at the active cell of channel 1');
  assert.equal(m.data[3 * 5 + 1], 1, 'normalised: maximum 1');
  assert.ok(m.data[0 * 5 + 4] < 0.05 && m.data[4 * 5 + 4] < 0.05, 'other channels\' bumps do not show');
  assert.ok(Math.abs(r.scores[0] - (0.1 * 24 + 5) / 25) < 1e-5, `score is the pre-softmax logit (${r.scores[0]})`);
  // Explaining another class: its logit falls where channel 1 is active (negative evidence), cut at zero -> no map.
  const neg = oneChannelHead(3, 1, 7, -1);
  const z = await gradCam({ backbones: [bb], logits: headLogits(neg), input, classes: [7] });
  assert.ok(z.maps[0].data.every((v) => v === 0), 'negative evidence only: all zeros (not NaN)');
  input.dispose();
});

test('two backbones: each gets its own map, through its own slice of the concatenated features', async () => {
  const a = identityBackbone('first', 4, 4, 3);
  const b = identityBackbone('second', 4, 4, 2);
  const inputA = mapsWithBumps(4, 4, 3, [[1, 1], [1, 1], [1, 1]]);
  const inputB = mapsWithBumps(4, 4, 2, [undefined, [2, 3]]);
  // gradCam hands every backbone the same input: stack both maps, and let each "backbone" pick its own channels
  // (a fixed 1x1 convolution that selects them).
  const both = tf.concat([inputA, inputB], 3) as tf.Tensor4D;
  const slice = (bb: SpatialBackbone, from: number, size: number): SpatialBackbone => {
    const sel = new Float32Array(5 * size);
    for (let j = 0; j < size; j++) sel[(from + j) * size + j] = 1;
    const input = tf.input({ shape: [4, 4, 5] });
    const picked = tf.layers.conv2d({ filters: size, kernelSize: 1, useBias: false, weights: [tf.tensor4d(sel, [1, 1, 5, size])] }).apply(input) as tf.SymbolicTensor;
    return { name: bb.name, model: tf.model({ inputs: input, outputs: bb.model.apply(picked) as tf.SymbolicTensor }) };
  };
  // The class reads feature 3 + 1 = channel 1 of the SECOND backbone.
  const head = oneChannelHead(5, 4, 2);
  const r = await gradCam({ backbones: [slice(a, 0, 3), slice(b, 3, 2)], logits: headLogits(head), input: both });
  assert.deepEqual(r.maps.map((m) => [m.name, m.h, m.w]), [['first', 4, 4], ['second', 4, 4]]);
  assert.ok(r.maps[0].data.every((v) => v === 0), 'the first backbone carries no evidence for the class');
  assert.equal(argmax(r.maps[1].data), 2 * 4 + 3, 'the second backbone\'s map peaks at its active cell');
  for (const m of r.maps) assert.ok(m.data.every((v) => v >= 0 && v <= 1), 'in [0, 1]');
  both.dispose();
  inputA.dispose();
  inputB.dispose();
});

test('a saved classifier: the maps come from its nested backbone, the class is its own prediction', async () => {
  const resolution = 64;
  const dim = BACKBONES['mobilenet_v1_0.75'].featureSize;
  const head = buildHead({ inputDim: dim, units: 16, dropout: 0.3, seed: 3 });
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution, head, backbonesDir: fakeDir });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gradcam-model-'));
  const classNames = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution, classNames, head: { inputDim: dim, units: 16, dropout: 0.3 },
    metrics: {}, date: new Date().toISOString(), gitCommit: null,
  }, dir);
  model.dispose();
  const clf = await loadClassifier(dir);
  const n = 4;
  const images = fakeImages(n, 11);
  const r = await classifierGradCam(clf, images, n);
  const probs = await predictPixels(clf.model, images, n);
  assert.deepEqual(r.classes, Array.from({ length: n }, (_, i) => argmax(probs.subarray(i * 10, i * 10 + 10))), 'explains the model\'s own prediction');
  // The fake backbone has one stride-2 conv: 64 px -> a 32x32 map.
  assert.deepEqual(r.maps.map((m) => [m.name, m.h, m.w, m.data.length]), [['mobilenet_v1_0.75', 32, 32, n * 32 * 32]]);
  const maxima = Array.from({ length: n }, (_, i) => Math.max(...r.maps[0].data.subarray(i * 1024, (i + 1) * 1024)));
  assert.ok(r.maps[0].data.every((v) => v >= 0 && v <= 1), 'maps in [0, 1]');
  assert.ok(maxima.every((m) => m === 1 || m === 0) && maxima.includes(1), `each map scaled to its maximum: ${maxima}`);
  // The truncated map, pooled, is exactly the feature the backbone hands the head (cut at the right layer).
  const [spatial] = spatialBackbones(clf.model, ['mobilenet_v1_0.75']);
  const bb = await loadBackbone('mobilenet_v1_0.75', { dir: fakeDir });
  const x = preprocess(pixelsToTensor(images, n), resolution);
  const pooled = tf.tidy(() => tf.mean(spatial.model.predict(x) as tf.Tensor, [1, 2]).dataSync());
  const direct = tf.tidy(() => (bb.predict(x) as tf.Tensor).dataSync());
  let diff = 0;
  for (let i = 0; i < direct.length; i++) diff = Math.max(diff, Math.abs(pooled[i] - direct[i]));
  assert.ok(diff < 1e-4, `pooled spatial map vs backbone features: max |diff| ${diff}`);
  // A head reading one channel (one active in every image): the map is that channel's activation, scaled to its max.
  const k = argmax(Array.from({ length: dim }, (_, c) => Math.min(...Array.from({ length: n }, (_, i) => direct[i * dim + c]))));
  assert.ok(direct[k] > 0);
  const r1 = await gradCam({ backbones: [spatial], logits: headLogits(oneChannelHead(dim, k, 0)), input: x, classes: [0, 0, 0, 0] });
  const a = tf.tidy(() => tf.slice(spatial.model.predict(x) as tf.Tensor4D, [0, 0, 0, k], [n, -1, -1, 1]).dataSync());
  for (let i = 0; i < n; i++) {
    const ch = a.subarray(i * 1024, (i + 1) * 1024);
    const max = Math.max(...ch);
    const cam = r1.maps[0].data.subarray(i * 1024, (i + 1) * 1024);
    for (let p = 0; p < 1024; p++) assert.ok(Math.abs(cam[p] - ch[p] / max) < 1e-4, `image ${i} cell ${p}: ${cam[p]} vs ${ch[p] / max}`);
  }
  // headLogits is the head before its softmax.
  const f = tf.tidy(() => (bb.predict(x) as tf.Tensor2D));
  const viaHead = tf.tidy(() => (clf.head.predict(f) as tf.Tensor).dataSync());
  const viaLogits = tf.tidy(() => tf.softmax(headLogits(clf.head)(f)).dataSync());
  for (let i = 0; i < viaHead.length; i++) assert.ok(Math.abs(viaHead[i] - viaLogits[i]) < 1e-5);
  tf.dispose([x, f]);
  bb.dispose();
  clf.model.dispose();
  clf.head.dispose();
});

test('upsample / overlay / grid: the heat lands where the map is hot, the grid has one group per image', async () => {
  const one = new Float32Array(25);
  one[1 * 5 + 3] = 1;
  const up = upsample(one, 5, 5, 160, 160);
  const at = argmax(up);
  assert.ok(Math.floor(at / 160) >= 32 && Math.floor(at / 160) < 64 && at % 160 >= 96 && at % 160 < 128, `peak at pixel ${at}`);
  assert.ok(upsample(new Float32Array(4).fill(0.3), 2, 2, 7, 9).every((v) => Math.abs(v - 0.3) < 1e-6), 'constant stays constant');
  assert.deepEqual(jet(0), [0, 0, 128]);
  assert.deepEqual(jet(1), [128, 0, 0]);
  const gray = new Uint8Array(3072).fill(128);
  const o = overlay(gray, one, 5, 5, 160);
  const px = (y: number, x: number) => Array.from(o.subarray((y * 160 + x) * 3, (y * 160 + x) * 3 + 3));
  const [r, , b] = px(48, 112);
  assert.ok(r > 130 && b < 60, `hot cell is red: ${px(48, 112)}`);
  const cold = px(150, 10);
  assert.ok(Math.abs(cold[0] - 109) <= 1 && cold[2] > 120, `cold region keeps the image, lightly tinted: ${cold}`);
  const cams = { n: 3, classes: [3, 5, 1], scores: [1, 1, 1], maps: ['mobilenet_v1_0.75', 'mobilenet_v2'].map((name) => ({ name, h: 5, w: 5, data: new Float32Array(75) })) };
  const png = PNG.sync.read(gradCamGrid(fakeImages(3), cams, { classNames: ['a', 'b', 'c', 'cat', 'e', 'dog', 'g', 'h', 'i', 'j'], size: 32, perRow: 2 }));
  // two images per row x (image + 2 maps), 14 px between images: 2 + 6 * 34 + 12 = 218 wide; 2 rows
  assert.equal(png.width, 218);
  // captions ("V1: cat") wrap onto two 9-px lines of the 5x7 font under 32-px tiles, + 4 px: 22 px per row
  assert.equal(png.height, 2 * (32 + 2 * 9 + 4) + 3 * 2);
  await assert.rejects(gradCam({ backbones: [], logits: (f) => f, input: tf.zeros([1, 2, 2, 1]) }), /no backbones/);
  assert.throws(() => truncateAt(buildHead({ inputDim: 4, units: 2, dropout: 0 }), 'head_dense'), /expected a spatial map/);
});
