// Fine-tuning's training step as one TensorFlow graph. Eager tfjs-node dispatches every op of the forward pass,
// its gradient and Adam separately (~1,500 dispatches per step for MobileNetV2's top four blocks); inside a TF
// session the same arithmetic runs as one call, with grappler's fusions and TF's own thread pools. The graph is a
// pure function — weights, Adam moments and BN moving statistics go in, their next values come out — so the state
// stays in tfjs tensors and the graph holds no variables. Gradients are written out layer by layer (the trunk's
// layer kinds, lib/model/keras-layers.ts; the head is the seed's), in reverse order, with TF's own backprop kernels
// (Conv2DBackpropFilter, DepthwiseConv2dNativeBackprop*, Relu6Grad, BiasAddGrad, SoftmaxCrossEntropyWithLogits).
// FineTuneTrainer's eager step is the reference: a test checks one step of each against the other.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { TRUNK_PRECISIONS, TrunkPrecision } from '../settings/config';
import { ensureSavedModelDir, GraphBuilder, savedModelOf } from './graph';
import { loadedNative } from './native';
import { dataDir } from '../settings/paths';
import { AdamArithmetic, AdamHyper, adamConstants, adamUpdate } from '../train/adam';
import { checkLayer, convGeometry, inboundNames, kernelName, biasName, Layer, layerActivation, layerShapes, layerWeightNames, paddingPairs, Shape3 } from '../model/keras-layers';


/** One part of the model input: a trunk on a cut activation, or pooled features passed through. */
export interface StepGraphPart {
  /** Per-image input shape: [h, w, c] at a cut, [D] for pooled features. */
  shape: number[];
  /** The trunk's layers and its weights (names and shapes, in the trainer's variable order); null when frozen. */
  trunk: { cut: string; layers: Layer[]; weights: { name: string; shape: number[] }[] } | null;
}

export { TRUNK_PRECISIONS, TrunkPrecision };

/**
 * 'auto' -> bfloat16 on a CPU with bfloat16 dot-product instructions (AVX512-BF16, AMX-BF16): there oneDNN runs
 * the trunk's MatMuls and depthwise convolutions ~1.5-2.7x faster than float32 (a top-5 step 225 ms against 312 ms,
 * AMD EPYC, 2 cores). Without them bfloat16 is emulated, so float32. The GPU build keeps float32 (unmeasured there).
 */
export function resolveTrunkPrecision(setting: TrunkPrecision | 'auto', cpuFlags: string = readCpuFlags()): TrunkPrecision {
  if (setting !== 'auto') return setting;
  if (loadedNative()?.manifest.flavour === 'gpu') return 'float32';
  return /\b(avx512_bf16|amx_bf16)\b/.test(cpuFlags) ? 'bfloat16' : 'float32';
}

function readCpuFlags(): string {
  try {
    return (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^flags\s*:(.*)$/m) ?? ['', ''])[1];
  } catch {
    return ''; // not Linux: float32
  }
}

export interface StepGraphSpec {
  parts: StepGraphPart[];
  /** Concatenated pooled feature size (the head's input). */
  dim: number;
  units: number;
  classes: number;
  bnEpsilon: number;
  bnMomentum: number;
  adam: AdamHyper;
  /**
   * Arithmetic of the trunks in the training step: 'bfloat16' casts each trunk's input and weights once, runs its
   * forward and backward in bfloat16 (oneDNN accumulates in float32) and casts the pooled output and the weight
   * gradients back; the head, Adam and the weights themselves stay float32. Inference is always float32.
   */
  trunkPrecision?: TrunkPrecision;
}

/** Names of the graph's inputs and outputs (signature keys). */
export const stepNames = {
  part: (i: number) => `x${i}`,
  param: (i: number) => `p${i}`,
  m: (i: number) => `m${i}`,
  v: (i: number) => `v${i}`,
  next: (k: string) => `${k}_next`,
};

