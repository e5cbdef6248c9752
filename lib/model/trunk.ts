// The trainable top of a backbone ("trunk"): the layers after a cut, as tf.Variables and a forward pass written
// with differentiable tfjs ops. Fine-tuning caches the frozen part's output (the activation at the cut) once per
// image and view, and trains only this trunk plus the head on it — the frozen bottom never runs again.
//
// Blocks: MobileNetV2's inverted-residual blocks (block_<n>_*, ending at block_<n>_add or block_<n>_project) and
// MobileNet v1's depthwise-separable blocks (conv_dw_<n> + conv_pw_<n>, ending at conv_pw_<n>_relu). "Train the
// top k blocks" cuts after block N-k; the trunk then also holds what follows the last block (V2's Conv_1).
// BatchNormalization is folded into the convolutions first (lib/features/backbones.ts), so the trunk has no batch statistics
// to freeze: its convolutions train with their folded biases.
import * as tf from '@tensorflow/tfjs';
import { BackboneName } from '../features/backbones';
import { loadedNative } from '../engine/native';
import {
  biasName, checkLayer, convGeometry, functionalLayers, inboundNames, kernelName, Layer, layerActivation, layerShapes, layerWeightNames, paddingPairs,
} from './keras-layers';

/** How a backbone's layer names mark the end of each block (the block number is the first group). */
const BLOCK_END: Record<BackboneName, RegExp> = {
  mobilenet_v2: /^block_(\d+)_(add|project)$/,
  'mobilenet_v1_0.75': /^conv_pw_(\d+)_relu$/,
};

/** The last layer of each numbered block, in block order. */
export function blockEnds(backbone: BackboneName, topology: any): string[] {
  const re = BLOCK_END[backbone];
  const last = new Map<number, string>();
  for (const l of functionalLayers(topology).layers) {
    const m = re.exec(l.name);
    if (m) last.set(Number(m[1]), l.name); // a block's add follows its project: the later layer wins
  }
  return [...last.entries()].sort((a, b) => a[0] - b[0]).map(([, name]) => name);
}

/** The layer whose output is cached when the top `trainableBlocks` blocks train (1 <= k < number of blocks). */
export function cutLayer(backbone: BackboneName, topology: any, trainableBlocks: number): string {
  const ends = blockEnds(backbone, topology);
  if (!(Number.isInteger(trainableBlocks) && trainableBlocks >= 1 && trainableBlocks < ends.length)) {
    throw new Error(`trainableBlocks ${trainableBlocks} for ${backbone}: expected an integer from 0 to ${ends.length - 1} (it has ${ends.length} blocks)`);
  }
  return ends[ends.length - 1 - trainableBlocks];
}

/**
 * What learns above a cut, in order, grouped the way the backbone names its layers: "block_13" for every layer of
 * block 13, else the layer's own name ("Conv_1", "Conv_1_bn", "out_relu").
 */
export function groupsAbove(topology: any, cut: string): string[] {
  const layers = functionalLayers(topology).layers;
  const idx = layers.findIndex((l) => l.name === cut);
  if (idx < 0) throw new Error(`cut layer ${cut} not found in the backbone`);
  const out: string[] = [];
  for (const l of layers.slice(idx + 1)) {
    const g = /^(block_\d+|conv_(?:dw|pw)_\d+)/.exec(l.name)?.[1] ?? l.name;
    if (!out.includes(g)) out.push(g);
  }
  return out;
}

/** The backbone topology truncated at `cut` (no pooling): what the cached activation is computed with. */
export function prefixTopology(topology: any, cut: string): any {
  const t = JSON.parse(JSON.stringify(topology));
  const cfg = functionalLayers(t);
  const idx = cfg.layers.findIndex((l) => l.name === cut);
  if (idx < 0) throw new Error(`cut layer ${cut} not found in the backbone`);
  cfg.layers = cfg.layers.slice(0, idx + 1);
  cfg.output_layers = [[cut, 0, 0]];
  return t;
}

/** Per-image shape [h, w, c] of the cut layer's output for square inputs of `resolution` pixels. */
export function cutShape(topology: any, cut: string, resolution: number): [number, number, number] {
  const shape = layerShapes(functionalLayers(topology).layers, [], [resolution, resolution, 3], cut).get(cut);
  if (!shape) throw new Error(`cut layer ${cut} not found in the backbone`);
  return shape;
}

/** The layers after `cut` up to the (pooled) output, in topological order. */
export function suffixLayers(topology: any, cut: string): Layer[] {
  const cfg = functionalLayers(topology);
  const idx = cfg.layers.findIndex((l) => l.name === cut);
  if (idx < 0) throw new Error(`cut layer ${cut} not found in the backbone`);
  return cfg.layers.slice(idx + 1);
}

/**
 * ReLU6 whose gradient is TensorFlow's own Relu6Grad kernel on the tensorflow backend. tfjs' generic gradient
 * builds the mask from Step, which tfjs-node runs as isNaN + greater + where + fill + select: measured 160 of the
 * 347 ms of a MobileNetV2 blocks-13-16 training step (batch 128), against ~9 ms for the native kernel.
 */
