// Fine-tuning the top blocks of the backbones together with the seed's head, on cached activations.
//
// The frozen bottom of each backbone runs once per image and view (lib/features/features.ts, `cut`), so an epoch costs only
// the trainable top (lib/model/trunk.ts) and the head. Backbones left frozen (trainableBlocks 0) contribute their cached
// pooled features, concatenated in backbones order exactly as for the frozen regime. The backbone blocks learn at
// a smaller rate than the head (discriminative learning rates, as fastai's `fine_tune`), both on the head's
// schedule (cosine, optional warm-up). Runs through the same training loop as the head (lib/train/training-loop.ts):
// early stopping restores the best epoch's weights, a NaN stops it, the run log records it.
//
// A step runs as one TensorFlow graph call by default (lib/engine/train-graph.ts: forward, gradients, Adam and the BN
// statistics in one session run); the eager engine (tfjs autodiff, op by op) is the reference it is tested against.
// Training needs the backprop kernels of convolutions: the tensorflow backend has them all; tfjs-backend-wasm has
// no Conv2DBackpropFilter / DepthwiseConv2dNative backprop, so fine-tuning stops before any work there (one line).
import * as tf from '@tensorflow/tfjs';
import { BackboneName } from '../features/backbones';
import { NUM_CLASSES } from '../data/cifar10';
import { yieldToEventLoop } from '../util/cancel';
import { lossAndAccuracy, resolveTrainConfig, scheduledLr, TrainConfig } from './head-trainer';
import { LabeledFeatures } from '../features/labeled-features';
import { BN_EPSILON, BN_MOMENTUM, buildHead, headWeights, setHeadWeights } from '../model/classifier';
import { rng, shuffle } from '../util/random';
import { GraphFunction, loadStepGraphs, StepGraphSpec, stepNames, TRUNK_PRECISIONS, TrunkPrecision } from '../engine/train-graph';
import { Trunk } from '../model/trunk';
import { ADAM, adamAssign, adamCoefficients, adamConstants, adamMoments } from './adam';
import { mapRowBatches } from '../engine/batches';

/** One backbone's share of a fine-tuning set: the activation at its cut (trained trunk) or its pooled features. */
export interface FineTunePart {
  backbone: BackboneName;
  /** The cut layer when its top blocks train; null for a frozen backbone (data = pooled features). */
  cut: string | null;
  /** Per-image shape of `data`'s rows: [h, w, c] at a cut, [D] for pooled features. */
  shape: number[];
  data: LabeledFeatures;
}

/** A labelled set as fine-tuning reads it: one part per backbone (backbones order), the same images and views. */
export interface FineTuneSet {
  parts: FineTunePart[];
  labels: Uint8Array;
  n: number;
  /** Number of views (each part has them all, same order). */
  views: number;
  /** The dataset's class count (absent: 10, CIFAR-10). */
  classes?: number;
}

export function fineTuneSet(parts: FineTunePart[]): FineTuneSet {
  if (!parts.length) throw new Error('fineTuneSet: no parts');
  const { n, labels } = parts[0].data;
  const views = parts[0].data.views.length;
  for (const p of parts) {
    const rowSize = p.shape.reduce((a, b) => a * b, 1);
    if (p.data.dim !== rowSize) throw new Error(`fine-tuning data of ${p.backbone}: rows of ${p.data.dim} values, shape ${p.shape.join('x')} needs ${rowSize}`);
    if (p.data.n !== n || p.data.views.length !== views) throw new Error(`fine-tuning data of ${p.backbone}: ${p.data.n} images x ${p.data.views.length} views, expected ${n} x ${views}`);
    for (const [i, v] of p.data.views.entries()) {
      if (v.length !== n * p.data.dim) throw new Error(`fine-tuning data of ${p.backbone}: view ${i} has ${v.length} values, expected ${n} x ${p.data.dim}`);
    }
  }
  const classes = parts[0].data.classes;
  return { parts, labels, n, views, ...(classes !== undefined ? { classes } : {}) };
}

