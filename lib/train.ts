// Training the head on cached features, fast.
//
// Where tfjs' own `fit` loses its time on wasm (~40 s/epoch for 45k x 2048 features idle, 110 s measured under
// load here vs 5 s for this trainer — scripts/bench-train.ts): autodiff of MatMul uses transposed operands
// (transposeA/transposeB), which tfjs-backend-wasm runs outside XNNPACK — 440 ms for X^T.G vs 10 ms for an explicit
// transpose + plain matmul of the same 256x2048x256 size — and axis-0 reductions (BN statistics, bias gradients)
// transpose internally too. So the head's forward AND backward pass are written out (HeadTrainer.trainStep) with
// plain matmuls only; the batch statistics are computed in JS while the batch rows are copied out of the cached
// Float32Arrays; dropout masks are windows of a pre-drawn bank; Adam is a few elementwise ops per weight; one
// scalar is read per step (wasm is synchronous: the read stalls no pipeline). What remains is two big matmuls per
// step (three with bnAffine), so the epoch time is set by D x units. The trained weights go into a regular tfjs
// head model (lib/model.ts) for evaluation, assembling and saving.
import { formatTable, percent } from './format';
import * as tf from '@tensorflow/tfjs';
import { buildHead, BN_EPSILON, BN_MOMENTUM, headWeights, NUM_CLASSES, setHeadWeights } from './model';
import { progress, silentProgress, ProgressSink } from './progress';
import { rng, shuffle } from './random';
import { EpochRecord, newRunId, RunRecord, runsTable, writeRun } from './runs';

/** Features of a set of images, possibly several views of each (views[0] = plain; e.g. [plain, flip]). */
export interface LabeledFeatures {
  /** Each view is a row-major [n, dim] array of the same images in the same order. */
  views: Float32Array[];
  labels: Uint8Array;
  n: number;
  dim: number;
}

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

export interface TrainResult {
  /** The head with the BEST epoch's weights (restored at the end). */
  head: tf.LayersModel;
  config: TrainConfig;
  history: EpochRecord[];
  /** 1-based epoch whose weights the head holds (0 = initial weights: no epoch completed). */
  bestEpoch: number;
  bestValAcc: number;
  bestValLoss: number;
  stopReason: RunRecord['stopReason'];
  message?: string;
  seconds: number;
  secondsPerEpoch: number;
  runId?: string;
}

export interface TrainOptions {
  /** Called after each epoch with the current (not best) weights, in headWeights() order. */
  onEpochEnd?: (rec: EpochRecord, currentWeights: () => tf.Tensor[]) => void | Promise<void>;
  /**
   * Training data per epoch instead of the fixed `train` set (end-to-end mode re-extracts augmented features
   * each epoch). `train` still provides n/dim.
   */
  epochData?: (epoch: number) => Promise<LabeledFeatures>;
  /** Progress bar over epochs (default true). */
  progress?: boolean;
  label?: string;
  /** One line per epoch (default: none; the progress bar carries the numbers). */
  log?: (line: string) => void;
  /** Write the run to data/runs (default true); `run` adds fields (data description, kind, group). */
  saveRun?: boolean;
  run?: Partial<Pick<RunRecord, 'kind' | 'group' | 'data'>> & { slug?: string };
  /** Backend name recorded in the run (default tf.getBackend()). */
  backend?: string;
}

// ---------------------------------------------------------------------------------------------------------------

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

export function checkData(d: LabeledFeatures, what: string): void {
  if (!d.views.length) throw new Error(`${what}: no feature views`);
  for (const [i, v] of d.views.entries()) {
    if (v.length !== d.n * d.dim) throw new Error(`${what}: view ${i} has ${v.length} values, expected n=${d.n} x dim=${d.dim}`);
  }
  if (d.labels.length !== d.n) throw new Error(`${what}: ${d.labels.length} labels for ${d.n} feature rows`);
  for (let i = 0; i < d.n; i++) {
    if (d.labels[i] >= NUM_CLASSES) throw new Error(`${what}: label ${d.labels[i]} at row ${i} is not a class 0..${NUM_CLASSES - 1}`);
  }
}