class Emitter {
  readonly g = new GraphBuilder();
  /** The float type ops are emitted in: float32, or bfloat16 inside a trunk of a bfloat16 step. */
  dt: TrunkPrecision = 'float32';
  readonly inputs: Record<string, { tensor: string; dims: number[] }> = {};
  readonly outputs: Record<string, string> = {};

  input(key: string, dims: number[]): string {
    const t = this.g.placeholder(key, dims);
    this.inputs[key] = { tensor: t, dims };
    return t;
  }
  output(key: string, tensor: string): void {
    this.outputs[key] = this.g.op('Identity', `out_${key}`, [tensor], { T: this.f() });
  }
  f(): any {
    return this.g.type(this.dt);
  }
  cast(name: string, x: string, from: TrunkPrecision, to: TrunkPrecision): string {
    return this.g.op('Cast', name, [x], { SrcT: this.g.type(from), DstT: this.g.type(to), Truncate: this.g.bool(false) });
  }
  ints(name: string, v: number[]): string {
    return this.g.const(name, Int32Array.from(v), [v.length]);
  }
  scalar(name: string, v: number): string {
    const c = this.g.const(name, Float32Array.from([v]), []);
    return this.dt === 'float32' ? c : this.cast(`${name}/${this.dt}`, c, 'float32', this.dt);
  }
  s(op: string, name: string, ...ins: string[]): string {
    return this.g.op(op, name, ins, { T: this.f() });
  }
  shapeOf(name: string, x: string): string {
    return this.g.op('Shape', `${name}/shape`, [x], { T: this.f(), out_type: this.g.type('int32') });
  }
  reduce(op: 'Mean' | 'Sum', name: string, x: string, axes: number[], keep: boolean): string {
    return this.g.op(op, name, [x, this.ints(`${name}/axes`, axes)], { T: this.f(), Tidx: this.g.type('int32'), keep_dims: this.g.bool(keep) });
  }
  matmul(name: string, a: string, b: string, ta = false, tb = false): string {
    return this.g.op('MatMul', name, [a, b], { T: this.f(), transpose_a: this.g.bool(ta), transpose_b: this.g.bool(tb) });
  }
  biasAdd(name: string, x: string, b: string): string {
    return this.g.op('BiasAdd', name, [x, b], { T: this.f(), data_format: this.g.str('NHWC') });
  }
  biasAddGrad(name: string, dy: string): string {
    return this.g.op('BiasAddGrad', name, [dy], { T: this.f(), data_format: this.g.str('NHWC') });
  }
  reshape(name: string, x: string, dims: number[]): string {
    return this.g.op('Reshape', name, [x, this.ints(`${name}/dims`, dims)], { T: this.f(), Tshape: this.g.type('int32') });
  }
  convAttrs(l: Layer): Record<string, any> {
    const { strides: [sh, sw], dilation: [dh, dw], padding } = convGeometry(l, 'training graph');
    const a: Record<string, any> = {
      T: this.f(), strides: this.g.ints([1, sh, sw, 1]), padding: this.g.str(padding.toUpperCase()),
      data_format: this.g.str('NHWC'), dilations: this.g.ints([1, dh, dw, 1]), explicit_paddings: this.g.ints([]),
    };
    if (l.class_name !== 'DepthwiseConv2D') a.use_cudnn_on_gpu = this.g.bool(true);
    return a;
  }
}

/** Gradient contributions per tensor, summed when read (a residual's input feeds two layers). */
class Grads {
  private parts = new Map<string, string[]>();
  constructor(private e: Emitter) {}
  add(t: string, g: string): void {
    const l = this.parts.get(t) ?? [];
    l.push(g);
    this.parts.set(t, l);
  }
  of(t: string): string | null {
    const l = this.parts.get(t);
    if (!l?.length) return null;
    if (l.length === 1) return l[0];
    return this.e.g.op('AddN', `${t}/grad_sum`, l, { T: this.e.f(), N: this.e.g.int(l.length) });
  }
}

