// The training loop: `trainHead` runs epochs of a HeadTrainer (lib/train/head-trainer.ts) and hands each event to small
// callbacks, in fastai's manner (fastai's callback/tracker.py, schedule.py, progress.py): EarlyStopping tracks the
// best epoch and restores its weights at the end, NanStop stops on a non-finite loss, ProgressCallback drives the
// progress sink (and an optional line per epoch), RunLogger writes the run to the experiment log (lib/experiment/runs.ts) —
// only when asked: library calls log nothing, the experiment steps of lib/experiment/pipeline.ts and `npm start` opt in.
//
// Events, in order: beforeFit; per epoch (after training it and evaluating on validation) afterValidate, then
// afterEpoch; afterFit (also after a stop). Callbacks run in list order. A callback ends the fit with
// `state.stop(reason)`: the event it is in still runs to its end, the next one does not — so a stop in afterValidate
// (a NaN epoch) skips that epoch's afterEpoch (no report of a broken epoch), a stop in afterEpoch (patience) ends
// the fit after the epoch has been reported.
import { interruptible, yieldToEventLoop } from '../util/cancel';
import * as tf from '@tensorflow/tfjs';
import { percent } from '../util/format';
import { HeadTrainer, resolveTrainConfig, TrainConfig } from './head-trainer';
import { checkData, classesOf, columnStats, LabeledFeatures } from '../features/labeled-features';
import { progress, silentProgress, ProgressSink } from '../util/progress';
import { EpochRecord, newRunId, RunRecord, writeRun } from '../experiment/runs';

export type StopReason = RunRecord['stopReason'];

/** What a run record says about a run beyond its numbers: kind, sweep group, data description, id slug. */
export type RunFields = Partial<Pick<RunRecord, 'kind' | 'group' | 'data'>> & { slug?: string };

export interface TrainResult {
  /** The head with the BEST epoch's weights (restored at the end). */
  head: tf.LayersModel;
  config: TrainConfig;
  history: EpochRecord[];
  /** 1-based epoch whose weights the head holds (0 = initial weights: no epoch completed). */
  bestEpoch: number;
  bestValAcc: number;
  bestValLoss: number;
  stopReason: StopReason;
  message?: string;
  seconds: number;
  secondsPerEpoch: number;
  /** The run's id in the experiment log (only with saveRun). */
  runId?: string;
}

export interface TrainOptions {
  /** Stops training between batches (as an interrupt or Ctrl-C does): an InterruptedError saying where. */
  signal?: AbortSignal;
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
  /** One line per epoch (default: none; the progress bar carries the numbers); also where a NaN stop is said. */
  log?: (line: string) => void;
  /**
   * Write the run to the experiment log, data/runs (default false: a library call logs nothing; the experiment
   * steps of lib/experiment/pipeline.ts and `npm start` ask for it). `run` adds fields (data description, kind, group).
   */
  saveRun?: boolean;
  run?: RunFields;
  /** Backend name recorded in the run (default tf.getBackend()). */
  backend?: string;
  /** Further callbacks, run after the built-in ones. */
  callbacks?: Callback[];
}

/** The best epoch so far as EarlyStopping tracks it (epoch 0: the initial weights, nothing better seen yet). */
export interface Best {
  epoch: number;
  acc: number;
  loss: number;
}

/**
 * What the loop trains: the head's HeadTrainer on LabeledFeatures, or the fine-tuner (lib/train/finetune.ts) on cached
 * activations. Weights are copies (the caller disposes); `setWeights` takes them back in the same order.
 */
export interface Learner<D> {
  trainEpochInterruptible(d: D, epoch: number, check: () => void): Promise<{ loss: number; lr: number }>;
  evaluate(d: D): Promise<{ loss: number; acc: number }>;
  weights(): tf.Tensor[];
  setWeights(ws: tf.Tensor[]): void;
}

/** What the run log says about the data of a fit. */
export interface DataSummary {
  n: number;
  dim: number;
  views: number;
}

const summary = (d: LabeledFeatures): DataSummary => ({ n: d.n, dim: d.dim, views: d.views.length });