/** Fine-tuning settings beyond the head's TrainConfig. */
export interface FineTuneConfig extends TrainConfig {
  /** Learning rate of the backbone blocks (the head uses `lr`); both follow the schedule. */
  backboneLr: number;
  /** Adam's epsilon (Keras' default 1e-7). */
  adamEpsilon: number;
  /** Arithmetic of the trunks in the graph engine's training step (lib/engine/train-graph.ts); inference is float32. */
  trunkPrecision: TrunkPrecision;
}

/** Said when fine-tuning is asked for on a backend without the convolution backprop kernels. */
export function fineTuneBackendError(backend: string): string | null {
  if (backend === 'tensorflow') return null;
  // webgpu has the backprop kernels (test/webgpu.test.ts checks a conv2d gradient) and every read of the fine-tuning
  // loop is async (trainStep, predict, pooledFeatures): it runs there on the eager engine (the graph engine needs TF).
  if (backend === 'webgpu') return null;
  return `fine-tuning (trainable blocks > 0) needs the tensorflow backend: ${backend} has no Conv2DBackpropFilter / DepthwiseConv2dNative backprop kernels (run \`npm run setup:native\`, or use trainable blocks 0)`;
}

/** Head weights that train (headWeights order: gamma, beta, movingMean, movingVar, w1, b1, w2, b2; no BN affine). */
const HEAD_TRAINED = [4, 5, 6, 7];

/**
 * How a step runs: 'graph' — forward, backward and Adam as one TensorFlow graph (lib/engine/train-graph.ts; measured ~2x
 * faster than eager on 2 cores); 'eager' — tfjs autodiff op by op, the reference the graph is tested against.
 */
export type FineTuneEngine = 'graph' | 'eager';

/**
 * The trunks and the head as one trainable model on a FineTuneSet. Same head arithmetic as HeadTrainer (BN with
 * batch statistics, gamma 1 / beta 0, dropout, dense ReLU, dropout, dense; smoothed cross-entropy). Call
 * `prepare()` before training: it loads the graphs of the 'graph' engine.
 */
export class FineTuneTrainer {
  readonly cfg: FineTuneConfig;
  readonly dim: number;
  readonly headVars: tf.Variable[];
  private adam = new Map<tf.Variable, { m: tf.Variable; v: tf.Variable }>();
  private step = 0;
  private random: () => number;
  private maskRandom: () => number;
  private graphs: { step: GraphFunction; infer: GraphFunction } | null = null;
  readonly engine: FineTuneEngine;

  constructor(
    readonly trunks: (Trunk | null)[], readonly shapes: number[][], readonly dims: number[], cfg: FineTuneConfig, init?: { mean: Float32Array; variance: Float32Array }, engine?: FineTuneEngine,
    /** The head's outputs (the dataset's classes). */
    readonly classes = NUM_CLASSES,
  ) {
    this.cfg = cfg;
    this.engine = engine ?? (tf.getBackend() === 'tensorflow' ? 'graph' : 'eager');
    this.dim = dims.reduce((a, b) => a + b, 0);
    const head = buildHead({ inputDim: this.dim, units: cfg.units, dropout: cfg.dropout, dropout2: cfg.dropout2, seed: cfg.seed, numClasses: classes });
    // Only the dense layers train (variableGrads skips non-trainable variables): no BN affine, as the head's default.
    this.headVars = headWeights(head).map((w, i) => tf.variable(w.clone(), HEAD_TRAINED.includes(i)));
    head.dispose();
    if (init) {
      this.headVars[2].assign(tf.tensor1d(init.mean));
      this.headVars[3].assign(tf.tensor1d(init.variance));
    }
    for (const v of this.trainable) this.adam.set(v, adamMoments(v));
    this.random = rng(cfg.seed * 7919 + 17);
    this.maskRandom = rng(cfg.seed * 104729 + 29);
  }