/**
 * A trunk's forward pass from tensor `x`; with `grads`, also returns `backward` which, once the pooled output's
 * gradient is in `grads`, emits the weight gradients (by weight name) in reverse layer order.
 */
function emitTrunk(e: Emitter, trunk: NonNullable<StepGraphPart['trunk']>, inShape: number[], x: string, param: (name: string) => string, grads?: Grads) {
  for (const l of trunk.layers) checkLayer(l, 'trunk', 'training graph');
  const values = new Map<string, string>([[trunk.cut, x]]);
  const shapes = layerShapes(trunk.layers, [[trunk.cut, inShape as Shape3]]);
  const needsGrad = new Set<string>();
  const backward: (() => void)[] = [];
  const weightGrads = new Map<string, string>();
  const g = e.g;
  let out = x;
  for (const l of trunk.layers) {
    const refs = inboundNames(l);
    const ins = refs.map((r) => {
      const v = values.get(r);
      if (v === undefined) throw new Error(`training graph: ${l.name} reads ${r}, which is before the cut (${trunk.cut})`);
      return v;
    });
    const c = l.config ?? {};
    const n = l.name;
    let y: string;
    let back: ((dy: string) => void) | null = null;
    switch (l.class_name) {
      case 'Conv2D':
      case 'DepthwiseConv2D': {
        const depthwise = l.class_name === 'DepthwiseConv2D';
        const kName = kernelName(l);
        const k = param(kName);
        const kShape = trunk.weights.find((w) => w.name === kName)!.shape;
        const act = layerActivation(l);
        const { strides } = convGeometry(l);
        const activate = (t: string) => (act === 'relu' ? e.s('Relu', `${n}/relu`, t) : act === 'relu6' ? e.s('Relu6', `${n}/relu6`, t) : t);
        const activationGrad = (dy: string, out: string) =>
          act === 'relu' ? e.s('ReluGrad', `${n}/relu_grad`, dy, out) : act === 'relu6' ? e.s('Relu6Grad', `${n}/relu6_grad`, dy, out) : dy;
        const input = ins[0];
        const pointwise = !depthwise && kShape[0] === 1 && kShape[1] === 1 && strides.every((v) => v === 1);
        if (pointwise) {
          // A 1x1 convolution is a matrix product over pixels. Written as MatMul, its gradients are MatMuls too:
          // measured ~3x faster than oneDNN's Conv2DBackpropFilter (fused with the bias gradient) on 2 cores.
          const [h, w] = shapes.get(refs[0])!;
          const [cin, cout] = [kShape[2], kShape[3]];
          const x2 = e.reshape(`${n}/pixels`, input, [-1, cin]);
          const k2 = e.reshape(`${n}/kernel_2d`, k, [cin, cout]);
          const mm = e.matmul(`${n}/matmul`, x2, k2);
          // In bfloat16 the bias goes on as an AddV2: grappler fuses MatMul + BiasAdd into oneDNN's inner product,
          // whose bfloat16 path is a plain gemm (22 ms for block 12's expansion at batch 128), while the unfused
          // MatMul runs on AMX where the CPU has it (8 ms); the whole top-6 step measured 456 -> 398 ms (Intel, AMX).
          // On AVX512-BF16 without AMX (AMD EPYC) the two forms measured within noise (top 6: 283 vs 268 ms, then 294
          // vs 302 ms, interleaved), so one form serves both. Float32 keeps the fused form (the same speed either way).
          const withBias = (t: string) => (e.dt === 'float32' ? e.biasAdd(`${n}/BiasAdd`, t, param(biasName(l))) : e.s('AddV2', `${n}/BiasAdd`, t, param(biasName(l))));
          const y2 = activate(c.use_bias ? withBias(mm) : mm);
          y = e.reshape(n, y2, [-1, h, w, cout]);
          back = (dy) => {
            const d = activationGrad(e.reshape(`${n}/grad_pixels`, dy, [-1, cout]), y2);
            if (c.use_bias) weightGrads.set(biasName(l), e.reduce('Sum', `${n}/bias_grad`, d, [0], false));
            weightGrads.set(kName, e.reshape(`${n}/kernel_grad`, e.matmul(`${n}/kernel_grad_2d`, x2, d, true, false), kShape));
            if (needsGrad.has(input)) grads!.add(input, e.reshape(`${n}/input_grad`, e.matmul(`${n}/input_grad_2d`, d, k2, false, true), [-1, h, w, cin]));
          };
          break;
        }
        const attrs = e.convAttrs(l);
        const conv = g.op(depthwise ? 'DepthwiseConv2dNative' : 'Conv2D', n, [input, k], attrs);
        y = activate(c.use_bias ? e.biasAdd(`${n}/BiasAdd`, conv, param(biasName(l))) : conv);
        const out4 = y;
        back = (dy) => {
          const d = activationGrad(dy, out4);
          if (c.use_bias) weightGrads.set(biasName(l), e.biasAddGrad(`${n}/bias_grad`, d));
          const op = depthwise ? 'DepthwiseConv2dNativeBackprop' : 'Conv2DBackprop';
          weightGrads.set(kName, g.op(`${op}Filter`, `${n}/kernel_grad`, [input, e.ints(`${n}/kernel_shape`, kShape), d], attrs));
          if (!needsGrad.has(input)) return;
          const strided = strides.some((v) => v !== 1);
          if (depthwise && strided && e.dt !== 'float32') {
            // TF's bfloat16 DepthwiseConv2dNativeBackpropInput with stride 2 has no oneDNN path: measured 149 ms
            // against 11 ms in float32 for block 13 of MobileNetV2 at batch 128. This one gradient runs in float32.
            const dt = e.dt;
            const up = (t: string, nm: string) => e.cast(`${n}/${nm}_float32`, t, dt, 'float32');
            const gi = g.op(`${op}Input`, `${n}/input_grad`, [e.shapeOf(n, input), up(k, 'kernel'), up(d, 'grad')], { ...attrs, T: g.type('float32') });
            grads!.add(input, e.cast(`${n}/input_grad_${dt}`, gi, 'float32', dt));
            return;
          }
          grads!.add(input, g.op(`${op}Input`, `${n}/input_grad`, [e.shapeOf(n, input), k, d], attrs));
        };
        break;
      }
      case 'ReLU':
      case 'Activation': {
        const act = layerActivation(l);
        const input = ins[0];
        if (act === 'linear') {
          y = e.s('Identity', n, input);
          back = (dy) => needsGrad.has(input) && grads!.add(input, dy);
          break;
        }
        const relu6 = act === 'relu6';
        y = e.s(relu6 ? 'Relu6' : 'Relu', n, input);
        back = (dy) => grads!.add(input, e.s(relu6 ? 'Relu6Grad' : 'ReluGrad', `${n}/grad`, dy, y));
        break;
      }
      case 'Add':
        y = ins.length === 2 ? e.s('AddV2', n, ins[0], ins[1]) : g.op('AddN', n, ins, { T: e.f(), N: g.int(ins.length) });
        back = (dy) => ins.forEach((t) => needsGrad.has(t) && grads!.add(t, dy));
        break;
      case 'ZeroPadding2D': {
        const [[t, b], [lf, r]] = paddingPairs(c.padding);
        y = g.op('Pad', n, [ins[0], g.const(`${n}/paddings`, Int32Array.from([0, 0, t, b, lf, r, 0, 0]), [4, 2])], { T: e.f(), Tpaddings: g.type('int32') });
        const input = ins[0];
        back = (dy) => needsGrad.has(input) && grads!.add(input, g.op('Slice', `${n}/grad`, [dy, e.ints(`${n}/begin`, [0, t, lf, 0]), e.shapeOf(n, input)], { T: e.f(), Index: g.type('int32') }));
        break;
      }
      default: { // GlobalAveragePooling2D
        y = e.reduce('Mean', n, ins[0], [1, 2], false);
        const [h, w, ch] = shapes.get(refs[0])!;
        const input = ins[0];
        back = (dy) => {
          const scaled = e.s('Mul', `${n}/grad_scale`, e.reshape(`${n}/grad_reshape`, dy, [-1, 1, 1, ch]), e.scalar(`${n}/inv_hw`, 1 / (h * w)));
          if (needsGrad.has(input)) grads!.add(input, g.op('BroadcastTo', `${n}/grad`, [scaled, e.shapeOf(`${n}/grad`, input)], { T: e.f(), Tidx: g.type('int32') }));
        };
      }
    }
    values.set(l.name, y);
    if (layerWeightNames(l).length > 0 || ins.some((t) => needsGrad.has(t))) needsGrad.add(y);
    if (grads && back) {
      const yy = y;
      const bk = back;
      backward.push(() => {
        const dy = grads.of(yy);
        if (dy) bk(dy);
      });
    }
    out = y;
  }
  return {
    out,
    backward: () => {
      for (let i = backward.length - 1; i >= 0; i--) backward[i]();
      return weightGrads;
    },
  };
}