/** What the loop shares with its callbacks (fastai's Learner, reduced to this trainer). */
export class FitState {
  readonly history: EpochRecord[] = [];
  best: Best = { epoch: 0, acc: -Infinity, loss: Infinity };
  stopReason: StopReason = 'completed';
  message?: string;
  /** Wall time of the fit and mean epoch time: set by the loop before afterFit. */
  seconds = 0;
  secondsPerEpoch = 0;
  /** Set by RunLogger. */
  runId?: string;
  private bestWeights: tf.Tensor[];
  private stopped = false;
  private restored = false;

  constructor(
    readonly trainer: Learner<any>,
    readonly cfg: TrainConfig,
    readonly train: DataSummary,
    readonly val: DataSummary,
    readonly label: string,
    readonly t0: number,
  ) {
    this.bestWeights = trainer.weights(); // initial weights: what we keep if epoch 1 already diverges
  }

  /** The record of the current (last) epoch. */
  get rec(): EpochRecord {
    return this.history[this.history.length - 1];
  }

  get bestValAcc(): number {
    return this.best.epoch ? this.best.acc : NaN;
  }

  get bestValLoss(): number {
    return this.best.epoch ? this.best.loss : NaN;
  }

  get stopRequested(): boolean {
    return this.stopped;
  }

  /** End the fit after the current event (the first request's reason and message are kept). */
  stop(reason: StopReason, message?: string): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopReason = reason;
    this.message = message;
  }

  /** The current epoch is the best so far: remember its numbers and a copy of its weights. */
  markBest(rec: EpochRecord): void {
    this.best = { epoch: rec.epoch, acc: rec.valAcc, loss: rec.valLoss };
    tf.dispose(this.bestWeights);
    this.bestWeights = this.trainer.weights();
    this.restored = false;
  }

  /** Put the best epoch's weights (the initial ones if none was better) back into the trainer; once is enough. */
  restoreBest(): void {
    if (this.restored) return;
    this.trainer.setWeights(this.bestWeights);
    this.restored = true;
  }

  dispose(): void {
    tf.dispose(this.bestWeights);
  }
}

/** A training-loop callback: any of the events, each given the loop's state. */
export interface Callback {
  beforeFit?(s: FitState): void | Promise<void>;
  /** The epoch is trained and evaluated: its record is `s.rec`. */
  afterValidate?(s: FitState): void | Promise<void>;
  /** The epoch is complete (not reached after a stop in afterValidate). */
  afterEpoch?(s: FitState): void | Promise<void>;
  /** After the last epoch or a stop. */
  afterFit?(s: FitState): void | Promise<void>;
}

/**
 * Tracks the monitored metric (val_acc — ties broken by the lower val_loss — or val_loss), stops after `patience`
 * epochs without improvement (0 = never) and restores the best epoch's weights at the end of the fit, whatever
 * ended it. An epoch with a non-finite loss is never the best.
 */
export class EarlyStopping implements Callback {
  constructor(private readonly o: { patience: number; monitor: TrainConfig['monitor'] }) {}

  afterValidate(s: FitState): void {
    const r = s.rec;
    if (!Number.isFinite(r.loss) || !Number.isFinite(r.valLoss)) return;
    const b = s.best;
    const improved = this.o.monitor === 'val_acc' ? r.valAcc > b.acc || (r.valAcc === b.acc && r.valLoss < b.loss) : r.valLoss < b.loss;
    if (improved) s.markBest(r);
  }

  afterEpoch(s: FitState): void {
    if (this.o.patience > 0 && s.rec.epoch - s.best.epoch >= this.o.patience) s.stop('early-stop');
  }

  afterFit(s: FitState): void {
    s.restoreBest();
  }
}

/**
 * Stops the fit when the training or validation loss of an epoch is NaN/±Infinity, with a one-line message (to
 * `warn`), and restores the best weights so far (EarlyStopping's; the initial weights if no epoch was better).
 */
export class NanStop implements Callback {
  constructor(private readonly warn: (line: string) => void = console.warn) {}