/** Mean and (population) variance of every feature column over all views: initial BN moving statistics. */
function columnStats(d: LabeledFeatures): { mean: Float32Array; variance: Float32Array } {
  const sum = new Float64Array(d.dim);
  const sq = new Float64Array(d.dim);
  for (const v of d.views) {
    for (let r = 0; r < d.n; r++) {
      const o = r * d.dim;
      for (let c = 0; c < d.dim; c++) {
        const x = v[o + c];
        sum[c] += x;
        sq[c] += x * x;
      }
    }
  }
  const m = d.n * d.views.length;
  const mean = new Float32Array(d.dim);
  const variance = new Float32Array(d.dim);
  for (let c = 0; c < d.dim; c++) {
    mean[c] = sum[c] / m;
    variance[c] = Math.max(0, sq[c] / m - (sum[c] / m) ** 2);
  }
  return { mean, variance };
}

/** Learning rate at fractional epoch t in [0, epochs). */
export function scheduledLr(cfg: TrainConfig, t: number): number {
  let lr = cfg.lr;
  if (cfg.schedule === 'step') lr *= cfg.stepGamma ** Math.floor(t / cfg.stepEvery);
  else if (cfg.schedule === 'cosine') lr *= 0.5 * (1 + Math.cos((Math.PI * Math.min(t, cfg.epochs)) / cfg.epochs));
  if (cfg.warmupEpochs > 0 && t < cfg.warmupEpochs) lr *= t / cfg.warmupEpochs;
  return lr;
}

const ADAM_B1 = 0.9;
const ADAM_B2 = 0.999;
const ADAM_EPS = 1e-7; // Keras' default
/** Positions of the trainable weights in headWeights() order (moving statistics are not trained). */
const TRAINABLE_IDX = [0, 1, 4, 5, 6, 7];

