// Fine-tuning the top blocks of the backbones together with the seed's head, on cached activations.
//
// The frozen bottom of each backbone runs once per image and view (lib/features.ts, `cut`), so an epoch costs only
// the trainable top (lib/trunk.ts) and the head. Backbones left frozen (trainableBlocks 0) contribute their cached
// pooled features, concatenated in backbones order exactly as for the frozen regime. The backbone blocks learn at
// a smaller rate than the head (discriminative learning rates, as fastai's `fine_tune`), both on the head's
// schedule (cosine, optional warm-up). Runs through the same training loop as the head (lib/training-loop.ts):
// early stopping restores the best epoch's weights, a NaN stops it, the run log records it.
//
// Training needs the backprop kernels of convolutions: the tensorflow backend has them all; tfjs-backend-wasm has
// no Conv2DBackpropFilter / DepthwiseConv2dNative backprop, so fine-tuning stops before any work there (one line).
import * as tf from '@tensorflow/tfjs';
import { BackboneName } from './backbones';
import { NUM_CLASSES } from './data/cifar10';
import { yieldToEventLoop } from './cancel';
import { lossAndAccuracy, resolveTrainConfig, scheduledLr, TrainConfig } from './head-trainer';
import { LabeledFeatures } from './labeled-features';
import { BN_EPSILON, BN_MOMENTUM, buildHead, headWeights, setHeadWeights } from './model';
import { rng, shuffle } from './random';
import { Trunk } from './trunk';

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
  return { parts, labels, n, views };
}

/** Fine-tuning settings beyond the head's TrainConfig. */
export interface FineTuneConfig extends TrainConfig {
  /** Learning rate of the backbone blocks (the head uses `lr`); both follow the schedule. */
  backboneLr: number;
}

/** Said when fine-tuning is asked for on a backend without the convolution backprop kernels. */
export function fineTuneBackendError(backend: string): string | null {
  return backend === 'tensorflow'
    ? null
    : `fine-tuning (trainable blocks > 0) needs the tensorflow backend: ${backend} has no Conv2DBackpropFilter / DepthwiseConv2dNative backprop kernels (run \`npm run setup:native\`, or use trainable blocks 0)`;
}

const ADAM_B1 = 0.9;
const ADAM_B2 = 0.999;
const ADAM_EPS = 1e-7;
/** Head weights that train (headWeights order: gamma, beta, movingMean, movingVar, w1, b1, w2, b2; no BN affine). */
const HEAD_TRAINED = [4, 5, 6, 7];

/**
 * The trunks and the head as one trainable model on a FineTuneSet. Same head arithmetic as HeadTrainer (BN with
 * batch statistics, gamma 1 / beta 0, dropout, dense ReLU, dropout, dense; smoothed cross-entropy) but through
 * tfjs autodiff, which the trunk needs anyway.
 */
export class FineTuneTrainer {
  readonly cfg: FineTuneConfig;
  readonly dim: number;
  readonly headVars: tf.Variable[];
  private adam = new Map<tf.Variable, { m: tf.Variable; v: tf.Variable }>();
  private step = 0;
  private random: () => number;

