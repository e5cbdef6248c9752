// The Keras functional topology as this project reads it (tfjs layers-format model.json: the backbones, their
// BN-folded artifacts, a saved classifier). Four interpreters emit code from it — the compiled extractor (eager
// fused tfjs ops, lib/features/backbones.ts), the graph writer (TF GraphDef, lib/engine/graph.ts), the fine-tuning
// trunk (differentiable tfjs ops, lib/model/trunk.ts) and its step graph (TF ops with their gradients,
// lib/engine/train-graph.ts) — and what they share about a layer lives here, once: which kinds exist and which
// emitter implements each, the weights a kind owns, the activation a layer computes, a convolution's geometry and
// the output shape it gives, and the one error for a layer an emitter cannot run. Adding a layer kind means an entry
// in LAYER_KINDS plus a case in each emitter that lists it. Pure data: no tfjs, importable anywhere.

export type Layer = { name: string; class_name: string; config: any; inbound_nodes: any[] };

export interface FunctionalConfig {
  layers: Layer[];
  input_layers: any[];
  output_layers: any[];
}

/** The layers of a functional Model topology (model.json's modelTopology, or its model_config). */
export function functionalLayers(topology: any, who?: string): FunctionalConfig {
  const cfg = topology.model_config ?? topology;
  if (cfg.class_name !== 'Model' && cfg.class_name !== 'Functional') {
    throw new Error(`${who ? `${who}: ` : ''}expected a functional Model topology, got ${cfg.class_name}`);
  }
  return cfg.config;
}

/** Names of the layers a layer reads (its only application: shared layers are not supported anywhere). */
export const inboundNames = (l: Layer): string[] => (l.inbound_nodes[0] ?? []).map((r: any[]) => r[0]);

/** Per-image shape [h, w, c] (pooling gives [1, 1, c]). */
export type Shape3 = [number, number, number];

/**
 * The code generators: 'extractor' — compileExtractor's fused eager ops; 'graph' — the frozen-graph writer;
 * 'trunk' — the fine-tuning trunk, both its eager forward (Trunk) and the step graph's forward and backward
 * (they train the same layers, so they support the same kinds).
 */
export type Emitter = 'extractor' | 'graph' | 'trunk';

// Dilation: the backbones have none; the trunk could not train it (tfjs has no gradient for dilated convolutions, and
// the eager step is the step graph's reference), and the extractor does not pass it on.
const EMITTERS: Record<Emitter, { label: string; activations: readonly string[]; dilation: boolean }> = {
  extractor: { label: 'the compiled extractor', activations: ['linear', 'relu', 'relu6'], dilation: false },
  graph: { label: 'the graph writer', activations: ['linear', 'relu', 'relu6', 'softmax', 'sigmoid'], dilation: true },
  trunk: { label: 'the fine-tuning trunk', activations: ['linear', 'relu', 'relu6'], dilation: false },
};

interface LayerKind {
  /** The emitters that implement it. */
  emitters: readonly Emitter[];
  /** Its weights' names after `<layer>/`, in the order of the weight manifest (Keras' order). */
  weights?: (c: any) => string[];
  /** The activation it computes (convolutions and Dense: their fused one); an unknown one is named for the error. */
  activation?: (c: any) => string;
  /** True for layers that are nothing but their activation (ReLU, Activation, Softmax). */
  activationOnly?: boolean;
  /** A 2-D convolution: convGeometry describes it, and its bias and activation can be fused into it. */
  convolution?: boolean;
  /** Per-image output shape from its inputs' (kinds without one never meet the shape walk: the head's, nesting). */
  shape?: (c: any, ins: Shape3[]) => Shape3;
}

const ALL: readonly Emitter[] = ['extractor', 'graph', 'trunk'];
const withBias = (kernel: string) => (c: any) => [kernel, ...(c.use_bias ? ['bias'] : [])];
const own = (c: any) => c.activation ?? 'linear';
const same = (_c: any, ins: Shape3[]): Shape3 => ins[0];

