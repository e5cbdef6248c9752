// The head's hand-written trainer: its configuration (TrainConfig, DEFAULT_TRAIN, LR schedules), the training step
// written out forward and backward (headGradients), Adam, and dropout masks from a pre-drawn bank (HeadTrainer).
// The loop around it (early stopping, NaN stop, run log, progress) is lib/train/training-loop.ts.
//
// Where tfjs' own `fit` loses its time on wasm (~40 s/epoch for 45k x 2048 features idle, 110 s measured under
// load here vs 5 s for this trainer — scripts/bench-train.ts): autodiff of MatMul uses transposed operands
// (transposeA/transposeB), which tfjs-backend-wasm runs outside XNNPACK — 440 ms for X^T.G vs 10 ms for an explicit
// transpose + plain matmul of the same 256x2048x256 size — and axis-0 reductions (BN statistics, bias gradients)
// transpose internally too. So the head's forward AND backward pass are written out (headGradients) with
// plain matmuls only; the batch statistics are computed in JS while the batch rows are copied out of the cached
// Float32Arrays; dropout masks are windows of a pre-drawn bank; Adam is a few elementwise ops per weight; one
// scalar is read per step (wasm is synchronous: the read stalls no pipeline). What remains is two big matmuls per
// step (three with bnAffine), so the epoch time is set by D x units. The trained weights go into a regular tfjs
// head model (lib/model/classifier.ts) for evaluation, assembling and saving.
import { yieldToEventLoop } from '../util/cancel';
import * as tf from '@tensorflow/tfjs';
import { mapRowBatches } from '../engine/batches';
import { LabeledFeatures } from '../features/labeled-features';
import { buildHead, BN_EPSILON, BN_MOMENTUM, headWeights, NUM_CLASSES, setHeadWeights } from '../model/classifier';
import { rng, shuffle } from '../util/random';
import { ADAM, adamAssign, adamCoefficients, adamConstants, adamMoments } from './adam';

export type Schedule = 'constant' | 'step' | 'cosine';

export interface TrainConfig {
  units: number;
  dropout: number;
  /** Dropout after the hidden layer (default = dropout). */
  dropout2?: number;
  lr: number;
  epochs: number;
  batchSize: number;
  schedule: Schedule;
  /** 'step': multiply the LR by stepGamma every stepEvery epochs. */
  stepEvery: number;
  stepGamma: number;
  /** Linear warm-up from 0 over this many epochs (0 = none). */
  warmupEpochs: number;
  /** Early stopping: epochs without improvement of the monitored metric before stopping (0 = never stop). */
  patience: number;
  monitor: 'val_acc' | 'val_loss';
  labelSmoothing: number;
  /** Decoupled (AdamW) weight decay on the dense kernels. */
  weightDecay: number;
  /**
   * Train BatchNormalization's scale/offset (Keras center/scale). false keeps gamma=1, beta=0 (BN still normalises
   * with batch statistics): it saves the third big matmul of a step (dL/d BN-output), ~1/3 of the epoch time, and
   * the next Dense layer can absorb a per-feature scale/offset anyway.
   */
  bnAffine: boolean;
  seed: number;
}

/** The seed's setup with the best head found on validation (see the report / runs log). */
export const DEFAULT_TRAIN: TrainConfig = {
  units: 256,
  dropout: 0.35,
  lr: 0.001,
  epochs: 15,
  batchSize: 256,
  schedule: 'cosine',
  stepEvery: 10,
  stepGamma: 0.3,
  warmupEpochs: 0,
  patience: 8,
  monitor: 'val_acc',
  labelSmoothing: 0.1,
  weightDecay: 0,
  bnAffine: false,
  seed: 1,
};

/** DEFAULT_TRAIN completed by `cfg`, validated (throws naming the bad setting). */
export function resolveTrainConfig(cfg: Partial<TrainConfig>): TrainConfig {
  const c = { ...DEFAULT_TRAIN, ...cfg };
  const bad = (what: string, why: string) => new Error(`train config ${what}=${JSON.stringify((c as any)[what])}: ${why}`);
  if (!(c.lr > 0)) throw bad('lr', 'expected a positive number');
  if (!(c.dropout >= 0 && c.dropout < 1)) throw bad('dropout', 'expected 0 <= rate < 1');
  if (c.dropout2 !== undefined && !(c.dropout2 >= 0 && c.dropout2 < 1)) throw bad('dropout2', 'expected 0 <= rate < 1');
  if (!(Number.isInteger(c.units) && c.units > 0)) throw bad('units', 'expected a positive integer');
  if (!(Number.isInteger(c.epochs) && c.epochs > 0)) throw bad('epochs', 'expected a positive integer');
  if (!(Number.isInteger(c.batchSize) && c.batchSize > 1)) throw bad('batchSize', 'expected an integer > 1');
  if (!['constant', 'step', 'cosine'].includes(c.schedule)) throw bad('schedule', 'expected constant, step or cosine');
  if (!(c.labelSmoothing >= 0 && c.labelSmoothing < 1)) throw bad('labelSmoothing', 'expected 0 <= value < 1');
  return c;
}