/**
 * The head's state and its hand-written training step (forward and backward written out, no autodiff): every big
 * product is a plain matmul (transposed-operand matmuls are the slow path on wasm), the batch statistics are
 * computed in JS while the rows are copied (axis-0 reductions transpose internally in wasm), and dropout masks are
 * windows of a pre-drawn bank (MaskBank).
 *   forward  z1 = a . W1               [B,D]x[D,U]     a = dropout(BN(x))
 *   weights  dW1 = transpose(a) . dz1  [D,B]x[B,U]
 *   BN       daT = W1 . transpose(dz1) [D,U]x[U,B]    -> dgamma, dbeta   (only with bnAffine)
 * `test/train.test.ts` checks these gradients against tfjs autodiff of the same head.
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
  /** Keep the last step's gradients (gamma, beta, w1, b1, w2, b2) in `lastGrads` — for the gradient test. */
  keepGrads = false;
  lastGrads?: tf.Tensor[];

  constructor(dim: number, cfg: TrainConfig, init?: { mean: Float32Array; variance: Float32Array }) {
    this.cfg = cfg;
    this.dim = dim;
    const head = buildHead({ inputDim: dim, units: cfg.units, dropout: cfg.dropout, dropout2: cfg.dropout2, seed: cfg.seed });
    this.vars = headWeights(head).map((w, i) => tf.variable(w.clone(), !(i === 2 || i === 3)));
    head.dispose();
    if (init) {
      // Start BN's moving statistics at the data's: validation after epoch 1 is then meaningful.
      this.vars[2].assign(tf.tensor1d(init.mean));
      this.vars[3].assign(tf.tensor1d(init.variance));
    }
    this.adam = TRAINABLE_IDX.map((i) => ({
      m: tf.variable(tf.zerosLike(this.vars[i]), false),
      v: tf.variable(tf.zerosLike(this.vars[i]), false),
    }));
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
  trainEpoch(d: LabeledFeatures, epoch: number, lrAt?: (step: number) => number): { loss: number; lr: number } {
    const B = Math.min(this.cfg.batchSize, d.n);
    const steps = Math.floor(d.n / B);
    const { rows, views } = this.epochOrder(d);
    const D = this.dim;
    const x = new Float32Array(B * D);
    const y = new Float32Array(B * NUM_CLASSES);
    const mean = new Float32Array(D);
    const inv = new Float32Array(D);
    const sum = new Float64Array(D);
    const sq = new Float64Array(D);
    const eps = this.cfg.labelSmoothing;
    let total = 0;
    let lr = this.cfg.lr;
    for (let s = 0; s < steps; s++) {
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
        y.fill(eps / NUM_CLASSES, i * NUM_CLASSES, (i + 1) * NUM_CLASSES);
        y[i * NUM_CLASSES + d.labels[r]] += 1 - eps;
      }
      for (let c = 0; c < D; c++) {
        mean[c] = sum[c] / B;
        inv[c] = 1 / Math.sqrt(Math.max(0, sq[c] / B - mean[c] * mean[c]) + BN_EPSILON);
      }
      const m1 = this.masks.get(B * D, this.cfg.dropout);
      const m2 = this.masks.get(B * this.cfg.units, this.cfg.dropout2 ?? this.cfg.dropout);
      lr = lrAt ? lrAt(this.step) : scheduledLr(this.cfg, epoch + s / steps);
      const loss = this.trainStep({ x, m1, m2, y, mean, inv }, B, lr);
      if (!Number.isFinite(loss)) return { loss, lr };
      total += loss;
    }
    return { loss: total / Math.max(1, steps), lr };
  }

  /**
   * One optimisation step on a prepared batch: features x [B, D], its per-feature batch mean and 1/sqrt(var+eps)
   * [D], input-dropout mask m1 [B, D] and hidden mask m2 [B, units] (0 or 1/(1-rate)), y [B, 10] (smoothed
   * one-hot). Returns the loss; the weights are not updated when it is not finite.
   */
  trainStep(
    b: { x: Float32Array; m1: Float32Array; m2: Float32Array; y: Float32Array; mean: Float32Array; inv: Float32Array },
    B: number,
    lr: number,
  ): number {
    const D = this.dim;
    const U = this.cfg.units;
    const affine = this.cfg.bnAffine;
    const [gamma, beta, movingMean, movingVar, w1v, b1, w2v, b2] = this.vars;
    const w1 = w1v as tf.Tensor as tf.Tensor2D;
    const w2 = w2v as tf.Tensor as tf.Tensor2D;
    const out = tf.tidy(() => {
      const x = tf.tensor2d(b.x, [B, D]);
      const m1 = tf.tensor2d(b.m1, [B, D]);
      const m2 = tf.tensor2d(b.m2, [B, U]);
      const y = tf.tensor2d(b.y, [B, NUM_CLASSES]);
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
      return { loss, grads: [dGamma, dBeta, dW1, db1, dW2, db2], newMean, newVar };
    });
    const loss = out.loss.dataSync()[0];
    if (Number.isFinite(loss)) {
      movingMean.assign(out.newMean);
      movingVar.assign(out.newVar);
      this.adamStep(out.grads, lr);
    }
    if (this.keepGrads) {
      tf.dispose(this.lastGrads ?? []);
      this.lastGrads = out.grads.map((g) => g.clone());
    }
    tf.dispose(out);
    return loss;
  }

  private adamStep(grads: tf.Tensor[], lr: number): void {
    this.step++;
    const t = this.step;
    const alpha = (lr * Math.sqrt(1 - ADAM_B2 ** t)) / (1 - ADAM_B1 ** t);
    const wd = this.cfg.weightDecay;
    tf.tidy(() => {
      TRAINABLE_IDX.forEach((vi, j) => {
        if (!this.cfg.bnAffine && vi < 2) return; // gamma/beta frozen at 1/0
        const p = this.vars[vi];
        const g = grads[j];
        const { m, v } = this.adam[j];
        m.assign(tf.add(tf.mul(m, ADAM_B1), tf.mul(g, 1 - ADAM_B1)));
        v.assign(tf.add(tf.mul(v, ADAM_B2), tf.mul(tf.square(g), 1 - ADAM_B2)));
        let next = tf.sub(p, tf.mul(tf.div(m, tf.add(tf.sqrt(v), ADAM_EPS)), alpha));
        if (wd > 0 && (vi === 4 || vi === 6)) next = tf.sub(next, tf.mul(p, lr * wd)); // decoupled, kernels only
        p.assign(next);
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

  /** Class probabilities [n*10] of one view, inference mode. */
  predict(d: LabeledFeatures, view = 0, batchSize = 2000): Float32Array {
    const out = new Float32Array(d.n * NUM_CLASSES);
    for (let s = 0; s < d.n; s += batchSize) {
      const m = Math.min(batchSize, d.n - s);
      const p = tf.tidy(() => tf.softmax(this.inferLogits(tf.tensor2d(d.views[view].subarray(s * d.dim, (s + m) * d.dim), [m, d.dim]))));
      out.set(p.dataSync() as Float32Array, s * NUM_CLASSES);
      p.dispose();
    }
    return out;
  }

  /** Validation loss (plain cross-entropy, no smoothing) and accuracy on the plain view. */
  evaluate(d: LabeledFeatures): { loss: number; acc: number } {
    const p = this.predict(d);
    let loss = 0;
    let correct = 0;
    for (let i = 0; i < d.n; i++) {
      const row = p.subarray(i * NUM_CLASSES, (i + 1) * NUM_CLASSES);
      let best = 0;
      for (let c = 1; c < NUM_CLASSES; c++) if (row[c] > row[best]) best = c;
      if (best === d.labels[i]) correct++;
      loss -= Math.log(Math.max(row[d.labels[i]], 1e-12));
    }
    return { loss: loss / d.n, acc: correct / d.n };
  }

  /** A head model holding the current weights. */
  toHead(): tf.LayersModel {
    const head = buildHead({ inputDim: this.dim, units: this.cfg.units, dropout: this.cfg.dropout, dropout2: this.cfg.dropout2, seed: this.cfg.seed });
    const ws = this.weights();
    setHeadWeights(head, ws);
    tf.dispose(ws);
    return head;
  }

  dispose(): void {
    tf.dispose(this.vars);
    tf.dispose(this.adam.flatMap((s) => [s.m, s.v]));
    tf.dispose(this.lastGrads ?? []);
  }
}

function fullConfig(cfg: Partial<TrainConfig>): TrainConfig {
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


/**
 * Train the head on cached features with early stopping on validation that RESTORES the best epoch's weights, an
 * LR schedule, sampling among the training views each epoch, and a stop (keeping the best weights) on NaN/Infinity.
 * Writes the run to the experiment log (data/runs/<id>.json) unless `saveRun: false`.
 */
export async function trainHead(
  train: LabeledFeatures,
  val: LabeledFeatures,
  config: Partial<TrainConfig> = {},
  opts: TrainOptions = {},
): Promise<TrainResult> {
  const cfg = fullConfig(config);
  checkData(train, 'training features');
  checkData(val, 'validation features');
  if (val.dim !== train.dim) throw new Error(`validation features have dim ${val.dim}, training features ${train.dim}`);
  const t0 = Date.now();
  // BN moving statistics start at the data's (per-epoch data: the validation features, same distribution).
  const trainer = new HeadTrainer(train.dim, cfg, columnStats(opts.epochData ? val : train));
  const history: EpochRecord[] = [];
  let best = { epoch: 0, acc: -Infinity, loss: Infinity };
  let snapshot: tf.Tensor[] = trainer.weights(); // initial weights: what we keep if epoch 1 already diverges
  let stopReason: TrainResult['stopReason'] = 'completed';
  let message: string | undefined;
  const label = opts.label ?? `head lr=${cfg.lr} drop=${cfg.dropout}`;
  const bar: ProgressSink = opts.progress === false ? silentProgress : progress(label, cfg.epochs, 'epoch');
  try {
    for (let epoch = 0; epoch < cfg.epochs; epoch++) {
      const e0 = Date.now();
      const data = opts.epochData ? await opts.epochData(epoch) : train;
      if (opts.epochData) checkData(data, `training features of epoch ${epoch + 1}`);
      const { loss, lr } = trainer.trainEpoch(data, epoch);
      const ev = Number.isFinite(loss) ? trainer.evaluate(val) : { loss: NaN, acc: NaN };
      const rec: EpochRecord = { epoch: epoch + 1, lr, loss, valLoss: ev.loss, valAcc: ev.acc, seconds: (Date.now() - e0) / 1000 };
      history.push(rec);
      if (!Number.isFinite(loss) || !Number.isFinite(ev.loss)) {
        stopReason = 'non-finite-loss';
        const what = !Number.isFinite(loss) ? `training loss became ${loss}` : `validation loss became ${ev.loss}`;
        message = `stopped at epoch ${epoch + 1}: ${what} (lr=${lr.toPrecision(3)}; try a lower lr); keeping ${
          best.epoch ? `the best weights, from epoch ${best.epoch}` : 'the initial weights (no epoch completed)'
        }`;
        (opts.log ?? console.warn)(message);
        break;
      }
      const improved = cfg.monitor === 'val_acc' ? ev.acc > best.acc || (ev.acc === best.acc && ev.loss < best.loss) : ev.loss < best.loss;
      if (improved) {
        best = { epoch: epoch + 1, acc: ev.acc, loss: ev.loss };
        tf.dispose(snapshot);
        snapshot = trainer.weights();
      }
      if (opts.onEpochEnd) await opts.onEpochEnd(rec, () => trainer.weights());
      opts.log?.(`${label} epoch ${epoch + 1}/${cfg.epochs} lr ${lr.toExponential(2)} loss ${loss.toFixed(4)} val ${percent(ev.acc)} (loss ${ev.loss.toFixed(4)}) ${rec.seconds.toFixed(1)} s${improved ? ' *' : ''}`);
      bar.tick(1, `loss ${loss.toFixed(3)} val ${percent(ev.acc)} best ${percent(best.acc)}@${best.epoch}`);
      if (cfg.patience > 0 && epoch + 1 - best.epoch >= cfg.patience) {
        stopReason = 'early-stop';
        break;
      }
      await new Promise((r) => setImmediate(r)); // let progress displays and notebooks update
    }
    trainer.setWeights(snapshot); // restore the best epoch's weights
    const head = trainer.toHead();
    const seconds = (Date.now() - t0) / 1000;
    const epochSeconds = history.reduce((a, h) => a + h.seconds, 0) / Math.max(1, history.length);
    bar.done(`best val ${percent(best.acc)} at epoch ${best.epoch} (${stopReason})`);
    const result: TrainResult = {
      head,
      config: cfg,
      history,
      bestEpoch: best.epoch,
      bestValAcc: best.epoch ? best.acc : NaN,
      bestValLoss: best.epoch ? best.loss : NaN,
      stopReason,
      message,
      seconds,
      secondsPerEpoch: epochSeconds,
    };
    if (opts.saveRun !== false) {
      const id = newRunId(opts.run?.slug ?? `lr${cfg.lr}-d${cfg.dropout}`);
      writeRun({
        id,
        kind: opts.run?.kind ?? (opts.epochData ? 'end-to-end' : 'train'),
        group: opts.run?.group,
        createdAt: new Date(t0).toISOString(),
        params: { ...cfg },
        data: { nTrain: train.n, nVal: val.n, dim: train.dim, trainViews: train.views.length, ...opts.run?.data },
        history,
        bestEpoch: best.epoch,
        valAccuracy: result.bestValAcc,
        valLoss: result.bestValLoss,
        testAccuracy: null,
        metrics: {},
        stopReason,
        message,
        wallSeconds: seconds,
        secondsPerEpoch: epochSeconds,
        backend: opts.backend ?? tf.getBackend(),
      });
      result.runId = id;
    }
    return result;
  } finally {
    tf.dispose(snapshot);
    trainer.dispose();
  }
}

export interface SweepGrid {
  lr: number[];
  dropout: number[];
}

/** The seed's sweep: learning rates x dropout rates. */
export const SEED_SWEEP: SweepGrid = { lr: [0.0005, 0.0007, 0.001, 0.0015], dropout: [0.25, 0.35] };

export interface SweepResult {
  group: string;
  results: TrainResult[];
  best: TrainResult;
  /** lr x dropout table of best validation accuracy (and epochs), printable. */
  table: string;
}

/**
 * Train one head per (lr, dropout) in one call; every run goes to the experiment log under one group id. Returns
 * the runs, the best by validation accuracy (heads of the others are disposed) and a comparison table.
 */
export async function sweep(
  train: LabeledFeatures,
  val: LabeledFeatures,
  grid: SweepGrid = SEED_SWEEP,
  base: Partial<TrainConfig> = {},
  opts: TrainOptions = {},
): Promise<SweepResult> {
  const group = newRunId('sweep');
  const results: TrainResult[] = [];
  for (const lr of grid.lr) {
    for (const dropout of grid.dropout) {
      const r = await trainHead(train, val, { ...base, lr, dropout }, {
        ...opts,
        label: `sweep lr=${lr} drop=${dropout}`,
        run: { ...opts.run, kind: 'sweep', group, slug: `sweep-lr${lr}-d${dropout}` },
      });
      results.push(r);
    }
  }
  const best = results.reduce((a, b) => (b.bestValAcc > a.bestValAcc ? b : a));
  for (const r of results) if (r !== best) r.head.dispose();
  return { group, results, best, table: sweepTable(results, grid) };
}

/** Rows = learning rate, columns = dropout; cells = best val accuracy @ best epoch. */
export function sweepTable(results: TrainResult[], grid: SweepGrid): string {
  const cell = (lr: number, d: number) => {
    const r = results.find((x) => x.config.lr === lr && x.config.dropout === d);
    return r ? `${percent(r.bestValAcc)} @${r.bestEpoch}` : '-';
  };
  const header = ['lr \\ dropout', ...grid.dropout.map(String), 's/epoch'];
  const rows = grid.lr.map((lr) => [
    String(lr),
    ...grid.dropout.map((d) => cell(lr, d)),
    (results.filter((r) => r.config.lr === lr).reduce((a, r) => a + r.secondsPerEpoch, 0) / grid.dropout.length).toFixed(2),
  ]);
  return formatTable(header, rows);
}

export interface LrFindResult {
  lrs: number[];
  /** Exponentially smoothed training loss at each step. */
  losses: number[];
  /** fastai's "steepest" rule: the LR where the smoothed loss falls fastest (before the minimum). */
  suggested: number;
  /** The LR at the loss minimum / 10 (the other common rule of thumb). */
  minOver10: number;
}

/**
 * fastai-style LR range test: from minLr to maxLr exponentially over `steps` mini-batches (fresh head, the given
 * config otherwise), stopping early once the loss explodes (> 4x the best). Weights are thrown away.
 */
export function lrFind(
  train: LabeledFeatures,
  config: Partial<TrainConfig> = {},
  opts: { minLr?: number; maxLr?: number; steps?: number } = {},
): LrFindResult {
  const cfg = fullConfig(config);
  checkData(train, 'training features');
  const minLr = opts.minLr ?? 1e-6;
  const maxLr = opts.maxLr ?? 1;
  const steps = opts.steps ?? 200;
  const trainer = new HeadTrainer(train.dim, { ...cfg, weightDecay: cfg.weightDecay }, columnStats(train));
  const lrs: number[] = [];
  const losses: number[] = [];
  const lrAt = (i: number) => minLr * (maxLr / minLr) ** (i / Math.max(1, steps - 1));
  let smooth = 0;
  let bestLoss = Infinity;
  const beta = 0.98;
  try {
    // One random mini-batch per step, each a 1-step "epoch" of the trainer: same code path as real training.
    for (let i = 0; i < steps; i++) {
      const lr = lrAt(i);
      const { loss } = trainer.trainEpoch(batchOf(train, cfg.batchSize, i, cfg.seed), 0, () => lr);
      if (!Number.isFinite(loss)) break;
      smooth = beta * smooth + (1 - beta) * loss;
      const debiased = smooth / (1 - beta ** (i + 1));
      lrs.push(lr);
      losses.push(debiased);
      bestLoss = Math.min(bestLoss, debiased);
      if (debiased > 4 * bestLoss) break;
    }
  } finally {
    trainer.dispose();
  }
  const iMin = losses.indexOf(Math.min(...losses));
  // Steepest descent of the smoothed loss, measured over a window (single-step slopes are noise) and ignoring the
  // first 10% of steps, where the debiased average is still settling.
  const w = Math.max(1, Math.round(losses.length / 20));
  let steepest = Math.min(iMin, w);
  let slopeMin = Infinity;
  for (let i = Math.max(w, Math.floor(losses.length / 10)); i <= iMin; i++) {
    const slope = (losses[i] - losses[i - w]) / (Math.log(lrs[i]) - Math.log(lrs[i - w]));
    if (slope < slopeMin) {
      slopeMin = slope;
      steepest = i - Math.floor(w / 2);
    }
  }
  return { lrs, losses, suggested: lrs[steepest] ?? cfg.lr, minOver10: (lrs[iMin] ?? cfg.lr * 10) / 10 };
}

/** A single random batch of `train` (seeded by step) as its own LabeledFeatures (all views kept). */
function batchOf(train: LabeledFeatures, batchSize: number, step: number, seed: number): LabeledFeatures {
  const B = Math.min(batchSize, train.n);
  const random = rng(seed * 1000003 + step);
  const idx = Array.from({ length: B }, () => Math.floor(random() * train.n));
  return {
    views: train.views.map((v) => {
      const out = new Float32Array(B * train.dim);
      idx.forEach((r, i) => out.set(v.subarray(r * train.dim, (r + 1) * train.dim), i * train.dim));
      return out;
    }),
    labels: Uint8Array.from(idx, (r) => train.labels[r]),
    n: B,
    dim: train.dim,
  };
}

/** The rows `idx` of every view (e.g. a stratified subset for a quick sweep). */
export function subsetFeatures(d: LabeledFeatures, idx: ArrayLike<number>): LabeledFeatures {
  const n = idx.length;
  const views = d.views.map((v) => {
    const out = new Float32Array(n * d.dim);
    for (let i = 0; i < n; i++) {
      const r = idx[i];
      if (!(r >= 0 && r < d.n)) throw new Error(`subsetFeatures: row ${r} is outside 0..${d.n - 1}`);
      out.set(v.subarray(r * d.dim, (r + 1) * d.dim), i * d.dim);
    }
    return out;
  });
  return { views, labels: Uint8Array.from(idx as ArrayLike<number>, (r) => d.labels[r]), n, dim: d.dim };
}

/** Concatenate per-backbone features of the same images column-wise: [n, d1] + [n, d2] -> [n, d1 + d2]. */
export function concatFeatures(parts: { data: Float32Array; n: number; dim: number }[]): { data: Float32Array; n: number; dim: number } {
  if (!parts.length) throw new Error('concatFeatures: nothing to concatenate');
  const n = parts[0].n;
  for (const p of parts) if (p.n !== n) throw new Error(`concatFeatures: row counts differ (${parts.map((q) => q.n).join(' vs ')})`);
  if (parts.length === 1) return parts[0];
  const dim = parts.reduce((a, p) => a + p.dim, 0);
  const data = new Float32Array(n * dim);
  for (let r = 0; r < n; r++) {
    let o = r * dim;
    for (const p of parts) {
      data.set(p.data.subarray(r * p.dim, (r + 1) * p.dim), o);
      o += p.dim;
    }
  }
  return { data, n, dim };
}

export { runsTable };