  /** Load the step and inference graphs (the 'graph' engine); a no-op for 'eager'. */
  async prepare(): Promise<this> {
    if (this.engine === 'graph' && !this.graphs) this.graphs = await loadStepGraphs(this.graphSpec());
    return this;
  }

  private graphSpec(): StepGraphSpec {
    return {
      parts: this.trunks.map((t, i) => ({
        shape: this.shapes[i],
        trunk: t ? { cut: t.cut, layers: t.layers, weights: [...t.vars].map(([name, v]) => ({ name, shape: v.shape })) } : null,
      })),
      dim: this.dim,
      units: this.cfg.units,
      classes: this.classes,
      bnEpsilon: BN_EPSILON,
      bnMomentum: BN_MOMENTUM,
      adam: this.adamHyper,
      trunkPrecision: this.cfg.trunkPrecision,
    };
  }

  private get adamHyper() {
    return { ...ADAM, eps: this.cfg.adamEpsilon };
  }

  /** Adam's coefficients of step t for the trunks' and the head's rates (decay: the head kernels'). */
  private adamSteps(lr: number, t: number) {
    const backbone = adamCoefficients(lr * (this.cfg.backboneLr / this.cfg.lr), t, 0, this.adamHyper);
    const head = adamCoefficients(lr, t, this.cfg.weightDecay, this.adamHyper);
    return { backbone, head };
  }

  private get graph(): { step: GraphFunction; infer: GraphFunction } | null {
    if (this.engine === 'eager') return null;
    if (!this.graphs) throw new Error('FineTuneTrainer: call prepare() before using the graph engine');
    return this.graphs;
  }

  /** Dropout keep masks (scaled by 1/keep) for a batch of B: the same stream for both engines. */
  private masks(B: number): [Float32Array, Float32Array] {
    const mask = (n: number, rate: number) => {
      const m = new Float32Array(n);
      const keep = 1 - rate;
      if (rate <= 0) return m.fill(1);
      for (let i = 0; i < n; i++) m[i] = this.maskRandom() < keep ? 1 / keep : 0;
      return m;
    };
    return [mask(B * this.dim, this.cfg.dropout), mask(B * this.cfg.units, this.cfg.dropout2 ?? this.cfg.dropout)];
  }

  private get trunkVars(): tf.Variable[] {
    return this.trunks.flatMap((t) => (t ? t.variables : []));
  }

  private get trainable(): tf.Variable[] {
    return [...this.trunkVars, ...HEAD_TRAINED.map((i) => this.headVars[i])];
  }

  /** Features [B, D] of a batch: each trunk on its cut activation, frozen parts as they are, concatenated. */
  private features(inputs: tf.Tensor[]): tf.Tensor2D {
    const parts = inputs.map((x, i) => {
      const t = this.trunks[i];
      return t ? t.forward(x as tf.Tensor4D) : (x as tf.Tensor2D);
    });
    return (parts.length === 1 ? parts[0] : tf.concat(parts, 1)) as tf.Tensor2D;
  }

  private batchTensors(set: FineTuneSet, rows: ArrayLike<number>, views: ArrayLike<number>, start: number, m: number): tf.Tensor[] {
    return set.parts.map((p, i) => {
      const d = p.data.dim;
      const buf = new Float32Array(m * d);
      for (let j = 0; j < m; j++) {
        const r = rows[start + j];
        buf.set(p.data.views[views[start + j]].subarray(r * d, (r + 1) * d), j * d);
      }
      return tf.tensor(buf, [m, ...this.shapes[i]], 'float32');
    });
  }

  /** Logits in inference mode (moving statistics, no dropout). */
  private inferLogits(inputs: tf.Tensor[]): tf.Tensor2D {
    const [, , mm, mv, w1, b1, w2, b2] = this.headVars;
    const f = this.features(inputs);
    const a = tf.mul(tf.sub(f, mm), tf.rsqrt(tf.add(mv, BN_EPSILON)));
    const h = tf.relu(tf.add(tf.matMul(a as tf.Tensor2D, w1 as tf.Tensor2D), b1));
    return tf.add(tf.matMul(h as tf.Tensor2D, w2 as tf.Tensor2D), b2) as tf.Tensor2D;
  }