  afterValidate(s: FitState): void {
    const r = s.rec;
    if (Number.isFinite(r.loss) && Number.isFinite(r.valLoss)) return;
    const what = !Number.isFinite(r.loss) ? `training loss became ${r.loss}` : `validation loss became ${r.valLoss}`;
    const message = `stopped at epoch ${r.epoch}: ${what} (lr=${r.lr.toPrecision(3)}; try a lower lr); keeping ${
      s.best.epoch ? `the best weights, from epoch ${s.best.epoch}` : 'the initial weights (no epoch completed)'
    }`;
    this.warn(message);
    s.stop('non-finite-loss', message);
  }

  afterFit(s: FitState): void {
    if (s.stopReason === 'non-finite-loss') s.restoreBest();
  }
}

/** Ticks a progress sink once per epoch (default: a bar labelled with the run's label) and, given `log`, writes a line per epoch. */
export class ProgressCallback implements Callback {
  private sink: ProgressSink = silentProgress;

  constructor(private readonly o: { sink?: ProgressSink; log?: (line: string) => void } = {}) {}

  beforeFit(s: FitState): void {
    this.sink = this.o.sink ?? progress(s.label, s.cfg.epochs, 'epoch');
  }

  afterEpoch(s: FitState): void {
    const r = s.rec;
    const b = s.best;
    this.o.log?.(
      `${s.label} epoch ${r.epoch}/${s.cfg.epochs} lr ${r.lr.toExponential(2)} loss ${r.loss.toFixed(4)} val ${percent(r.valAcc)} ` +
        `(loss ${r.valLoss.toFixed(4)}) ${r.seconds.toFixed(1)} s${b.epoch === r.epoch ? ' *' : ''}`,
    );
    this.sink.tick(1, `loss ${r.loss.toFixed(3)} val ${percent(r.valAcc)} best ${percent(b.acc)}@${b.epoch}`);
  }

  afterFit(s: FitState): void {
    this.sink.done(`best val ${percent(s.best.acc)} at epoch ${s.best.epoch} (${s.stopReason})`);
  }
}

/** Writes the run (parameters, history, best epoch, timings, backend) to the experiment log at the end of the fit. */
export class RunLogger implements Callback {
  constructor(private readonly run: RunFields & { backend?: string } = {}) {}

  afterFit(s: FitState): void {
    const { cfg, train, val } = s;
    const id = newRunId(this.run.slug ?? `lr${cfg.lr}-d${cfg.dropout}`);
    writeRun({
      id,
      kind: this.run.kind ?? 'train',
      group: this.run.group,
      createdAt: new Date(s.t0).toISOString(),
      params: { ...cfg },
      data: { nTrain: train.n, nVal: val.n, dim: train.dim, trainViews: train.views, ...this.run.data },
      history: s.history,
      bestEpoch: s.best.epoch,
      valAccuracy: s.bestValAcc,
      valLoss: s.bestValLoss,
      testAccuracy: null,
      metrics: {},
      stopReason: s.stopReason,
      message: s.message,
      wallSeconds: s.seconds,
      secondsPerEpoch: s.secondsPerEpoch,
      backend: this.run.backend ?? tf.getBackend(),
    });
    s.runId = id;
  }
}

async function emit(callbacks: Callback[], event: keyof Callback, s: FitState): Promise<void> {
  for (const cb of callbacks) await cb[event]?.(s);
}

/**
 * Train the head on cached features: an LR schedule, sampling among the training views each epoch, early
 * stopping on validation that RESTORES the best epoch's weights, a stop (keeping the best weights) on
 * NaN/Infinity, progress. Writes the run to the experiment log (data/runs/<id>.json) only with `saveRun: true`.
 */