/** The trainable parameters in the trainer's order: every trunk's weights (part order), then w1, b1, w2, b2. */
function paramShapes(spec: StepGraphSpec): number[][] {
  return [
    ...spec.parts.flatMap((p) => (p.trunk ? p.trunk.weights.map((w) => w.shape) : [])),
    [spec.dim, spec.units], [spec.units], [spec.units, spec.classes], [spec.classes],
  ];
}

/** Features [B, D]: each part's trunk (or its pooled features), concatenated. Binds the parts' inputs. */
function emitFeatures(e: Emitter, spec: StepGraphSpec, params: string[], grads?: Grads) {
  let next = 0;
  // Inference stays float32 whatever the step uses: the saved model and the cached path must agree within 1e-4.
  const dt: TrunkPrecision = grads ? spec.trunkPrecision ?? 'float32' : 'float32';
  const parts = spec.parts.map((p, i) => {
    const x = e.input(stepNames.part(i), [-1, ...p.shape]);
    if (!p.trunk) return { out: x, backward: null as null | (() => Map<string, string>), names: [] as string[] };
    const names = p.trunk.weights.map((w) => w.name);
    const mine = new Map(names.map((nm) => [nm, params[next++]]));
    const lowered = new Map<string, string>();
    const tag = `part${i}`;
    e.dt = dt;
    const t = emitTrunk(e, p.trunk, p.shape, dt === 'float32' ? x : e.cast(`${tag}/x_${dt}`, x, 'float32', dt), (nm) => {
      const v = mine.get(nm);
      if (!v) throw new Error(`training graph: weight ${nm} is not among the trunk's weights`);
      if (dt === 'float32') return v;
      let c = lowered.get(nm);
      if (!c) lowered.set(nm, (c = e.cast(`${nm}/${dt}`, v, 'float32', dt)));
      return c;
    }, grads);
    e.dt = 'float32';
    if (dt === 'float32') return { out: t.out, backward: t.backward, names };
    // The head sees float32 features; the gradient coming back is lowered again, the weight gradients raised.
    const out = e.cast(`${tag}/features_float32`, t.out, dt, 'float32');
    const backward = () => {
      const d = grads!.of(out);
      if (d) grads!.add(t.out, e.cast(`${tag}/features_grad_${dt}`, d, 'float32', dt));
      e.dt = dt;
      const wg = t.backward();
      e.dt = 'float32';
      return new Map([...wg].map(([nm, gr]) => [nm, e.cast(`${nm}/grad_float32`, gr, dt, 'float32')]));
    };
    return { out, backward, names };
  });
  const f = parts.length === 1 ? parts[0].out : e.g.op('ConcatV2', 'features', [...parts.map((p) => p.out), e.g.const('features/axis', Int32Array.from([1]), [])], { T: e.f(), N: e.g.int(parts.length), Tidx: e.g.type('int32') });
  return { f, parts };
}