/** Learning rate at fractional epoch t in [0, epochs). */
export function scheduledLr(cfg: TrainConfig, t: number): number {
  let lr = cfg.lr;
  if (cfg.schedule === 'step') lr *= cfg.stepGamma ** Math.floor(t / cfg.stepEvery);
  else if (cfg.schedule === 'cosine') lr *= 0.5 * (1 + Math.cos((Math.PI * Math.min(t, cfg.epochs)) / cfg.epochs));
  if (cfg.warmupEpochs > 0 && t < cfg.warmupEpochs) lr *= t / cfg.warmupEpochs;
  return lr;
}

/**
 * Dropout masks from a pre-drawn bank: each request is a window at a random offset into a bank of i.i.d.
 * 0 / (1/(1-rate)) values 8x its size. Every mask entry is still Bernoulli(1-rate) and independent of its
 * neighbours; successive masks are shifted copies at random offsets, applied to freshly shuffled batches, which is
 * noise enough for dropout — and it makes a mask free (drawing 524k fresh values per step cost ~3 ms of JS,
 * 10% of a step).
 */
class MaskBank {
  private banks = new Map<string, Float32Array>();
  private s: number;
  constructor(seed: number) {
    this.s = (Math.imul(seed, 2654435761) ^ 0x5bd1e995) >>> 0 || 1;
  }
  private next(): number {
    let s = this.s;
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    this.s = s;
    return s >>> 0;
  }
  /** A mask of `n` multipliers (a view into the bank: read-only for the caller). */
  get(n: number, rate: number): Float32Array {
    const key = `${rate}|${n}`;
    let bank = this.banks.get(key);
    if (!bank) {
      bank = new Float32Array(8 * n);
      const keep = rate > 0 ? 1 / (1 - rate) : 1;
      const threshold = rate * 4294967296;
      for (let i = 0; i < bank.length; i++) bank[i] = this.next() < threshold ? 0 : keep;
      this.banks.set(key, bank);
    }
    const off = this.next() % (bank.length - n + 1);
    return bank.subarray(off, off + n);
  }
}

/** Positions of the trainable weights in headWeights() order (moving statistics are not trained). */
const TRAINABLE_IDX = [0, 1, 4, 5, 6, 7];

/**
 * A prepared batch of B examples: features x [B, D], its per-feature batch mean and 1/sqrt(var+eps) [D],
 * input-dropout mask m1 [B, D] and hidden mask m2 [B, units] (0 or 1/(1-rate)), y [B, 10] (smoothed one-hot).
 */
export interface HeadBatch {
  x: Float32Array;
  m1: Float32Array;
  m2: Float32Array;
  y: Float32Array;
  mean: Float32Array;
  inv: Float32Array;
}

/** What one training-mode pass of the head gives (tensors owned by the caller). */
export type HeadGradients = {
  /** Mean (smoothed) cross-entropy over the batch. */
  loss: tf.Scalar;
  /** dL/d gamma, beta, w1, b1, w2, b2 (zeros for gamma/beta without bnAffine). */
  grads: tf.Tensor[];
  /** BN's moving statistics updated with this batch (Keras-style, unbiased batch variance). */
  newMean: tf.Tensor;
  newVar: tf.Tensor;
};

/**
 * The head's training-mode forward pass and its hand-written backward pass (no autodiff), on the weights `vars`
 * (headWeights() order: gamma, beta, movingMean, movingVar, w1, b1, w2, b2): pure — nothing is assigned. Every big
 * product is a plain matmul (transposed-operand matmuls are the slow path on wasm):
 *   forward  z1 = a . W1               [B,D]x[D,U]     a = dropout(BN(x))
 *   weights  dW1 = transpose(a) . dz1  [D,B]x[B,U]
 *   BN       daT = W1 . transpose(dz1) [D,U]x[U,B]    -> dgamma, dbeta   (only with bnAffine)
 * HeadTrainer.trainStep runs on it; `test/head-trainer.test.ts` checks it against tfjs autodiff of the same head.
 */
