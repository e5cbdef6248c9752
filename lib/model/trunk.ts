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

export type Layer = { name: string; class_name: string; config: any; inbound_nodes: any[] };

function functionalLayers(topology: any): { layers: Layer[]; output_layers: any[] } {
  const cfg = topology.model_config ?? topology;
  if (cfg.class_name !== 'Model' && cfg.class_name !== 'Functional') throw new Error(`expected a functional Model topology, got ${cfg.class_name}`);
  return cfg.config;
}

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
  const shapes = new Map<string, [number, number, number]>();
  for (const l of functionalLayers(topology).layers) {
    const s: [number, number, number] = l.class_name === 'InputLayer'
      ? [resolution, resolution, 3]
      : layerOutputShape(l, (l.inbound_nodes[0] ?? []).map((r: any[]) => shapes.get(r[0])!));
    shapes.set(l.name, s);
    if (l.name === cut) return s;
  }
  throw new Error(`cut layer ${cut} not found in the backbone`);
}

/** Per-image output shape [h, w, c] of one layer given its inputs' (pooling gives [1, 1, c]). */
export function layerOutputShape(l: Layer, ins: [number, number, number][]): [number, number, number] {
  const c = l.config;
  const conv = (k: number[], st: number[], ch: number): [number, number, number] => {
    const [h, w] = ins[0];
    const out = (x: number, i: number) => (c.padding === 'valid' ? Math.floor((x - k[i]) / st[i]) + 1 : Math.ceil(x / st[i]));
    return [out(h, 0), out(w, 1), ch];
  };
  switch (l.class_name) {
    case 'Conv2D':
      return conv(c.kernel_size, c.strides, c.filters);
    case 'DepthwiseConv2D':
      return conv(c.kernel_size, c.strides, ins[0][2] * (c.depth_multiplier ?? 1));
    case 'ZeroPadding2D': {
      const [[t, b], [lft, r]] = paddingPairs(c.padding);
      return [ins[0][0] + t + b, ins[0][1] + lft + r, ins[0][2]];
    }
    case 'GlobalAveragePooling2D':
      return [1, 1, ins[0][2]];
    default: // elementwise: ReLU, Activation, Add, BatchNormalization
      return ins[0];
  }
}

/** ZeroPadding2D's padding as [[top, bottom], [left, right]]. */
export function paddingPairs(p: number | number[] | number[][]): [[number, number], [number, number]] {
  if (typeof p === 'number') return [[p, p], [p, p]];
  if (Array.isArray(p[0])) return p as [[number, number], [number, number]];
  return [[p[0] as number, p[0] as number], [p[1] as number, p[1] as number]];
}

/** The layers after `cut` up to the (pooled) output, in topological order. */
export function suffixLayers(topology: any, cut: string): Layer[] {
  const cfg = functionalLayers(topology);
  const idx = cfg.layers.findIndex((l) => l.name === cut);
  if (idx < 0) throw new Error(`cut layer ${cut} not found in the backbone`);
  return cfg.layers.slice(idx + 1);
}

/** Weight names a layer owns, in the order of the backbone's weight manifest. */
function layerWeightNames(l: Layer): string[] {
  switch (l.class_name) {
    case 'Conv2D':
      return [`${l.name}/kernel`, ...(l.config.use_bias ? [`${l.name}/bias`] : [])];
    case 'DepthwiseConv2D':
      return [`${l.name}/depthwise_kernel`, ...(l.config.use_bias ? [`${l.name}/bias`] : [])];
    default:
      return [];
  }
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

export const SUPPORTED = ['Conv2D', 'DepthwiseConv2D', 'ReLU', 'Activation', 'Add', 'GlobalAveragePooling2D', 'ZeroPadding2D'];

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
      if (!SUPPORTED.includes(l.class_name)) throw new Error(`trunk: layer ${l.name} (${l.class_name}) is not supported`);
      if (l.class_name === 'ReLU' && !(l.config.max_value === 6 || l.config.max_value == null)) throw new Error(`trunk: ${l.name}: only relu and relu6`);
      if ((l.class_name === 'Conv2D' || l.class_name === 'DepthwiseConv2D') && l.config.activation && !['linear', 'relu', 'relu6'].includes(l.config.activation)) {
        throw new Error(`trunk: ${l.name}: activation ${l.config.activation} not supported`);
      }
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
    const act = (y: tf.Tensor, a: string | undefined) => (a === 'relu' ? tf.relu(y) : a === 'relu6' ? relu6(y) : y);
    let last: tf.Tensor = x;
    for (const l of this.layers) {
      const ins = (l.inbound_nodes[0] ?? []).map((r: any[]) => {
        const v = vals.get(r[0]);
        if (!v) throw new Error(`trunk: ${l.name} reads ${r[0]}, which is before the cut (${this.cut})`);
        return v;
      });
      const c = l.config;
      let y: tf.Tensor;
      switch (l.class_name) {
        case 'Conv2D': {
          y = tf.conv2d(ins[0] as tf.Tensor4D, this.vars.get(`${l.name}/kernel`)! as tf.Tensor4D, c.strides, c.padding);
          if (c.use_bias) y = tf.add(y, this.vars.get(`${l.name}/bias`)!);
          y = act(y, c.activation);
          break;
        }
        case 'DepthwiseConv2D': {
          y = tf.depthwiseConv2d(ins[0] as tf.Tensor4D, this.vars.get(`${l.name}/depthwise_kernel`)! as tf.Tensor4D, c.strides, c.padding);
          if (c.use_bias) y = tf.add(y, this.vars.get(`${l.name}/bias`)!);
          y = act(y, c.activation);
          break;
        }
        case 'ReLU':
          y = c.max_value === 6 ? relu6(ins[0]) : tf.relu(ins[0]);
          break;
        case 'Activation':
          if (c.activation !== 'relu6' && c.activation !== 'relu') throw new Error(`trunk: ${l.name}: activation ${c.activation} not supported`);
          y = act(ins[0], c.activation);
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