export async function trainHead(
  train: LabeledFeatures,
  val: LabeledFeatures,
  config: Partial<TrainConfig> = {},
  opts: TrainOptions = {},
): Promise<TrainResult> {
  const cfg = resolveTrainConfig(config);
  // Leave the cell's synchronous start before any heavy work: a notebook Interrupt that arrives then finds our
  // SIGINT handler (tslab's breaks synchronous code only, and takes the kernel down when that code is native).
  await yieldToEventLoop();
  checkData(train, 'training features');
  checkData(val, 'validation features');
  if (val.dim !== train.dim) throw new Error(`validation features have dim ${val.dim}, training features ${train.dim}`);
  const t0 = Date.now();
  // BN moving statistics start at the data's (per-epoch data: the validation features, same distribution).
  const trainer = new HeadTrainer(train.dim, cfg, columnStats(opts.epochData ? val : train), classesOf(train));
  try {
    const r = await fit(trainer, train, val, summary(train), summary(val), cfg, {
      ...opts,
      label: opts.label ?? `head lr=${cfg.lr} drop=${cfg.dropout}`,
      kind: opts.run?.kind ?? (opts.epochData ? 'end-to-end' : 'train'),
      epochData: opts.epochData && (async (epoch) => {
        const data = await opts.epochData!(epoch);
        checkData(data, `training features of epoch ${epoch + 1}`);
        return data;
      }),
    }, t0);
    return { ...r, head: trainer.toHead() };
  } finally {
    trainer.dispose();
  }
}

/**
 * The loop itself, for any Learner: epochs with the callbacks (NaN stop, early stopping with restore-best,
 * progress, optional run log), interruptible between batches. The learner ends holding the best epoch's weights.
 */
export async function fit<D>(
  trainer: Learner<D>,
  train: D,
  val: D,
  trainSummary: DataSummary,
  valSummary: DataSummary,
  cfg: TrainConfig,
  opts: Omit<TrainOptions, 'epochData'> & { label: string; kind: NonNullable<RunFields['kind']>; epochData?: (epoch: number) => Promise<D> },
  t0 = Date.now(),
): Promise<Omit<TrainResult, 'head'>> {
  const s = new FitState(trainer, cfg, trainSummary, valSummary, opts.label, t0);
  const { onEpochEnd, kind } = opts;
  const callbacks: Callback[] = [
    new NanStop(opts.log ?? console.warn),
    new EarlyStopping({ patience: cfg.patience, monitor: cfg.monitor }),
    ...(onEpochEnd ? [{ afterEpoch: (st: FitState) => onEpochEnd(st.rec, () => st.trainer.weights()) }] : []),
    new ProgressCallback({ sink: opts.progress === false ? silentProgress : undefined, log: opts.log }),
    ...(opts.saveRun ? [new RunLogger({ ...opts.run, kind, backend: opts.backend })] : []),
    ...(opts.callbacks ?? []),
  ];
  const op = interruptible(`training ${s.label}`, opts.signal);
  try {
    await emit(callbacks, 'beforeFit', s);
    for (let epoch = 0; epoch < cfg.epochs; epoch++) {
      const e0 = Date.now();
      const where = () => `in epoch ${epoch + 1}/${cfg.epochs}`;
      op.check(where);
      const data = opts.epochData ? await opts.epochData(epoch) : train;
      const { loss, lr } = await trainer.trainEpochInterruptible(data, epoch, () => op.check(where));
      const ev = Number.isFinite(loss) ? await trainer.evaluate(val) : { loss: NaN, acc: NaN };
      s.history.push({ epoch: epoch + 1, lr, loss, valLoss: ev.loss, valAcc: ev.acc, seconds: (Date.now() - e0) / 1000 });
      await emit(callbacks, 'afterValidate', s);
      if (s.stopRequested) break;
      await emit(callbacks, 'afterEpoch', s);
      if (s.stopRequested) break;
      await new Promise((r) => setImmediate(r)); // let progress displays and notebooks update
    }
    s.seconds = (Date.now() - t0) / 1000;
    s.secondsPerEpoch = s.history.reduce((a, h) => a + h.seconds, 0) / Math.max(1, s.history.length);
    await emit(callbacks, 'afterFit', s);
    return {
      config: cfg,
      history: s.history,
      bestEpoch: s.best.epoch,
      bestValAcc: s.bestValAcc,
      bestValLoss: s.bestValLoss,
      stopReason: s.stopReason,
      message: s.message,
      seconds: s.seconds,
      secondsPerEpoch: s.secondsPerEpoch,
      ...(s.runId ? { runId: s.runId } : {}),
    };
  } finally {
    op.release();
    s.dispose();
  }
}