  /** Pooled features or class probabilities of a batch in inference mode (inputs are disposed). */
  private inferBatch(inputs: tf.Tensor[], what: 'features' | 'probs'): tf.Tensor {
    const graph = this.graph;
    try {
      if (!graph) return tf.tidy(() => (what === 'features' ? this.features(inputs) : tf.softmax(this.inferLogits(inputs))));
      const [, , mm, mv] = this.headVars;
      const feeds: Record<string, tf.Tensor> = { mm, mv };
      inputs.forEach((x, i) => (feeds[stepNames.part(i)] = x));
      this.trainable.forEach((p, i) => (feeds[stepNames.param(i)] = p));
      const out = graph.infer.run(feeds);
      const keep = out[what];
      tf.dispose(Object.values(out).filter((t) => t !== keep));
      return keep;
    } finally {
      tf.dispose(inputs);
    }
  }

  /** One epoch over `set` (each example drawing one of its views), yielding to the event loop every ~200 ms. */
  async trainEpochInterruptible(set: FineTuneSet, epoch: number, check: () => void): Promise<{ loss: number; lr: number }> {
    const B = Math.min(this.cfg.batchSize, set.n);
    const steps = Math.floor(set.n / B);
    const rows = shuffle(Int32Array.from({ length: set.n }, (_, i) => i), this.random);
    const views = new Uint8Array(set.n);
    if (set.views > 1) for (let i = 0; i < set.n; i++) views[i] = Math.floor(this.random() * set.views);
    const eps = this.cfg.labelSmoothing;
    let total = 0;
    let lr = this.cfg.lr;
    let last = Date.now();
    for (let s = 0; s < steps; s++) {
      if (Date.now() - last > 200) {
        await yieldToEventLoop();
        check();
        last = Date.now();
      }
      lr = scheduledLr(this.cfg, epoch + s / steps);
      const K = this.classes;
      const y = new Float32Array(B * K).fill(eps / K);
      for (let j = 0; j < B; j++) y[j * K + set.labels[rows[s * B + j]]] += 1 - eps;
      const loss = await this.trainStep(this.batchTensors(set, rows, views, s * B, B), y, lr);
      if (!Number.isFinite(loss)) return { loss, lr };
      total += loss;
    }
    return { loss: total / Math.max(1, steps), lr };
  }

  /**
   * One optimisation step (inputs are disposed). The weights are not updated when the loss is not finite. The loss is
   * read with `await data()` (webgpu in Node cannot read synchronously); the update waits for it.
   */
  async trainStep(inputs: tf.Tensor[], yValues: Float32Array, lr: number): Promise<number> {
    const B = yValues.length / this.classes;
    const [m1, m2] = this.masks(B);
    const mask1 = tf.tensor2d(m1, [B, this.dim]);
    const mask2 = tf.tensor2d(m2, [B, this.cfg.units]);
    const y = tf.tensor2d(yValues, [B, this.classes]);
    try {
      return this.graph ? await this.graphStep(this.graph.step, inputs, y, mask1, mask2, lr) : await this.eagerStep(inputs, y, mask1, mask2, lr);
    } finally {
      tf.dispose([y, mask1, mask2, ...inputs]);
    }
  }