/**
 * The training step: inputs x<i>, y (smoothed labels), mask1 [B,D] and mask2 [B,units] (dropout keep masks,
 * already scaled by 1/keep), p<i>/m<i>/v<i> (parameters and Adam moments), mm/mv (BN moving statistics) and the
 * scalars step_backbone / step_head (learning rate x Adam's bias correction), decay_head (lr x weight decay, head
 * kernels), unbias (B/(B-1)) and inv_batch (1/B). Outputs loss, grad_sum (finite when every gradient is) and the
 * next values of p/m/v/mm/mv.
 */
export function stepGraphBytes(spec: StepGraphSpec): Uint8Array {
  const e = new Emitter();
  const g = e.g;
  const shapes = paramShapes(spec);
  const params = shapes.map((s, i) => e.input(stepNames.param(i), s));
  const grads = new Grads(e);
  const { f, parts } = emitFeatures(e, spec, params, grads);
  const [w1, b1, w2, b2] = params.slice(-4);
  const D = spec.dim;
  const y = e.input('y', [-1, spec.classes]);
  const mask1 = e.input('mask1', [-1, D]);
  const mask2 = e.input('mask2', [-1, spec.units]);
  const mm = e.input('mm', [D]);
  const mv = e.input('mv', [D]);
  const scalar = (k: string) => e.input(k, []);
  const [stepBackbone, stepHead, decayHead, unbias, invBatch] = ['step_backbone', 'step_head', 'decay_head', 'unbias', 'inv_batch'].map(scalar);

  // Head forward: BN on batch statistics (no affine), dropout, dense ReLU, dropout, dense; smoothed cross-entropy.
  const mean = e.reduce('Mean', 'bn/mean', f, [0], true);
  const diff = e.s('Sub', 'bn/diff', f, mean);
  const variance = e.reduce('Mean', 'bn/variance', e.s('Square', 'bn/sq', diff), [0], true);
  const rs = e.s('Rsqrt', 'bn/rsqrt', e.s('AddV2', 'bn/var_eps', variance, e.scalar('bn/eps', spec.bnEpsilon)));
  const xhat = e.s('Mul', 'bn/xhat', diff, rs);
  const a = e.s('Mul', 'dropout1', xhat, mask1);
  const h0 = e.s('Relu', 'dense/relu', e.biasAdd('dense/bias', e.matmul('dense/matmul', a, w1), b1));
  const h = e.s('Mul', 'dropout2', h0, mask2);
  const logits = e.biasAdd('out/bias', e.matmul('out/matmul', h, w2), b2);
  const ce = g.op('SoftmaxCrossEntropyWithLogits', 'xent', [logits, y], { T: e.f() });
  const loss = e.reduce('Mean', 'loss', ce, [0], false);

  // Head backward (the cross-entropy op returns softmax - y as its second output).
  const dLogits = e.s('Mul', 'out/grad', `${ce}:1`, invBatch);
  const headGrads: string[] = [];
  const dh = e.s('Mul', 'dropout2/grad', e.matmul('out/input_grad', dLogits, w2, false, true), mask2);
  const dz1 = e.s('ReluGrad', 'dense/relu_grad', dh, h0);
  headGrads.push(e.matmul('dense/kernel_grad', a, dz1, true, false), e.biasAddGrad('dense/bias_grad', dz1));
  headGrads.push(e.matmul('out/kernel_grad', h, dLogits, true, false), e.biasAddGrad('out/bias_grad', dLogits));
  const dxhat = e.s('Mul', 'dropout1/grad', e.matmul('dense/input_grad', dz1, w1, false, true), mask1);
  // BN backward without affine: df = rs * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
  const m1 = e.reduce('Mean', 'bn/grad_m1', dxhat, [0], true);
  const m2 = e.reduce('Mean', 'bn/grad_m2', e.s('Mul', 'bn/grad_dx_xhat', dxhat, xhat), [0], true);
  const df = e.s('Mul', 'bn/grad', rs, e.s('Sub', 'bn/grad_c', e.s('Sub', 'bn/grad_a', dxhat, m1), e.s('Mul', 'bn/grad_b', xhat, m2)));

  // Trunk backward: the feature gradient split back into parts.
  const dParts = spec.parts.length === 1 ? [df] : (() => {
    const sizes = partDims(spec);
    const split = g.op('SplitV', 'features/grad', [df, e.ints('features/grad_sizes', sizes), g.const('features/grad_axis', Int32Array.from([1]), [])], {
      T: e.f(), Tlen: g.type('int32'), num_split: g.int(sizes.length),
    });
    return sizes.map((_, i) => `${split}:${i}`);
  })();
  const trunkGrads: string[] = [];
  parts.forEach((p, i) => {
    if (!p.backward) return;
    grads.add(p.out, dParts[i]);
    const wg = p.backward();
    for (const nm of p.names) {
      const gr = wg.get(nm);
      if (!gr) throw new Error(`training graph: no gradient reaches ${nm}`);
      trunkGrads.push(gr);
    }
  });
  const allGrads = [...trunkGrads, ...headGrads];
  // NaN in, finite out: oneDNN's fused ReLU6 maps NaN to a number, so a NaN activation or weight would not reach the
  // loss. It does reach the gradients (the filter gradient reads the input); their sum is the step's health check.
  const gradSums = allGrads.map((gr, i) => e.reduce('Sum', `check/sum${i}`, gr, shapes[i].map((_, k) => k), false));
  e.output('grad_sum', g.op('AddN', 'check/grad_sum', gradSums, { T: e.f(), N: g.int(gradSums.length) }));

  // Adam (and decoupled weight decay on the head kernels), parameter by parameter: lib/train/adam.ts's update in
  // graph nodes, its step and decay coefficients fed per step.
  const nTrunk = trunkGrads.length;
  const k = adamConstants(spec.adam);
  const constants = {
    b1: e.scalar('adam/b1', k.b1), oneMinusB1: e.scalar('adam/1-b1', k.oneMinusB1),
    b2: e.scalar('adam/b2', k.b2), oneMinusB2: e.scalar('adam/1-b2', k.oneMinusB2), eps: e.scalar('adam/eps', k.eps),
  };
  const ops: AdamArithmetic<string, string> = {
    add: (a, b, name) => e.s('AddV2', `adam/${name}`, a, b),
    sub: (a, b, name) => e.s('Sub', `adam/${name}`, a, b),
    mul: (a, b, name) => e.s('Mul', `adam/${name}`, a, b),
    div: (a, b, name) => e.s('RealDiv', `adam/${name}`, a, b),
    sqrt: (a, name) => e.s('Sqrt', `adam/${name}`, a),
    square: (a, name) => e.s('Square', `adam/${name}`, a),
  };
  allGrads.forEach((gr, i) => {
    const m = e.input(stepNames.m(i), shapes[i]);
    const v = e.input(stepNames.v(i), shapes[i]);
    const headKernel = i === nTrunk || i === nTrunk + 2;
    const next = adamUpdate(ops, i, params[i], gr, m, v, { ...constants, step: i < nTrunk ? stepBackbone : stepHead, decay: headKernel ? decayHead : undefined });
    e.output(stepNames.next(stepNames.param(i)), next.p);
    e.output(stepNames.next(stepNames.m(i)), next.m);
    e.output(stepNames.next(stepNames.v(i)), next.v);
  });

  // BN moving statistics (unbiased variance, as Keras).
  const mom = e.scalar('bn/momentum', spec.bnMomentum);
  const oneMinus = e.scalar('bn/1-momentum', 1 - spec.bnMomentum);
  const meanFlat = e.reshape('bn/mean_flat', mean, [-1]);
  const varFlat = e.s('Mul', 'bn/var_unbiased', e.reshape('bn/var_flat', variance, [-1]), unbias);
  e.output(stepNames.next('mm'), e.s('AddV2', 'bn/mm', e.s('Mul', 'bn/mm_a', mm, mom), e.s('Mul', 'bn/mm_b', meanFlat, oneMinus)));
  e.output(stepNames.next('mv'), e.s('AddV2', 'bn/mv', e.s('Mul', 'bn/mv_a', mv, mom), e.s('Mul', 'bn/mv_b', varFlat, oneMinus)));
  e.output('loss', loss);
  return savedModelOf(g, e.inputs, e.outputs);
}

