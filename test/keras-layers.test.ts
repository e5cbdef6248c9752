// The shared description of the Keras layers the project runs (lib/model/keras-layers.ts) and the one Adam
// (lib/train/adam.ts): what each emitter supports and the one error for the rest, shapes, weight names, ReLU6
// detection, and Adam's rule. Pure arithmetic: no backend, no weights.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  checkLayer, isRelu6, Layer, layerActivation, layerShapes, layerWeightNames, outputShape, supportedKinds,
} from '../lib/model/keras-layers';
import { ADAM, AdamArithmetic, adamCoefficients, adamConstants, adamUpdate } from '../lib/train/adam';

const layer = (class_name: string, config: any = {}, name = 'l1', inputs: string[] = ['x']): Layer =>
  ({ name, class_name, config, inbound_nodes: [inputs.map((i) => [i, 0, 0, {}])] });

test('each emitter supports its kinds; anything else is one error naming the layer, its kind and the supported kinds', () => {
  assert.deepEqual(supportedKinds('trunk'), ['Conv2D', 'DepthwiseConv2D', 'ReLU', 'Activation', 'Add', 'ZeroPadding2D', 'GlobalAveragePooling2D']);
  assert.deepEqual(supportedKinds('extractor'), ['InputLayer', ...supportedKinds('trunk')]);
  for (const k of supportedKinds('extractor')) assert.ok(supportedKinds('graph').includes(k), `the graph writer runs ${k} too`);
  assert.throws(() => checkLayer(layer('SeparableConv2D', {}, 'sep'), 'trunk', 'trunk'),
    /^Error: trunk: layer sep \(SeparableConv2D\) is not supported by the fine-tuning trunk \(supported: Conv2D, DepthwiseConv2D, ReLU, Activation, Add, ZeroPadding2D, GlobalAveragePooling2D\)$/);
  assert.throws(() => checkLayer(layer('Dense', { units: 3 }), 'extractor', 'compileExtractor'), /^Error: compileExtractor: layer l1 \(Dense\) is not supported by the compiled extractor/);
  assert.throws(() => checkLayer(layer('toString'), 'graph', 'graph'), /layer l1 \(toString\) is not supported/);
  checkLayer(layer('Dense', { units: 3, activation: 'softmax' }), 'graph', 'graph');
});

test('activations: what a layer computes, ReLU6 detection, and the ones an emitter refuses', () => {
  assert.equal(layerActivation(layer('ReLU', { max_value: 6, negative_slope: 0, threshold: 0 })), 'relu6');
  assert.equal(layerActivation(layer('ReLU', { max_value: null })), 'relu');
  assert.equal(layerActivation(layer('Conv2D', { filters: 2, kernel_size: [1, 1] })), 'linear');
  assert.equal(layerActivation(layer('Add')), 'linear');
  assert.ok(isRelu6(layer('ReLU', { max_value: 6 })) && isRelu6(layer('Activation', { activation: 'relu6' })));
  assert.ok(!isRelu6(layer('ReLU', { max_value: 6, negative_slope: 0.1 })) && !isRelu6(layer('Conv2D', { activation: 'relu6' })));
  assert.throws(() => checkLayer(layer('ReLU', { max_value: 6, negative_slope: 0.1 }), 'trunk', 'trunk'),
    /^Error: trunk: layer l1 \(ReLU\): activation leaky\/thresholded relu is not supported by the fine-tuning trunk \(supported: linear, relu, relu6\)$/);
  assert.throws(() => checkLayer(layer('Conv2D', { activation: 'softmax', kernel_size: 1 }), 'extractor', 'compileExtractor'), /activation softmax is not supported/);
  assert.throws(() => checkLayer(layer('Conv2D', { dilation_rate: [2, 2], kernel_size: 3 }), 'trunk', 'trunk'), /^Error: trunk: layer l1: dilation is not supported/);
  checkLayer(layer('Conv2D', { dilation_rate: [2, 2], kernel_size: 3 }), 'graph', 'graph');
  assert.throws(() => checkLayer(layer('Conv2D', { padding: 'causal', kernel_size: 3 }), 'graph', 'graph'), /padding "causal" is not supported/);
});