export function headGradients(vars: readonly tf.Tensor[], b: HeadBatch, cfg: Pick<TrainConfig, 'units' | 'bnAffine'>): HeadGradients {
  const K = vars[6].shape[1] as number; // classes: W2 is [units, classes]
  const B = b.y.length / K;
  const D = b.mean.length;
  const U = cfg.units;
  const affine = cfg.bnAffine;
  const [gamma, beta, movingMean, movingVar, w1v, b1, w2v, b2] = vars;
  const w1 = w1v as tf.Tensor2D;
  const w2 = w2v as tf.Tensor2D;
  return tf.tidy(() => {
    const x = tf.tensor2d(b.x, [B, D]);
    const m1 = tf.tensor2d(b.m1, [B, D]);
    const m2 = tf.tensor2d(b.m2, [B, U]);
    const y = tf.tensor2d(b.y, [B, K]);
    const mean = tf.tensor1d(b.mean);
    const inv = tf.tensor1d(b.inv);
    // BatchNormalization (batch statistics) then dropout.
    const p = tf.mul(tf.mul(tf.sub(x, mean), inv), m1) as tf.Tensor2D; // dropout(x-hat)
    const a = (affine ? tf.add(tf.mul(p, gamma), tf.mul(m1, beta)) : p) as tf.Tensor2D;
    const z1 = tf.add(tf.matMul(a, w1), b1) as tf.Tensor2D;
    const h = tf.mul(tf.relu(z1), m2) as tf.Tensor2D;
    const logits = tf.add(tf.matMul(h, w2), b2) as tf.Tensor2D;
    const logp = tf.logSoftmax(logits);
    const loss = tf.div(tf.neg(tf.sum(tf.mul(y, logp))), B);
    // Backward: softmax cross-entropy (mean over the batch), then layer by layer.
    const dlog = tf.div(tf.sub(tf.exp(logp), y), B) as tf.Tensor2D;
    const dW2 = tf.matMul(tf.transpose(h), dlog);
    const db2 = tf.sum(dlog, 0);
    const dh = tf.matMul(dlog, tf.transpose(w2));
    const dz1 = tf.mul(tf.mul(dh, m2), tf.step(z1)) as tf.Tensor2D;
    const dW1 = tf.matMul(tf.transpose(a), dz1); // [B,D] -> [D,B] is the cheap direction of wasm's transpose
    const db1 = tf.sum(dz1, 0);
    let dGamma: tf.Tensor = tf.zerosLike(gamma);
    let dBeta: tf.Tensor = tf.zerosLike(beta);
    if (affine) {
      // dL/da transposed [D, B] with W1 as the LEFT operand (the right one gets packed); per-feature sums then
      // run along the innermost axis.
      const daT = tf.matMul(w1, tf.transpose(dz1));
      dBeta = tf.sum(tf.mul(daT, tf.transpose(m1)), 1);
      dGamma = tf.sum(tf.mul(daT, tf.transpose(p)), 1);
    }
    // Keras-style moving statistics (unbiased batch variance).
    const variance = tf.sub(tf.reciprocal(tf.square(inv)), BN_EPSILON);
    const unbiased = tf.mul(variance, B / Math.max(1, B - 1));
    const newMean = tf.add(tf.mul(movingMean, BN_MOMENTUM), tf.mul(mean, 1 - BN_MOMENTUM));
    const newVar = tf.add(tf.mul(movingVar, BN_MOMENTUM), tf.mul(unbiased, 1 - BN_MOMENTUM));
    return { loss: loss as tf.Scalar, grads: [dGamma, dBeta, dW1, db1, dW2, db2], newMean, newVar };
  });
}

/** Mean cross-entropy (no smoothing) and accuracy of class probabilities [n*classes] against the labels. */
export function lossAndAccuracy(p: Float32Array, labels: Uint8Array): { loss: number; acc: number } {
  const n = labels.length;
  const K = n ? p.length / n : NUM_CLASSES;
  let loss = 0;
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const row = p.subarray(i * K, (i + 1) * K);
    let best = 0;
    for (let c = 1; c < K; c++) if (row[c] > row[best]) best = c;
    if (best === labels[i]) correct++;
    loss -= Math.log(Math.max(row[labels[i]], 1e-12));
  }
  return { loss: loss / n, acc: correct / n };
}

/**
 * The head's state and its training: weights as variables, Adam's moments, the seeded example order and dropout
 * masks. The batch statistics are computed in JS while the rows are copied (axis-0 reductions transpose
 * internally in wasm), and dropout masks are windows of a pre-drawn bank (MaskBank); the step is headGradients.
 */