function relu6(x: tf.Tensor): tf.Tensor {
  if (tf.getBackend() !== 'tensorflow') return tf.relu6(x);
  return nativeRelu6(x);
}
const nativeRelu6 = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
  const y = tf.relu6(x);
  save([y]);
  return {
    value: y,
    // Relu6Grad(gradients, features): features may be the output too (the mask 0 < y < 6 is the same).
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => nativeOp('Relu6Grad', [dy, saved[0]]),
  };
}) as any) as (x: tf.Tensor) => tf.Tensor;

/** One float32 TensorFlow op by name through tfjs-node's backend (its kernels cover only tfjs' own op set). */
function nativeOp(name: string, inputs: tf.Tensor[]): tf.Tensor {
  const native = loadedNative();
  if (!native) throw new Error(`${name}: the native TensorFlow backend is not loaded`);
  const kb = require(require('path').join(native.packageDir, 'dist', 'nodejs_kernel_backend.js'));
  return (tf.backend() as any).executeSingleOutput(name, [kb.createTensorsTypeOpAttr('T', 'float32')], inputs);
}

/**
 * The trunk: the suffix layers with their weights as variables. `forward` maps the cut activation [B,h,w,c] to the
 * pooled feature [B,D] with the same arithmetic as the frozen backbone (tests check equality), differentiably.
 */
export class Trunk {
  readonly layers: Layer[];
  readonly vars: Map<string, tf.Variable>;
  readonly cut: string;

  constructor(topology: any, cut: string, weight: (name: string) => { values: Float32Array; shape: number[] }) {
    this.cut = cut;
    this.layers = suffixLayers(topology, cut);
    this.vars = new Map();
    for (const l of this.layers) {
      checkLayer(l, 'trunk', 'trunk');
      for (const n of layerWeightNames(l)) {
        const w = weight(n);
        this.vars.set(n, tf.variable(tf.tensor(w.values, w.shape, 'float32'), true)); // unnamed: names are global in tfjs
      }
    }
  }

  /** Trainable variables, in layer order. */
  get variables(): tf.Variable[] {
    return [...this.vars.values()];
  }

  get parameterCount(): number {
    return this.variables.reduce((a, v) => a + v.size, 0);
  }

  /** Cut activation [B,h,w,c] -> pooled features [B,D] (call inside tf.tidy or a gradient function). */
  forward(x: tf.Tensor4D): tf.Tensor2D {
    const vals = new Map<string, tf.Tensor>([[this.cut, x]]);
    const act = (y: tf.Tensor, a: string) => (a === 'relu' ? tf.relu(y) : a === 'relu6' ? relu6(y) : y);
    let last: tf.Tensor = x;
    for (const l of this.layers) {
      const ins = inboundNames(l).map((r) => {
        const v = vals.get(r);
        if (!v) throw new Error(`trunk: ${l.name} reads ${r}, which is before the cut (${this.cut})`);
        return v;
      });
      const c = l.config;
      let y: tf.Tensor;
      switch (l.class_name) {
        case 'Conv2D':
        case 'DepthwiseConv2D': {
          const { strides, padding } = convGeometry(l);
          const kernel = this.vars.get(kernelName(l))! as tf.Tensor4D;
          y = l.class_name === 'Conv2D'
            ? tf.conv2d(ins[0] as tf.Tensor4D, kernel, strides, padding)
            : tf.depthwiseConv2d(ins[0] as tf.Tensor4D, kernel, strides, padding);
          if (c.use_bias) y = tf.add(y, this.vars.get(biasName(l))!);
          y = act(y, layerActivation(l));
          break;
        }
        case 'ReLU':
        case 'Activation':
          y = act(ins[0], layerActivation(l));
          break;
        case 'Add':
          y = ins.length === 2 ? tf.add(ins[0], ins[1]) : tf.addN(ins);
          break;
        case 'ZeroPadding2D': {
          const pp = paddingPairs(c.padding);
          y = tf.pad(ins[0], [[0, 0], pp[0], pp[1], [0, 0]]);
          break;
        }
        default: // GlobalAveragePooling2D
          y = tf.mean(ins[0], [1, 2]);
      }
      vals.set(l.name, y);
      last = y;
    }
    if (last.rank !== 2) throw new Error(`trunk: output has rank ${last.rank}, expected pooled [B, D]`);
    return last as tf.Tensor2D;
  }

  /** Current weights by name (copies as plain arrays): they replace the backbone's for saving. */
  async weightValues(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const [n, v] of this.vars) out.set(n, (await v.data()) as Float32Array);
    return out;
  }

  setWeights(ws: Map<string, tf.Tensor>): void {
    for (const [n, v] of this.vars) {
      const w = ws.get(n);
      if (w) v.assign(w);
    }
  }

  dispose(): void {
    for (const v of this.vars.values()) v.dispose();
  }
}