/** Pooled feature size per part: a trunk's last layer's channels, or the frozen features' size. */
export function partDims(spec: StepGraphSpec): number[] {
  return spec.parts.map((p) => {
    if (!p.trunk) return p.shape[0];
    const shapes = layerShapes(p.trunk.layers, [[p.trunk.cut, p.shape as Shape3]]);
    const last = p.trunk.layers[p.trunk.layers.length - 1];
    return shapes.get(last ? last.name : p.trunk.cut)![2];
  });
}

/** Inference: inputs x<i>, p<i> (as the step graph), mm, mv; outputs features [B, D] and probs [B, classes]. */
export function inferGraphBytes(spec: StepGraphSpec): Uint8Array {
  const e = new Emitter();
  const params = paramShapes(spec).map((s, i) => e.input(stepNames.param(i), s));
  const { f } = emitFeatures(e, spec, params);
  const [w1, b1, w2, b2] = params.slice(-4);
  const mm = e.input('mm', [spec.dim]);
  const mv = e.input('mv', [spec.dim]);
  const a = e.s('Mul', 'bn', e.s('Sub', 'bn/centre', f, mm), e.s('Rsqrt', 'bn/rsqrt', e.s('AddV2', 'bn/var_eps', mv, e.scalar('bn/eps', spec.bnEpsilon))));
  const h = e.s('Relu', 'dense/relu', e.biasAdd('dense/bias', e.matmul('dense/matmul', a, w1), b1));
  const logits = e.biasAdd('out/bias', e.matmul('out/matmul', h, w2), b2);
  e.output('features', f);
  e.output('probs', e.s('Softmax', 'probs', logits));
  return savedModelOf(e.g, e.inputs, e.outputs);
}