export class HeadTrainer {
  readonly cfg: TrainConfig;
  readonly dim: number;
  /** headWeights() order: gamma, beta, movingMean, movingVar, w1, b1, w2, b2. */
  readonly vars: tf.Variable[];
  private adam: { m: tf.Variable; v: tf.Variable }[];
  private step = 0;
  private random: () => number;
  private masks: MaskBank;

  /** Classes: the head's outputs. */
  readonly classes: number;

  constructor(dim: number, cfg: TrainConfig, init?: { mean: Float32Array; variance: Float32Array }, classes = NUM_CLASSES) {
    this.cfg = cfg;
    this.dim = dim;
    this.classes = classes;
    const head = buildHead({ inputDim: dim, units: cfg.units, dropout: cfg.dropout, dropout2: cfg.dropout2, seed: cfg.seed, numClasses: classes });
    this.vars = headWeights(head).map((w, i) => tf.variable(w.clone(), !(i === 2 || i === 3)));
    head.dispose();
    if (init) {
      // Start BN's moving statistics at the data's: validation after epoch 1 is then meaningful.
      this.vars[2].assign(tf.tensor1d(init.mean));
      this.vars[3].assign(tf.tensor1d(init.variance));
    }
    this.adam = TRAINABLE_IDX.map((i) => adamMoments(this.vars[i]));
    this.random = rng(cfg.seed * 7919 + 13);
    this.masks = new MaskBank(cfg.seed);
  }

  /** Current weights in headWeights() order (fresh tensors; caller disposes). */
  weights(): tf.Tensor[] {
    return this.vars.map((v) => v.clone());
  }

  setWeights(ws: tf.Tensor[]): void {
    this.vars.forEach((v, i) => v.assign(ws[i]));
  }

  /** Order of training examples for an epoch: a seeded permutation, each example drawing one of its views. */
  private epochOrder(d: LabeledFeatures): { rows: Int32Array; views: Uint8Array } {
    const rows = shuffle(Int32Array.from({ length: d.n }, (_, i) => i), this.random);
    const views = new Uint8Array(d.n);
    if (d.views.length > 1) for (let i = 0; i < d.n; i++) views[i] = Math.floor(this.random() * d.views.length);
    return { rows, views };
  }

  /**
   * One pass over `d` (ragged tail dropped; the permutation changes every epoch); LR follows the schedule per
   * step from `epoch` (0-based) unless `lrAt` is given. Returns the mean loss, or the first non-finite loss
   * (NaN/±Infinity) as soon as it appears: the caller stops and restores.
   */
  trainEpoch(d: LabeledFeatures, epoch: number, lrAt?: (step: number) => number): Promise<{ loss: number; lr: number }> {
    return this.epochSteps(d, epoch, lrAt);
  }

  /**
   * trainEpoch that hands control back to the event loop every ~200 ms (so an interrupt can arrive) and calls
   * `check` there, which throws to stop between batches. The same steps in the same order: the same numbers.
   */
  trainEpochInterruptible(d: LabeledFeatures, epoch: number, check: () => void, lrAt?: (step: number) => number): Promise<{ loss: number; lr: number }> {
    let last = Date.now();
    return this.epochSteps(d, epoch, lrAt, async () => {
      if (Date.now() - last > 200) {
        await yieldToEventLoop();
        check();
        last = Date.now();
      }
    });
  }