export const LAYER_KINDS: Record<string, LayerKind> = {
  // The trunk starts at a cut, after the input: it never meets one.
  InputLayer: { emitters: ['extractor', 'graph'] },
  Conv2D: { emitters: ALL, convolution: true, weights: withBias('kernel'), activation: own, shape: (c, ins) => convShape(c, ins[0], c.filters) },
  DepthwiseConv2D: {
    emitters: ALL, convolution: true, weights: withBias('depthwise_kernel'), activation: own,
    shape: (c, ins) => convShape(c, ins[0], ins[0][2] * (c.depth_multiplier ?? 1)),
  },
  ReLU: {
    emitters: ALL, activationOnly: true, shape: same,
    activation: (c) => c.negative_slope || c.threshold ? 'leaky/thresholded relu'
      : c.max_value === 6 ? 'relu6'
      : c.max_value === null || c.max_value === undefined ? 'relu'
      : `relu with max_value ${c.max_value}`,
  },
  Activation: { emitters: ALL, activationOnly: true, activation: (c) => c.activation, shape: same },
  Add: { emitters: ALL, shape: same },
  ZeroPadding2D: {
    emitters: ALL,
    shape: (c, ins) => {
      const [[t, b], [l, r]] = paddingPairs(c.padding);
      return [ins[0][0] + t + b, ins[0][1] + l + r, ins[0][2]];
    },
  },
  GlobalAveragePooling2D: { emitters: ALL, shape: (_c, ins) => [1, 1, ins[0][2]] },
  // Folded into the convolutions before the extractor and the trunk see a backbone (foldBatchNorm).
  BatchNormalization: {
    emitters: ['graph'], shape: same,
    weights: (c) => [...(c.scale === false ? [] : ['gamma']), ...(c.center === false ? [] : ['beta']), 'moving_mean', 'moving_variance'],
  },
  Dense: { emitters: ['graph'], weights: withBias('kernel'), activation: own },
  Softmax: { emitters: ['graph'], activationOnly: true, activation: () => 'softmax' },
  Concatenate: { emitters: ['graph'] },
  Dropout: { emitters: ['graph'], shape: same },
  // lib/model/classifier's custom layer: x / 127.5 - 1 and a resize.
  ResizeNormalize: { emitters: ['graph'] },
  // A nested model (a saved classifier's backbones).
  Functional: { emitters: ['graph'] },
  Model: { emitters: ['graph'] },
};

/** The layer kinds an emitter implements, in LAYER_KINDS order. */
export function supportedKinds(emitter: Emitter): string[] {
  return Object.entries(LAYER_KINDS).filter(([, k]) => k.emitters.includes(emitter)).map(([name]) => name);
}

function kindOf(l: Layer): LayerKind | undefined {
  return Object.prototype.hasOwnProperty.call(LAYER_KINDS, l.class_name) ? LAYER_KINDS[l.class_name] : undefined;
}

/** The one error for a layer an emitter cannot run: the layer, its kind, and what the emitter supports. */
export function unsupportedLayer(l: Layer, emitter: Emitter, who: string): Error {
  return new Error(`${who}: layer ${l.name} (${l.class_name}) is not supported by ${EMITTERS[emitter].label} (supported: ${supportedKinds(emitter).join(', ')})`);
}

/**
 * Throw unless `emitter` can run `l`: its kind, its activation, its convolution geometry (padding, data format,
 * dilation). Emitters call it on every layer before emitting, so their switches meet only what they support.
 */
export function checkLayer(l: Layer, emitter: Emitter, who: string): void {
  const kind = kindOf(l);
  if (!kind || !kind.emitters.includes(emitter)) throw unsupportedLayer(l, emitter, who);
  const { activations, label, dilation } = EMITTERS[emitter];
  if (kind.activation) {
    const act = kind.activation(l.config ?? {});
    if (!activations.includes(act)) {
      throw new Error(`${who}: layer ${l.name} (${l.class_name}): activation ${act} is not supported by ${label} (supported: ${activations.join(', ')})`);
    }
  }
  if (kind.convolution) {
    const g = convGeometry(l, who);
    if (!dilation && (g.dilation[0] !== 1 || g.dilation[1] !== 1)) throw new Error(`${who}: layer ${l.name}: dilation is not supported by ${label}`);
  }
}

/** The activation a layer applies ('linear' for none); call checkLayer first. */
export function layerActivation(l: Layer): string {
  return kindOf(l)?.activation?.(l.config ?? {}) ?? 'linear';
}

/** True for Conv2D and DepthwiseConv2D (see LayerKind.convolution). */
export const isConvolution = (l: Layer): boolean => !!kindOf(l)?.convolution;

/** True for a layer that only applies ReLU6 (ReLU max_value 6, Activation relu6): what a convolution can fuse. */
export function isRelu6(l: Layer): boolean {
  return !!kindOf(l)?.activationOnly && layerActivation(l) === 'relu6';
}

/** The full names of the weights a layer owns, in the order of the weight manifest. */
export function layerWeightNames(l: Layer): string[] {
  return (kindOf(l)?.weights?.(l.config ?? {}) ?? []).map((w) => `${l.name}/${w}`);
}

