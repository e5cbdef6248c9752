// Many heads at once: the seed's lr x dropout sweep (one call, one comparison table, one group in the experiment
// log when the runs are logged) and fastai's LR range test (lrFind).
import { interruptible, yieldToEventLoop } from '../util/cancel';
import { formatTable, percent } from '../util/format';
import { HeadTrainer, resolveTrainConfig, TrainConfig } from './head-trainer';
import { checkData, classesOf, columnStats, LabeledFeatures, subsetFeatures } from '../features/labeled-features';
import { rng } from '../util/random';
import { newRunId } from '../experiment/runs';
import { trainHead, TrainOptions, TrainResult } from './training-loop';

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
 * Train one head per (lr, dropout) in one call; with `saveRun: true` every run goes to the experiment log under
 * one group id. Returns the runs, the best by validation accuracy (heads of the others are disposed) and a
 * comparison table.
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
export async function lrFind(
  train: LabeledFeatures,
  config: Partial<TrainConfig> = {},
  opts: { minLr?: number; maxLr?: number; steps?: number; signal?: AbortSignal } = {},
): Promise<LrFindResult> {
  const cfg = resolveTrainConfig(config);
  checkData(train, 'training features');
  const minLr = opts.minLr ?? 1e-6;
  const maxLr = opts.maxLr ?? 1;
  const steps = opts.steps ?? 200;
  const trainer = new HeadTrainer(train.dim, cfg, columnStats(train), classesOf(train));
  const lrs: number[] = [];
  const losses: number[] = [];
  const lrAt = (i: number) => minLr * (maxLr / minLr) ** (i / Math.max(1, steps - 1));
  let smooth = 0;
  let bestLoss = Infinity;
  const beta = 0.98;
  const op = interruptible('LR finder', opts.signal);
  let last = Date.now();
  try {
    // One random mini-batch per step, each a 1-step "epoch" of the trainer: same code path as real training.
    for (let i = 0; i < steps; i++) {
      if (Date.now() - last > 200) {
        await yieldToEventLoop(); // an interrupt can arrive, and stops the search between steps
        op.check(() => `at step ${i}/${steps}`);
        last = Date.now();
      }
      const lr = lrAt(i);
      const { loss } = await trainer.trainEpoch(batchOf(train, cfg.batchSize, i, cfg.seed), 0, () => lr);
      if (!Number.isFinite(loss)) break;
      smooth = beta * smooth + (1 - beta) * loss;
      const debiased = smooth / (1 - beta ** (i + 1));
      lrs.push(lr);
      losses.push(debiased);
      bestLoss = Math.min(bestLoss, debiased);
      if (debiased > 4 * bestLoss) break;
    }
  } finally {
    op.release();
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
  const random = rng(seed * 1000003 + step);
  return subsetFeatures(train, Array.from({ length: Math.min(batchSize, train.n) }, () => Math.floor(random() * train.n)));
}