  /** The epoch: one optimisation step per batch, `between` awaited between steps; the epoch's loss and LR. */
  private async epochSteps(d: LabeledFeatures, epoch: number, lrAt?: (step: number) => number, between?: () => Promise<void>): Promise<{ loss: number; lr: number }> {
    const B = Math.min(this.cfg.batchSize, d.n);
    const steps = Math.floor(d.n / B);
    const { rows, views } = this.epochOrder(d);
    const D = this.dim;
    const x = new Float32Array(B * D);
    const K = this.classes;
    const y = new Float32Array(B * K);
    const mean = new Float32Array(D);
    const inv = new Float32Array(D);
    const sum = new Float64Array(D);
    const sq = new Float64Array(D);
    const eps = this.cfg.labelSmoothing;
    let total = 0;
    let lr = this.cfg.lr;
    for (let s = 0; s < steps; s++) {
      if (s > 0 && between) await between();
      // Gather the batch rows (memcpy) and their per-feature statistics (training-mode BN) in one pass.
      sum.fill(0);
      sq.fill(0);
      for (let i = 0; i < B; i++) {
        const k = s * B + i;
        const r = rows[k];
        const row = d.views[views[k]].subarray(r * D, (r + 1) * D);
        x.set(row, i * D);
        for (let c = 0; c < D; c++) {
          const v = row[c];
          sum[c] += v;
          sq[c] += v * v;
        }
        y.fill(eps / K, i * K, (i + 1) * K);
        y[i * K + d.labels[r]] += 1 - eps;
      }
      for (let c = 0; c < D; c++) {
        mean[c] = sum[c] / B;
        inv[c] = 1 / Math.sqrt(Math.max(0, sq[c] / B - mean[c] * mean[c]) + BN_EPSILON);
      }
      const m1 = this.masks.get(B * D, this.cfg.dropout);
      const m2 = this.masks.get(B * this.cfg.units, this.cfg.dropout2 ?? this.cfg.dropout);
      lr = lrAt ? lrAt(this.step) : scheduledLr(this.cfg, epoch + s / steps);
      const loss = await this.trainStep({ x, m1, m2, y, mean, inv }, lr);
      if (!Number.isFinite(loss)) return { loss, lr };
      total += loss;
    }
    return { loss: total / Math.max(1, steps), lr };
  }

  /**
   * One optimisation step on a prepared batch. Returns the loss; the weights are not updated when it is not finite.
   * The loss is read with `await data()` (webgpu in Node cannot read synchronously); the update waits for it.
   */
  async trainStep(b: HeadBatch, lr: number): Promise<number> {
    const out = headGradients(this.vars, b, this.cfg);
    try {
      const loss = (await out.loss.data())[0];
      if (Number.isFinite(loss)) {
        this.vars[2].assign(out.newMean);
        this.vars[3].assign(out.newVar);
        this.adamStep(out.grads, lr);
      }
      return loss;
    } finally {
      tf.dispose(out);
    }
  }

  private adamStep(grads: tf.Tensor[], lr: number): void {
    this.step++;
    const { step, decay } = adamCoefficients(lr, this.step, this.cfg.weightDecay);
    const constants = adamConstants(ADAM);
    tf.tidy(() => {
      TRAINABLE_IDX.forEach((vi, j) => {
        if (!this.cfg.bnAffine && vi < 2) return; // gamma/beta frozen at 1/0
        const decays = this.cfg.weightDecay > 0 && (vi === 4 || vi === 6); // decoupled, kernels only
        adamAssign(this.vars[vi], grads[j], this.adam[j], { ...constants, step, decay: decays ? decay : undefined });
      });
    });
  }

  /** Logits in inference mode (moving statistics, no dropout): the head model's arithmetic. */
  private inferLogits(x: tf.Tensor2D): tf.Tensor2D {
    const [gamma, beta, movingMean, movingVar, w1, b1, w2, b2] = this.vars;
    return tf.tidy(() => {
      const scale = tf.mul(gamma, tf.rsqrt(tf.add(movingVar, BN_EPSILON)));
      const a = tf.add(tf.mul(tf.sub(x, movingMean), scale), beta) as tf.Tensor2D;
      const h = tf.relu(tf.add(tf.matMul(a, w1 as tf.Tensor as tf.Tensor2D), b1)) as tf.Tensor2D;
      return tf.add(tf.matMul(h, w2 as tf.Tensor as tf.Tensor2D), b2) as tf.Tensor2D;
    });
  }

  /** Class probabilities [n*classes] of one view, inference mode. */
  predict(d: LabeledFeatures, view = 0, batchSize = 2000): Promise<Float32Array> {
    return mapRowBatches(d.n, batchSize, this.classes, (s, m) =>
      tf.softmax(this.inferLogits(tf.tensor2d(d.views[view].subarray(s * d.dim, (s + m) * d.dim), [m, d.dim]))),
    );
  }

  /** Validation loss (plain cross-entropy, no smoothing) and accuracy on the plain view. */
  async evaluate(d: LabeledFeatures): Promise<{ loss: number; acc: number }> {
    return lossAndAccuracy(await this.predict(d), d.labels);
  }

  /** A head model holding the current weights. */
  toHead(): tf.LayersModel {
    const head = buildHead({ inputDim: this.dim, units: this.cfg.units, dropout: this.cfg.dropout, dropout2: this.cfg.dropout2, seed: this.cfg.seed, numClasses: this.classes });
    const ws = this.weights();
    setHeadWeights(head, ws);
    tf.dispose(ws);
    return head;
  }

  dispose(): void {
    tf.dispose(this.vars);
    tf.dispose(this.adam.flatMap((s) => [s.m, s.v]));
  }
}