  private async eagerStep(inputs: tf.Tensor[], y: tf.Tensor2D, mask1: tf.Tensor2D, mask2: tf.Tensor2D, lr: number): Promise<number> {
    const B = y.shape[0];
    const [, , mm, mv, w1, b1, w2, b2] = this.headVars;
    let stats: { mean: tf.Tensor; variance: tf.Tensor } | undefined;
    const { value, grads } = tf.variableGrads(() => {
      const f = this.features(inputs);
      const { mean, variance } = tf.moments(f, 0);
      stats = { mean: tf.keep(mean), variance: tf.keep(variance) };
      const xhat = tf.mul(tf.sub(f, mean), tf.rsqrt(tf.add(variance, BN_EPSILON)));
      const h0 = tf.relu(tf.add(tf.matMul(tf.mul(xhat, mask1) as tf.Tensor2D, w1 as tf.Tensor2D), b1));
      const logits = tf.add(tf.matMul(tf.mul(h0, mask2) as tf.Tensor2D, w2 as tf.Tensor2D), b2);
      return tf.neg(tf.mean(tf.sum(tf.mul(y, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    }, this.trainable);
    let loss: number;
    try {
      loss = (await value.data())[0];
    } catch (err) {
      tf.dispose([value, stats!.mean, stats!.variance, ...Object.values(grads)]);
      throw err;
    }
    if (Number.isFinite(loss)) {
      tf.tidy(() => {
        const unbiased = tf.mul(stats!.variance, B / Math.max(1, B - 1));
        mm.assign(tf.add(tf.mul(mm, BN_MOMENTUM), tf.mul(stats!.mean, 1 - BN_MOMENTUM)));
        mv.assign(tf.add(tf.mul(mv, BN_MOMENTUM), tf.mul(unbiased, 1 - BN_MOMENTUM)));
      });
      this.adamStep(grads, lr);
    }
    tf.dispose([value, stats!.mean, stats!.variance, ...Object.values(grads)]);
    return loss;
  }

  /** The same step as one graph call: the next weights, moments and BN statistics replace the current ones. */
  private async graphStep(graph: GraphFunction, inputs: tf.Tensor[], y: tf.Tensor2D, mask1: tf.Tensor2D, mask2: tf.Tensor2D, lr: number): Promise<number> {
    const B = y.shape[0];
    const t = this.step + 1;
    const { backbone, head } = this.adamSteps(lr, t);
    const [, , mm, mv] = this.headVars;
    const scalars = {
      step_backbone: tf.scalar(backbone.step),
      step_head: tf.scalar(head.step),
      decay_head: tf.scalar(head.decay),
      unbias: tf.scalar(B / Math.max(1, B - 1)),
      inv_batch: tf.scalar(1 / B),
    };
    const feeds: Record<string, tf.Tensor> = { ...scalars, y, mask1, mask2, mm, mv };
    inputs.forEach((x, i) => (feeds[stepNames.part(i)] = x));
    const trainable = this.trainable;
    trainable.forEach((p, i) => {
      const { m, v } = this.adam.get(p)!;
      feeds[stepNames.param(i)] = p;
      feeds[stepNames.m(i)] = m;
      feeds[stepNames.v(i)] = v;
    });
    const out = graph.run(feeds);
    tf.dispose(Object.values(scalars));
    try {
      const loss = Number.isFinite((await out.grad_sum.data())[0]) ? (await out.loss.data())[0] : NaN;
      if (Number.isFinite(loss)) {
        this.step = t;
        trainable.forEach((p, i) => {
          const { m, v } = this.adam.get(p)!;
          p.assign(out[stepNames.next(stepNames.param(i))]);
          m.assign(out[stepNames.next(stepNames.m(i))]);
          v.assign(out[stepNames.next(stepNames.v(i))]);
        });
        mm.assign(out[stepNames.next('mm')]);
        mv.assign(out[stepNames.next('mv')]);
      }
      return loss;
    } finally {
      tf.dispose(Object.values(out));
    }
  }

  private adamStep(grads: tf.NamedTensorMap, lr: number): void {
    this.step++;
    const { backbone, head } = this.adamSteps(lr, this.step);
    const constants = adamConstants(this.adamHyper);
    const trunkSet = new Set(this.trunkVars);
    const kernels = new Set([this.headVars[4], this.headVars[6]]);
    tf.tidy(() => {
      for (const p of this.trainable) {
        const g = grads[p.name];
        if (!g) continue;
        const { step } = trunkSet.has(p) ? backbone : head;
        const decay = this.cfg.weightDecay > 0 && kernels.has(p) ? head.decay : undefined; // decoupled, head kernels only
        adamAssign(p, g, this.adam.get(p)!, { ...constants, step, decay });
      }
    });
  }

  /** Class probabilities [n*10] of one view, inference mode (read with `await data()`: webgpu cannot read synchronously). */
  predict(set: FineTuneSet, view = 0, batchSize = 256): Promise<Float32Array> {
    const rows = Int32Array.from({ length: set.n }, (_, i) => i);
    const views = new Uint8Array(set.n).fill(view);
    return mapRowBatches(set.n, batchSize, this.classes, (s, m) => this.inferBatch(this.batchTensors(set, rows, views, s, m), 'probs'));
  }

  /** Validation loss (plain cross-entropy) and accuracy on the plain view. */
  async evaluate(set: FineTuneSet): Promise<{ loss: number; acc: number }> {
    return lossAndAccuracy(await this.predict(set), set.labels);
  }

  /** The pooled features the head reads ([n, D] per view): what evaluation and the saved-model check use. */
  async pooledFeatures(set: FineTuneSet, batchSize = 256): Promise<LabeledFeatures> {
    const rows = Int32Array.from({ length: set.n }, (_, i) => i);
    const out: Float32Array[] = [];
    for (let v = 0; v < set.views; v++) {
      const views = new Uint8Array(set.n).fill(v);
      out.push(await mapRowBatches(set.n, batchSize, this.dim, (s, m) => this.inferBatch(this.batchTensors(set, rows, views, s, m), 'features')));
    }
    return { views: out, labels: set.labels, n: set.n, dim: this.dim, ...(set.classes !== undefined ? { classes: set.classes } : {}) };
  }

  /** All weights (trunks in order, then the head in headWeights order): copies, for early stopping. */
  weights(): tf.Tensor[] {
    return [...this.trunkVars, ...this.headVars].map((v) => v.clone());
  }

  setWeights(ws: tf.Tensor[]): void {
    [...this.trunkVars, ...this.headVars].forEach((v, i) => v.assign(ws[i]));
  }

  /** A head model holding the current head weights. */
  toHead(): tf.LayersModel {
    const head = buildHead({ inputDim: this.dim, units: this.cfg.units, dropout: this.cfg.dropout, dropout2: this.cfg.dropout2, seed: this.cfg.seed, numClasses: this.classes });
    setHeadWeights(head, this.headVars);
    return head;
  }

  get trainableParameters(): number {
    return this.trainable.reduce((a, v) => a + v.size, 0);
  }

  /** Free the head and optimiser state but not the trunks (shared with another trainer). */
  disposeOwn(): void {
    this.graphs?.step.dispose();
    this.graphs?.infer.dispose();
    this.graphs = null;
    tf.dispose(this.headVars);
    for (const { m, v } of this.adam.values()) tf.dispose([m, v]);
    this.adam.clear();
  }

  dispose(): void {
    this.disposeOwn();
    for (const t of this.trunks) t?.dispose();
  }
}

export function resolveFineTuneConfig(cfg: Partial<FineTuneConfig>): FineTuneConfig {
  const c = { ...resolveTrainConfig(cfg), backboneLr: cfg.backboneLr ?? 1e-4, adamEpsilon: cfg.adamEpsilon ?? ADAM.eps, trunkPrecision: cfg.trunkPrecision ?? 'float32' };
  if (!TRUNK_PRECISIONS.includes(c.trunkPrecision)) throw new Error(`fine-tune config trunkPrecision=${c.trunkPrecision}: expected ${TRUNK_PRECISIONS.join(' or ')}`);
  if (!(c.backboneLr > 0)) throw new Error(`fine-tune config backboneLr=${c.backboneLr}: expected a positive number`);
  if (!(c.adamEpsilon > 0)) throw new Error(`fine-tune config adamEpsilon=${c.adamEpsilon}: expected a positive number`);
  return c;
}