  constructor(readonly trunks: (Trunk | null)[], readonly shapes: number[][], dims: number[], cfg: FineTuneConfig, init?: { mean: Float32Array; variance: Float32Array }) {
    this.cfg = cfg;
    this.dim = dims.reduce((a, b) => a + b, 0);
    const head = buildHead({ inputDim: this.dim, units: cfg.units, dropout: cfg.dropout, dropout2: cfg.dropout2, seed: cfg.seed });
    // Only the dense layers train (variableGrads skips non-trainable variables): no BN affine, as the head's default.
    this.headVars = headWeights(head).map((w, i) => tf.variable(w.clone(), HEAD_TRAINED.includes(i)));
    head.dispose();
    if (init) {
      this.headVars[2].assign(tf.tensor1d(init.mean));
      this.headVars[3].assign(tf.tensor1d(init.variance));
    }
    for (const v of this.trainable) this.adam.set(v, { m: tf.variable(tf.zerosLike(v), false), v: tf.variable(tf.zerosLike(v), false) });
    this.random = rng(cfg.seed * 7919 + 17);
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
      const y = new Float32Array(B * NUM_CLASSES).fill(eps / NUM_CLASSES);
      for (let j = 0; j < B; j++) y[j * NUM_CLASSES + set.labels[rows[s * B + j]]] += 1 - eps;
      const loss = this.trainStep(this.batchTensors(set, rows, views, s * B, B), y, lr);
      if (!Number.isFinite(loss)) return { loss, lr };
      total += loss;
    }
    return { loss: total / Math.max(1, steps), lr };
  }

  /** One optimisation step (inputs are disposed). The weights are not updated when the loss is not finite. */
  trainStep(inputs: tf.Tensor[], yValues: Float32Array, lr: number): number {
    const B = yValues.length / NUM_CLASSES;
    const [, , mm, mv, w1, b1, w2, b2] = this.headVars;
    const r1 = this.cfg.dropout;
    const r2 = this.cfg.dropout2 ?? this.cfg.dropout;
    const seed = this.cfg.seed * 1_000_003 + this.step;
    let stats: { mean: tf.Tensor; variance: tf.Tensor } | undefined;
    const y = tf.tensor2d(yValues, [B, NUM_CLASSES]);
    const { value, grads } = tf.variableGrads(() => {
      const f = this.features(inputs);
      const { mean, variance } = tf.moments(f, 0);
      stats = { mean: tf.keep(mean), variance: tf.keep(variance) };
      const xhat = tf.mul(tf.sub(f, mean), tf.rsqrt(tf.add(variance, BN_EPSILON)));
      const a = r1 > 0 ? tf.dropout(xhat, r1, undefined, seed) : xhat;
      const h0 = tf.relu(tf.add(tf.matMul(a as tf.Tensor2D, w1 as tf.Tensor2D), b1));
      const h = r2 > 0 ? tf.dropout(h0, r2, undefined, seed + 7) : h0;
      const logits = tf.add(tf.matMul(h as tf.Tensor2D, w2 as tf.Tensor2D), b2);
      return tf.neg(tf.mean(tf.sum(tf.mul(y, tf.logSoftmax(logits)), 1))) as tf.Scalar;
    }, this.trainable);
    const loss = value.dataSync()[0];
    if (Number.isFinite(loss)) {
      tf.tidy(() => {
        const unbiased = tf.mul(stats!.variance, B / Math.max(1, B - 1));
        mm.assign(tf.add(tf.mul(mm, BN_MOMENTUM), tf.mul(stats!.mean, 1 - BN_MOMENTUM)));
        mv.assign(tf.add(tf.mul(mv, BN_MOMENTUM), tf.mul(unbiased, 1 - BN_MOMENTUM)));
      });
      this.adamStep(grads, lr);
    }
    tf.dispose([value, y, ...inputs, stats!.mean, stats!.variance, ...Object.values(grads)]);
    return loss;
  }

  private adamStep(grads: tf.NamedTensorMap, lr: number): void {
    this.step++;
    const t = this.step;
    const correction = Math.sqrt(1 - ADAM_B2 ** t) / (1 - ADAM_B1 ** t);
    const trunkSet = new Set(this.trunkVars);
    const kernels = new Set([this.headVars[4], this.headVars[6]]);
    const wd = this.cfg.weightDecay;
    tf.tidy(() => {
      for (const p of this.trainable) {
        const g = grads[p.name];
        if (!g) continue;
        const rate = trunkSet.has(p) ? lr * (this.cfg.backboneLr / this.cfg.lr) : lr;
        const { m, v } = this.adam.get(p)!;
        m.assign(tf.add(tf.mul(m, ADAM_B1), tf.mul(g, 1 - ADAM_B1)));
        v.assign(tf.add(tf.mul(v, ADAM_B2), tf.mul(tf.square(g), 1 - ADAM_B2)));
        let next = tf.sub(p, tf.mul(tf.div(m, tf.add(tf.sqrt(v), ADAM_EPS)), rate * correction));
        if (wd > 0 && kernels.has(p)) next = tf.sub(next, tf.mul(p, rate * wd));
        p.assign(next);
      }
    });
  }

  /** Class probabilities [n*10] of one view, inference mode. */
  predict(set: FineTuneSet, view = 0, batchSize = 256): Float32Array {
    const rows = Int32Array.from({ length: set.n }, (_, i) => i);
    const views = new Uint8Array(set.n).fill(view);
    const out = new Float32Array(set.n * NUM_CLASSES);
    for (let s = 0; s < set.n; s += batchSize) {
      const m = Math.min(batchSize, set.n - s);
      const p = tf.tidy(() => tf.softmax(this.inferLogits(this.batchTensors(set, rows, views, s, m))));
      out.set(p.dataSync() as Float32Array, s * NUM_CLASSES);
      p.dispose();
    }
    return out;
  }

  /** Validation loss (plain cross-entropy) and accuracy on the plain view. */
  evaluate(set: FineTuneSet): { loss: number; acc: number } {
    return lossAndAccuracy(this.predict(set), set.labels);
  }

  /** The pooled features the head reads ([n, D] per view): what evaluation and the saved-model check use. */
  pooledFeatures(set: FineTuneSet, batchSize = 256): LabeledFeatures {
    const rows = Int32Array.from({ length: set.n }, (_, i) => i);
    const out: Float32Array[] = [];
    for (let v = 0; v < set.views; v++) {
      const views = new Uint8Array(set.n).fill(v);
      const data = new Float32Array(set.n * this.dim);
      for (let s = 0; s < set.n; s += batchSize) {
        const m = Math.min(batchSize, set.n - s);
        const f = tf.tidy(() => this.features(this.batchTensors(set, rows, views, s, m)));
        data.set(f.dataSync() as Float32Array, s * this.dim);
        f.dispose();
      }
      out.push(data);
    }
    return { views: out, labels: set.labels, n: set.n, dim: this.dim };
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
    const head = buildHead({ inputDim: this.dim, units: this.cfg.units, dropout: this.cfg.dropout, dropout2: this.cfg.dropout2, seed: this.cfg.seed });
    setHeadWeights(head, this.headVars);
    return head;
  }

  get trainableParameters(): number {
    return this.trainable.reduce((a, v) => a + v.size, 0);
  }

  /** Free the head and optimiser state but not the trunks (shared with another trainer). */
  disposeOwn(): void {
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
  const c = { ...resolveTrainConfig(cfg), backboneLr: cfg.backboneLr ?? 1e-4 };
  if (!(c.backboneLr > 0)) throw new Error(`fine-tune config backboneLr=${c.backboneLr}: expected a positive number`);
  return c;
}