/** A convolution's (or Dense's) kernel: `<layer>/kernel`, or `<layer>/depthwise_kernel` for a depthwise one. */
export function kernelName(l: Layer): string {
  return layerWeightNames(l)[0];
}

export const biasName = (l: Layer): string => `${l.name}/bias`;

/** [a, b] from Keras' `n` or `[a, b]` (strides, dilation_rate, kernel_size). */
function pair(v: number | number[] | undefined, dflt: number): [number, number] {
  if (v === undefined || v === null) return [dflt, dflt];
  return typeof v === 'number' ? [v, v] : [v[0], v[1] ?? v[0]];
}

export interface ConvGeometry {
  kernel: [number, number];
  strides: [number, number];
  dilation: [number, number];
  padding: 'same' | 'valid';
}

/** A Conv2D / DepthwiseConv2D's geometry with Keras' defaults (stride 1, no dilation, 'valid'); NHWC only. */
export function convGeometry(l: Layer, who = 'layer'): ConvGeometry {
  const c = l.config ?? {};
  if (c.data_format && c.data_format !== 'channels_last') throw new Error(`${who}: layer ${l.name}: only channels_last is supported`);
  const padding = c.padding ?? 'valid';
  if (padding !== 'same' && padding !== 'valid') throw new Error(`${who}: layer ${l.name}: padding ${JSON.stringify(padding)} is not supported`);
  return { kernel: pair(c.kernel_size, 1), strides: pair(c.strides, 1), dilation: pair(c.dilation_rate, 1), padding };
}

function convShape(c: any, [h, w]: Shape3, channels: number): Shape3 {
  const g = convGeometry({ name: '', class_name: '', config: c, inbound_nodes: [] });
  const out = (x: number, i: 0 | 1) => {
    const k = (g.kernel[i] - 1) * g.dilation[i] + 1;
    return g.padding === 'valid' ? Math.floor((x - k) / g.strides[i]) + 1 : Math.ceil(x / g.strides[i]);
  };
  return [out(h, 0), out(w, 1), channels];
}

/** ZeroPadding2D's padding as [[top, bottom], [left, right]]. */
export function paddingPairs(p: number | number[] | number[][]): [[number, number], [number, number]] {
  if (typeof p === 'number') return [[p, p], [p, p]];
  if (Array.isArray(p[0])) return p as [[number, number], [number, number]];
  return [[p[0] as number, p[0] as number], [p[1] as number, p[1] as number]];
}

/** Per-image output shape [h, w, c] of one layer given its inputs'. */
export function outputShape(l: Layer, ins: Shape3[]): Shape3 {
  const shape = kindOf(l)?.shape;
  if (!shape) throw new Error(`layer ${l.name} (${l.class_name}): no output shape rule for this kind`);
  return shape(l.config ?? {}, ins);
}

/**
 * Output shapes of `layers` in order, starting from the shapes already known (the tensor at a cut); an InputLayer
 * gives `input`. Stops after `until` when given.
 */
export function layerShapes(layers: Layer[], known: [string, Shape3][], input?: Shape3, until?: string): Map<string, Shape3> {
  const shapes = new Map(known);
  for (const l of layers) {
    if (l.class_name === 'InputLayer') {
      if (!input) throw new Error(`layer ${l.name}: an input layer, but no input shape was given`);
      shapes.set(l.name, input);
    } else {
      shapes.set(l.name, outputShape(l, inboundNames(l).map((r) => {
        const s = shapes.get(r);
        if (!s) throw new Error(`layer ${l.name} reads ${r}, whose shape is not known`);
        return s;
      })));
    }
    if (l.name === until) break;
  }
  return shapes;
}

/** A BatchNormalization's normalised axis (Keras writes it as a number or a one-element list). */
export const batchNormAxis = (l: Layer): number => {
  const a = l.config?.axis;
  return Array.isArray(a) ? a[0] : a ?? -1;
};

/** A BatchNormalization's parameters: gamma 1 / beta 0 where Keras' scale / center are off, epsilon 1e-3 by default. */
export function batchNormParams(l: Layer, weight: (name: string) => Float32Array) {
  const c = l.config ?? {};
  const mean = weight(`${l.name}/moving_mean`);
  const variance = weight(`${l.name}/moving_variance`);
  const C = mean.length;
  return {
    mean, variance,
    gamma: c.scale === false ? new Float32Array(C).fill(1) : weight(`${l.name}/gamma`),
    beta: c.center === false ? new Float32Array(C) : weight(`${l.name}/beta`),
    epsilon: (c.epsilon ?? 1e-3) as number,
  };
}