/** A loaded graph function: named tensors in, named tensors out (inputs are not disposed). */
export interface GraphFunction {
  run(inputs: Record<string, tf.Tensor>): Record<string, tf.Tensor>;
  dispose(): void;
}

async function loadGraphFunction(dir: string): Promise<GraphFunction> {
  const tfnode = loadedNative()?.tfnode;
  if (!tfnode || tf.getBackend() !== 'tensorflow') throw new Error('training graph: needs the tensorflow backend');
  const model = await tfnode.node.loadSavedModel(dir, ['serve'], 'serving_default');
  return {
    run: (inputs) => model.predict(inputs) as Record<string, tf.Tensor>,
    dispose: () => model.dispose(),
  };
}

/** The step and inference graphs of a spec, written once under DATA_DIR/cache/graphs and loaded. */
export async function loadStepGraphs(spec: StepGraphSpec): Promise<{ step: GraphFunction; infer: GraphFunction }> {
  // Keyed by the bytes themselves (emitting takes milliseconds): any change to the writer gives a new folder.
  const root = dataDir('cache', 'graphs');
  const write = (kind: string, bytes: Uint8Array) =>
    ensureSavedModelDir(`finetune-${kind}-${crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16)}`, root, () => bytes);
  const stepDir = write('step', stepGraphBytes(spec));
  const inferDir = write('infer', inferGraphBytes(spec));
  return { step: await loadGraphFunction(stepDir), infer: await loadGraphFunction(inferDir) };
}