test('output shapes: strides with same / valid padding, dilation, depth multiplier, zero padding, pooling', () => {
  const conv = (padding: string, strides: number, dilation = 1) => layer('Conv2D', { filters: 8, kernel_size: [3, 3], strides: [strides, strides], padding, dilation_rate: [dilation, dilation] });
  assert.deepEqual(outputShape(conv('same', 2), [[9, 10, 3]]), [5, 5, 8]);
  assert.deepEqual(outputShape(conv('valid', 2), [[9, 10, 3]]), [4, 4, 8]);
  assert.deepEqual(outputShape(conv('valid', 1, 2), [[9, 9, 3]]), [5, 5, 8]);
  assert.deepEqual(outputShape(layer('DepthwiseConv2D', { kernel_size: 3, strides: 1, padding: 'same', depth_multiplier: 2 }), [[7, 7, 4]]), [7, 7, 8]);
  assert.deepEqual(outputShape(layer('ZeroPadding2D', { padding: [[0, 1], [2, 3]] }), [[7, 7, 4]]), [8, 12, 4]);
  assert.deepEqual(outputShape(layer('ZeroPadding2D', { padding: 1 }), [[7, 7, 4]]), [9, 9, 4]);
  assert.deepEqual(outputShape(layer('GlobalAveragePooling2D'), [[7, 7, 4]]), [1, 1, 4]);
  const net = [layer('InputLayer', {}, 'in', []), { ...conv('same', 2), name: 'c', inbound_nodes: [[['in', 0, 0, {}]]] }, layer('ReLU', { max_value: 6 }, 'r', ['c'])];
  assert.deepEqual([...layerShapes(net, [], [32, 32, 3], 'c')], [['in', [32, 32, 3]], ['c', [16, 16, 8]]]);
});

test('weight names follow the manifest: kernel, bias when used; BN without scale has no gamma', () => {
  assert.deepEqual(layerWeightNames(layer('Conv2D', { use_bias: true }, 'c')), ['c/kernel', 'c/bias']);
  assert.deepEqual(layerWeightNames(layer('DepthwiseConv2D', { use_bias: false }, 'd')), ['d/depthwise_kernel']);
  assert.deepEqual(layerWeightNames(layer('BatchNormalization', { scale: false }, 'bn')), ['bn/beta', 'bn/moving_mean', 'bn/moving_variance']);
  assert.deepEqual(layerWeightNames(layer('Add')), []);
});

test('Adam: the bias-corrected step, the update rule, decoupled decay', () => {
  assert.deepEqual(ADAM, { b1: 0.9, b2: 0.999, eps: 1e-7 });
  const { step, decay } = adamCoefficients(0.01, 1, 0.5);
  assert.ok(Math.abs(step - (0.01 * Math.sqrt(0.001)) / 0.1) < 1e-15);
  assert.equal(decay, 0.005);
  // Plain numbers as the arithmetic: the first step moves a weight by ~step size against its gradient's sign.
  const num: AdamArithmetic<number, number> = {
    add: (a, b) => a + b, sub: (a, b) => a - b, mul: (a, b) => a * b, div: (a, b) => a / b, sqrt: Math.sqrt, square: (a) => a * a,
  };
  const k = { ...adamConstants(ADAM), step: adamCoefficients(0.01, 1).step };
  const next = adamUpdate(num, 0, 2, -3, 0, 0, k);
  assert.ok(Math.abs(next.m - -0.3) < 1e-12 && Math.abs(next.v - 0.009) < 1e-12);
  assert.ok(Math.abs(next.p - 2.01) < 1e-7, `p ${next.p}`);
  const decayed = adamUpdate(num, 0, 2, -3, 0, 0, { ...k, decay: 0.1 });
  assert.ok(Math.abs(decayed.p - (next.p - 0.2)) < 1e-12, 'decay subtracts decay * p (the weight before the step)');
});
