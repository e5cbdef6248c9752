// The experiment as named steps — the one sequence behind `npm start`, `npm run regimes` and notebooks 02-06:
//
//   openExperiment  settings checked, backend, the dataset (CIFAR-10 or your folder), the splits
//   chooseRegime    which blocks of each backbone learn (given, or the best that fits the time budget, remembered)
//   cacheData       what the regime trains on, computed once and cached: pooled features, or activations at the cut
//   chooseRates     the head's learning rate and dropout (the seed's 4 x 2 sweep for the frozen regime)
//   train           the head alone, or the top blocks and the head together
//   evaluate        every labelled split, plain and with TTA
//   save            the assembled pixels -> probabilities model, checked, in its own folder; made current
//
// A regime is a value (trainable blocks per backbone; frozen = all zero), so both regimes go through the same steps
// and the same seed gives the same numbers through every door.
import * as tf from '@tensorflow/tfjs';
import { BackendChoice, initBackend } from '../engine/backend';
import { resolveTrunkPrecision } from '../engine/train-graph';
import { backboneArtifacts, BackboneName } from '../features/backbones';
import { groupsAbove } from '../model/trunk';
import { LabeledFeatures } from '../features/labeled-features';
import { Dataset, datasetRecord, describeSplits, isCifar10, loadDataset } from '../data/dataset';
import { newModelId, promote, Promotion, regimeSlug } from '../model/registry';
import { DEFAULT_TRAIN } from '../train/head-trainer';
import { FineTuneSet, fineTuneBackendError, resolveFineTuneConfig } from '../train/finetune';
import { fineTuneKey } from '../train/finetune-cache';
import { EpochRecord, updateRun } from './runs';
import { SweepResult } from '../train/sweep';
import { ExperimentConfig, SettingKey } from '../settings/config';
import { dataDir, modelsDir } from '../settings/paths';
import { percent } from '../util/format';
import { requireWritable, unwritableReason } from '../util/writable';
import {
  compareRegimes, evaluateHead, Evaluations, evalViews, experimentSplits, FeatureOptions, featureOptions, featuresFor, headline, metricsOf,
  RegimeComparison, runData, saveClassifier, Splits, sweepHeads, trainFinal,
} from './pipeline';
import { chooseRegime as chooseWithinBudget, cutsFor, fineTune, fineTuneDataFor, regimeName, RegimeRow, RegimeSpec, rememberChoice, rememberedChoice, choiceFile } from './regimes';
import * as path from 'path';

/** Fine-tuning trains on plain and flipped cached activations (unless --views says otherwise). */
export const FINE_TUNE_VIEWS: readonly string[] = ['plain', 'flip'];
/** Seconds kept back from the time budget for evaluation, assembling, checking and saving the model. */
export const SAVE_RESERVE_SECONDS = 60;

export type Sources = Partial<Record<SettingKey, string>>;

/** One experiment in progress: its settings, backend, data and splits, and the timings of its steps. */
export interface Experiment {
  settings: ExperimentConfig;
  /** Where each non-default setting came from ("--epochs", "EPOCHS"), for messages. */
  sources: Sources;
  backend: BackendChoice;
  data: Dataset;
  splits: Splits;
  features: FeatureOptions;
  /** Views extracted for evaluation: plain, plus flip with TTA. */
  evalViews: string[];
  /** Where the saved models are kept (<models>/<model id>/, <models>/current.json). */
  models: string;
  startedAt: number;
  timings: [string, number][];
  log: (line: string) => void;
  /** Runs `f`, recording its wall time under `what` in the summary's timings. */
  timed<T>(what: string, f: () => Promise<T> | T): Promise<T>;
}

/** A regime: which top blocks of each backbone learn (settings.backbones order; all 0 = frozen). */
export interface Regime {
  blocks: number[];
  name: string;
  /** Cached training views each epoch samples from. */
  trainViews: string[];
  /** The layer each backbone is cut at: its activations are cached and the blocks above it learn (null = frozen). */
  cuts: (string | null)[];
  /** How it was decided ("--trainable-blocks 0,5", "auto: ..."). */
  how: string;
}

export const isFineTuning = (r: Pick<Regime, 'blocks'>): boolean => r.blocks.some((k) => k > 0);

/**
 * Check the settings, start the backend, load the dataset and make the splits. Everything a setting can get wrong
 * (an unwritable model folder, blocks the backend cannot train, a block count beyond a backbone) stops here, before
 * any data is loaded: a bad value costs a second, not a finished training.
 */
export async function openExperiment(settings: ExperimentConfig, opts: { sources?: Sources; log?: (line: string) => void; startedAt?: number } = {}): Promise<Experiment> {
  const p = settings;
  const sources = opts.sources ?? {};
  const log = opts.log ?? ((l: string) => console.log(l));
  const startedAt = opts.startedAt ?? Date.now();
  const timings: [string, number][] = [];
  const timed = async <T>(what: string, f: () => Promise<T> | T): Promise<T> => {
    const t0 = Date.now();
    const r = await f();
    timings.push([what, (Date.now() - t0) / 1000]);
    return r;
  };
  if (p.sweepEpochs === 0 && (p.lr === null || p.dropout === null)) {
    throw new Error('--sweep-epochs 0 skips the sweep, so give --lr and --dropout (or LR and DROPOUT)');
  }
  const models = modelsDir(p.models);
  requireWritable(models, sources.models ?? 'MODELS_DIR');
  if (unwritableReason(dataDir())) {
    log(`note: DATA_DIR ${dataDir()} is not writable: its feature cache is read, but new features and the run log are not saved`);
  }
  const backend = await initBackend();
  if (p.trainableBlocks) {
    if (p.trainableBlocks.length !== p.backbones.length) {
      throw new Error(`${sources.trainableBlocks ?? '--trainable-blocks'}=${p.trainableBlocks.join(',')}: expected ${p.backbones.length} numbers, one per backbone (${p.backbones.join(',')})`);
    }
    const why = isFineTuning({ blocks: p.trainableBlocks }) ? fineTuneBackendError(backend.name) : null;
    if (why) throw new Error(why);
    await cutsFor(p.backbones, p.trainableBlocks); // a block count beyond the backbone's says so now
  }
  const data = await timed(isCifar10(p.dataset) ? 'load CIFAR-10' : 'load images', () => loadDataset(p, { log, where: sources.dataset ?? '--dataset' }));
  const splits = experimentSplits(data, p);
  // A limit beyond the data is obeyed as "all", and said.
  const caps: [number, number, string][] = [[p.trainLimit, splits.train.n, 'train-limit'], [p.valLimit, splits.val.n, 'val-limit'], [p.testLimit, splits.testFull.n, 'test-limit']];
  for (const [limit, n, flag] of caps) if (limit > n) log(`note: --${flag} ${limit} is more than the ${n} images there are: using all ${n}`);
  log(
    `data: ${describeSplits(data, splits)}; backbones ${p.backbones.join('+')} @ ${p.resolution}px; train views ${sources.views ? p.views.join(',') : `${FINE_TUNE_VIEWS.join(',')} fine-tuning, ${p.views.join(',')} frozen`}; TTA ${p.tta ? 'on' : 'off'}`,
  );
  // A folder is recorded by its absolute path: the saved model and notebook 06 find it from any working folder.
  const resolved = data.kind === 'folder' ? { ...p, dataset: data.root } : p;
  return { settings: resolved, sources, backend, data, splits, features: featureOptions(p), evalViews: evalViews(p.tta), models, startedAt, timings, log, timed };
}

/** The training views of a regime: --views when given, else plain+flip for fine-tuning and --views' default frozen. */
function trainViewsFor(exp: Experiment, blocks: number[]): string[] {
  return isFineTuning({ blocks }) && !exp.sources.views ? [...FINE_TUNE_VIEWS] : [...exp.settings.views];
}

/**
 * The regime: the blocks given by --trainable-blocks, or (auto) the best candidate whose estimate — measured now, on
 * this machine — fits the time budget from a cold cache. An auto choice is remembered per settings in DATA_DIR, so
 * a re-run, and every notebook, uses the regime whose data was cached instead of timing again.
 */
export async function chooseRegime(exp: Experiment): Promise<Regime> {
  const p = exp.settings;
  const backbones = p.backbones;
  const make = (blocks: number[], how: string) => regimeOf(exp, blocks, how);
  let regime: Regime;
  if (p.trainableBlocks) {
    regime = await make(p.trainableBlocks, `${exp.sources.trainableBlocks ?? '--trainable-blocks'} ${p.trainableBlocks.join(',')}`);
  } else if (fineTuneBackendError(exp.backend.name)) {
    regime = await make(backbones.map(() => 0), `auto: fine-tuning needs the tensorflow backend; ${exp.backend.name} is in use`);
  } else {
    const views = exp.sources.views ? p.views : [...FINE_TUNE_VIEWS];
    const { splits } = exp;
    const work = {
      train: splits.train.n, val: splits.val.n, test: splits.testFull.n, trainViews: views.length, evalViews: exp.evalViews.length,
      epochs: p.fineTuneEpochs, batchSize: p.fineTuneBatchSize, trunkPrecision: resolveTrunkPrecision(p.trunkPrecision),
    };
    const dataset = isCifar10(p.dataset) ? {} : { dataset: exp.data.kind === 'folder' ? exp.data.root : p.dataset, fit: p.fit };
    const key = JSON.stringify({ backbones, resolution: p.resolution, ...work, views, budget: p.budgetMinutes, backend: exp.backend.name, ...dataset });
    const earlier = rememberedChoice(key);
    if (earlier) {
      regime = await make(earlier.blocks, `auto: chosen ${earlier.at} for these settings — estimates then ${earlier.estimates}; delete ${choiceFile()} to measure again`);
    } else {
      const spent = (Date.now() - exp.startedAt) / 1000;
      const budget = p.budgetMinutes * 60 - spent - SAVE_RESERVE_SECONDS;
      const choice = await exp.timed('choose regime (timing probes)', () => chooseWithinBudget(backbones, work, splits.train, exp.features, budget));
      const est = choice.estimates.map((e) => `${e.name} ~${(e.seconds / 60).toFixed(1)} min (data ${(e.dataSeconds / 60).toFixed(1)} + training ${(e.trainSeconds / 60).toFixed(1)})`).join(', ');
      rememberChoice(key, { blocks: choice.blocks, estimates: est });
      regime = await make(choice.blocks, `auto: the best that fits ${p.budgetMinutes} min from a cold cache; estimates ${est}`);
    }
  }
  exp.log(`regime: ${regime.name} (${regime.how})`);
  return regime;
}

/** The regime value for `blocks` (and training views: by default plain+flip for fine-tuning, --views frozen). */
export async function regimeOf(exp: Experiment, blocks: number[], how: string, views?: string[]): Promise<Regime> {
  const backbones = exp.settings.backbones;
  return { blocks, how, name: regimeName(backbones, blocks), trainViews: views ?? trainViewsFor(exp, blocks), cuts: await cutsFor(backbones, blocks, exp.features.backbonesDir) };
}

/** What a regime trains and is evaluated on, per split. Frozen: pooled features; fine-tuning: activations at the cuts. */
export type RegimeData =
  | { kind: 'frozen'; regime: Regime; train: LabeledFeatures; val: LabeledFeatures; test: LabeledFeatures }
  | { kind: 'fine-tune'; regime: Regime; train: FineTuneSet; val: FineTuneSet; test: FineTuneSet };

/** The regime's cached data for every split (computed once per image and view, then read from the cache). */
export async function cacheData(exp: Experiment, regime: Regime, opts: { signal?: AbortSignal } = {}): Promise<RegimeData> {
  const { splits, timed } = exp;
  const ev = exp.evalViews;
  const tally = { computed: 0, cached: 0 };
  const fo = { ...exp.features, signal: opts.signal, tally };
  const tv = regime.trainViews;
  // One line whatever happened: a warm run says it read everything, a grown folder says it computed only the new images.
  const said = () => exp.log(`${isFineTuning(regime) ? 'cached data' : 'features'}: ${tally.computed.toLocaleString('en')} image-views computed now, ${tally.cached.toLocaleString('en')} read from the cache (each backbone and view counts)`);
  if (!isFineTuning(regime)) {
    const train = await timed(`features train (${tv.join(',')})`, () => featuresFor(splits.train, tv, fo));
    const val = await timed(`features validation (${ev.join('+')})`, () => featuresFor(splits.val, ev, fo));
    const test = await timed(`features test (${ev.join('+')})`, () => featuresFor(splits.testFull, ev, fo));
    said();
    return { kind: 'frozen', regime, train, val, test };
  }
  const backbones = exp.settings.backbones;
  exp.log(`fine-tuning data: ${cutsText(backbones, regime.cuts)}; train views ${tv.join(',')}`);
  const train = await timed(`cached data train (${tv.join(',')})`, () => fineTuneDataFor(splits.train, tv, regime.cuts, backbones, fo));
  const val = await timed(`cached data validation (${ev.join('+')})`, () => fineTuneDataFor(splits.val, ev, regime.cuts, backbones, fo));
  const test = await timed(`cached data test (${ev.join('+')})`, () => fineTuneDataFor(splits.testFull, ev, regime.cuts, backbones, fo));
  said();
  return { kind: 'fine-tune', regime, train, val, test };
}

/** "mobilenet_v1_0.75 pooled, mobilenet_v2 at block_12_add". */
export function cutsText(backbones: BackboneName[], cuts: (string | null)[]): string {
  return backbones.map((b, i) => (cuts[i] ? `${b} at ${cuts[i]}` : `${b} pooled`)).join(', ');
}

/**
 * The regime in words, for notebook 05: for each backbone, frozen or where it is cut and which of its layers learn
 * above the cut (at the backbone rate), and the head's rate.
 */
export async function describeRegime(exp: Experiment, regime: Regime): Promise<string> {
  const p = exp.settings;
  const lines = [`regime: ${regime.name} — ${regime.how}`];
  for (const [i, b] of p.backbones.entries()) {
    const cut = regime.cuts[i];
    if (!cut) {
      lines.push(`  ${b}: frozen — its pooled features are computed once per image and view, and cached`);
      continue;
    }
    const groups = groupsAbove((await backboneArtifacts(b, { dir: exp.features.backbonesDir })).topology, cut);
    lines.push(`  ${b}: cut at ${cut} — its output there is cached; above it learn ${groups.join(', ')} (learning rate ${p.backboneLr})`);
  }
  lines.push(`  head: BatchNorm -> Dropout -> Dense(${p.units}, ReLU) -> Dropout -> softmax, learning rate ${p.lr ?? (isFineTuning(regime) ? DEFAULT_TRAIN.lr : 'the sweep winner')}`);
  lines.push(`  trains on cached views ${regime.trainViews.join(', ')}${isFineTuning(regime) ? `, ${p.fineTuneEpochs} epochs of batch ${p.fineTuneBatchSize}, ${resolveTrunkPrecision(p.trunkPrecision)} training step` : `, ${p.epochs} epochs`}`);
  return lines.join('\n');
}

/** The head's learning rate and dropout, and where they came from. */
export interface Rates {
  lr: number;
  dropout: number;
  /** The sweep, when it ran (the frozen regime with sweepEpochs > 0). */
  sweep?: SweepResult & { images: number };
  how: string;
}

/**
 * The head's learning rate and dropout: --lr / --dropout when given; else, for the frozen regime, the winner of the
 * seed's 4 x 2 sweep; fine-tuning keeps the trainer's defaults (a sweep would cost eight fine-tunings).
 */
export async function chooseRates(exp: Experiment, data: RegimeData, opts: { onEpochEnd?: (rec: EpochRecord) => void; progress?: boolean; signal?: AbortSignal } = {}): Promise<Rates> {
  const p = exp.settings;
  if (data.kind === 'fine-tune' || p.sweepEpochs === 0) {
    const lr = p.lr ?? DEFAULT_TRAIN.lr;
    const dropout = p.dropout ?? DEFAULT_TRAIN.dropout;
    const how = data.kind === 'fine-tune'
      ? `fine-tuning: head lr ${lr}${p.lr === null ? ' (default)' : ''}, dropout ${dropout}${p.dropout === null ? ' (default)' : ''}, backbone blocks lr ${p.backboneLr}; no sweep`
      : `no sweep (--sweep-epochs 0): lr ${lr}, dropout ${dropout}`;
    return { lr, dropout, how };
  }
  const s = await exp.timed(`sweep 4x2 (${Math.min(p.sweepImages || data.train.n, data.train.n)} images, ${p.sweepEpochs} epochs each)`, () =>
    sweepHeads(data.train, data.val, p, { backend: exp.backend.name, saveRun: true, ...opts }),
  );
  s.best.head.dispose();
  const lr = p.lr ?? s.best.config.lr;
  const dropout = p.dropout ?? s.best.config.dropout;
  return { lr, dropout, sweep: s, how: `sweep winner: lr ${s.best.config.lr}, dropout ${s.best.config.dropout}${p.lr !== null || p.dropout !== null ? `; given: ${[p.lr !== null ? `lr ${p.lr}` : '', p.dropout !== null ? `dropout ${p.dropout}` : ''].filter(Boolean).join(', ')}` : ''}` };
}

/** A trained model in training form: the head, and for fine-tuning the trunks that compute the head's features. */
export interface Trained {
  regime: Regime;
  head: tf.LayersModel;
  rates: Rates;
  history: EpochRecord[];
  bestEpoch: number;
  stopReason?: string;
  runId?: string;
  /** The training's own message (a NaN stop, an early stop), when it has one. */
  message?: string;
  /** What the saved metadata records about the training. */
  training: Record<string, unknown>;
  trainableParameters: number;
  /** Set when the fine-tuned weights came from the cache of an identical earlier training. */
  reused?: { savedAt: string };
  /** The features the head reads, for a split's cached data. */
  headFeatures(set: LabeledFeatures | FineTuneSet): Promise<LabeledFeatures>;
  /** Fine-tuned backbone layers' weights (fine-tuning only), for the saved model. */
  backboneWeights?(): Promise<Partial<Record<BackboneName, Map<string, Float32Array>>>>;
  dispose(): void;
}

/**
 * Train the regime: the head on cached features (frozen), or the top blocks with the head on cached activations
 * (fine-tuning; weights trained from the same inputs before are reused unless --retrain). Logged in data/runs.
 */
export async function train(
  exp: Experiment, data: RegimeData, rates: Rates,
  opts: { onEpochEnd?: (rec: EpochRecord) => void; progress?: boolean; signal?: AbortSignal } = {},
): Promise<Trained> {
  const p = exp.settings;
  const { lr, dropout } = rates;
  if (data.kind === 'frozen') {
    const final = await exp.timed(`final training (${p.epochs} epochs)`, () =>
      trainFinal(data.train, data.val, { ...p, views: data.regime.trainViews }, lr, dropout, { backend: exp.backend.name, saveRun: true, ...opts }),
    );
    if (final.message) exp.log(final.message);
    return {
      regime: data.regime, head: final.head, rates, history: final.history, bestEpoch: final.bestEpoch, stopReason: final.stopReason, runId: final.runId,
      training: { ...final.config, bestEpoch: final.bestEpoch },
      trainableParameters: final.head.trainableWeights.reduce((a, w) => a + w.shape.reduce((x: number, y) => x * (y ?? 1), 1), 0),
      headFeatures: async (set) => set as LabeledFeatures,
      dispose: () => final.head.dispose(),
    };
  }
  const { splits } = exp;
  const regime = data.regime;
  const ftConfig = { units: p.units, seed: p.seed, lr, dropout, backboneLr: p.backboneLr, trunkPrecision: resolveTrunkPrecision(p.trunkPrecision), epochs: p.fineTuneEpochs, batchSize: p.fineTuneBatchSize };
  const key = await fineTuneKey({
    train: splits.train, val: splits.val, backbones: p.backbones, cuts: regime.cuts, resolution: p.resolution, views: regime.trainViews,
    config: resolveFineTuneConfig(ftConfig), backbonesDir: exp.features.backbonesDir,
  });
  const label = `fine-tuning (${p.fineTuneEpochs} epochs)`;
  const ft = await exp.timed(label, () =>
    fineTune(data.train, data.val, ftConfig, {
      backend: exp.backend.name, saveRun: true, log: exp.log, ...opts,
      run: { data: { ...runData(p), trainViews: regime.trainViews, trainableBlocks: regime.blocks } },
      cache: { root: exp.features.cacheDir ?? dataDir('cache'), key, retrain: p.retrain },
    }),
  );
  if (ft.reused) {
    const row = exp.timings.find(([l]) => l === label);
    if (row) row[0] = 'fine-tuning (weights reused)';
  }
  if (ft.result.message) exp.log(ft.result.message);
  return {
    regime, head: ft.head, rates, history: ft.result.history, bestEpoch: ft.result.bestEpoch, stopReason: ft.result.stopReason, runId: ft.result.runId,
    training: { ...ft.config, bestEpoch: ft.result.bestEpoch },
    trainableParameters: ft.trainableParameters, reused: ft.reused,
    headFeatures: (set) => ft.features(set as FineTuneSet),
    backboneWeights: () => ft.backboneWeights(),
    dispose: () => {
      ft.dispose();
      ft.head.dispose();
    },
  };
}

/** The evaluations, and the head's inputs for the splits (the saved-model check reads the test rows). */
export interface Evaluated {
  evals: Evaluations;
  val: LabeledFeatures;
  test: LabeledFeatures;
}

/** Every labelled split through the trained head (plain and TTA), on exactly the features it was trained on. */
export async function evaluate(exp: Experiment, trained: Trained, data: RegimeData): Promise<Evaluated> {
  return exp.timed('evaluation', async () => {
    const val = await trained.headFeatures(data.val);
    const test = await trained.headFeatures(data.test);
    return { evals: await evaluateHead(trained.head, val, test, exp.splits), val, test };
  });
}

/** What the saved model's metadata says about its regime (honoured by every reader). */
export function regimeRecord(exp: Experiment, trained: Trained): Record<string, unknown> {
  const r = trained.regime;
  const base = { name: r.name, trainableBlocks: r.blocks, trainViews: r.trainViews };
  if (!isFineTuning(r)) return base;
  return {
    ...base, cuts: r.cuts, backboneLr: exp.settings.backboneLr, trunkPrecision: resolveTrunkPrecision(exp.settings.trunkPrecision),
    epochs: exp.settings.fineTuneEpochs, trainableParameters: trained.trainableParameters,
  };
}

export interface Saved {
  id: string;
  dir: string;
  /** Largest |probability difference| between the saved model (pixels) and the head on cached features. */
  maxDiff: number;
  promotion: Promotion;
}

/**
 * Assemble pixels -> resize -> backbone(s) (with fine-tuned blocks) -> head, check it against the head on cached
 * features, save it as <models>/<model id>/, record its accuracies in the run log, and make it the current model
 * (saying what it replaced; a subset run never takes the name from a full run's model).
 */
export async function save(exp: Experiment, trained: Trained, evaluated: Evaluated): Promise<Saved> {
  const p = exp.settings;
  const id = newModelId(exp.models, regimeSlug(trained.regime.name));
  const dir = path.join(exp.models, id);
  const saved = await exp.timed('assemble + check + save model', async () =>
    saveClassifier({
      head: trained.head, params: { ...p, views: trained.regime.trainViews }, splits: exp.splits, test: evaluated.test, evals: evaluated.evals,
      training: trained.training, runId: trained.runId, dir, regime: regimeRecord(exp, trained), dataset: datasetRecord(exp.data),
      backboneWeights: trained.backboneWeights ? await trained.backboneWeights() : undefined,
    }),
  );
  if (trained.runId) updateRun(trained.runId, { testAccuracy: headline(evaluated.evals.testExact), metrics: metricsOf(evaluated.evals) });
  const promotion = promote(exp.models, id, trained.runId ? `run ${trained.runId}` : 'saved', percent);
  exp.log(promotion.message);
  return { id, dir, maxDiff: saved.maxDiff, promotion };
}

/** One line describing the trained model, for summaries. */
export function modelLine(exp: Experiment, t: Trained): string {
  const p = exp.settings;
  const { lr, dropout } = t.rates;
  const run = `best epoch ${t.bestEpoch}/${t.history.length}; run ${t.runId}`;
  if (!isFineTuning(t.regime)) return `${p.backbones.join(' + ')} @ ${p.resolution}px -> head(units ${p.units}, dropout ${dropout}, lr ${lr}); ${run}`;
  return `${t.regime.name} (${cutsText(p.backbones, t.regime.cuts)}; ${t.trainableParameters.toLocaleString('en')} trainable parameters) @ ${p.resolution}px -> ` +
    `head(units ${p.units}, dropout ${dropout}, lr ${lr}, backbone lr ${p.backboneLr}, ${resolveTrunkPrecision(p.trunkPrecision)} training step); ${run}` +
    `${t.reused ? ` (weights reused from the fine-tuned cache, trained ${t.reused.savedAt})` : ''}`;
}

export interface ExperimentResult {
  exp: Experiment;
  regime: Regime;
  rates: Rates;
  model: string;
  evals: Evaluations;
  saved: Saved;
  comparison?: RegimeComparison;
}

/** The whole experiment, step by step, as `npm start` runs it (the notebooks call the same steps in cells). */
export async function runExperiment(settings: ExperimentConfig, opts: { sources?: Sources; log?: (line: string) => void; startedAt?: number } = {}): Promise<ExperimentResult> {
  const exp = await openExperiment(settings, opts);
  const regime = await chooseRegime(exp);
  const data = await cacheData(exp, regime);
  const rates = await chooseRates(exp, data);
  if (rates.sweep) exp.log(`\nsweep on ${rates.sweep.images} images (validation accuracy @ best epoch; group ${rates.sweep.group}):\n${rates.sweep.table}\n`);
  const trained = await train(exp, data, rates);
  try {
    const evaluated = await evaluate(exp, trained, data);
    const saved = await save(exp, trained, evaluated);
    let comparison: RegimeComparison | undefined;
    const p = exp.settings;
    if (p.endToEnd > 0 && !isFineTuning(regime)) {
      comparison = await exp.timed(`end-to-end comparison (${p.endToEnd} images)`, () =>
        compareRegimes(exp.data, p, { images: p.endToEnd, epochs: p.e2eEpochs, config: { lr: rates.lr, dropout: rates.dropout } }),
      );
    }
    return { exp, regime, rates, model: modelLine(exp, trained), evals: evaluated.evals, saved, comparison };
  } finally {
    trained.dispose();
  }
}

/**
 * The regime table: each regime through the same steps (cached data -> train -> evaluate) on the same splits, with
 * the same head rates (--lr/--dropout, else the trainer's defaults: a sweep per row would hide what the regime
 * itself buys). Choices stay on validation; the exact test images are evaluated once per row. Fine-tuned rows train
 * afresh (their cost is the point of the table). Every run goes to the experiment log.
 */
export async function compareTrainingRegimes(exp: Experiment, specs: RegimeSpec[], opts: { signal?: AbortSignal; progress?: boolean } = {}): Promise<RegimeRow[]> {
  const p = exp.settings;
  const rates: Rates = { lr: p.lr ?? DEFAULT_TRAIN.lr, dropout: p.dropout ?? DEFAULT_TRAIN.dropout, how: 'the same head rates for every row' };
  const table: Experiment = { ...exp, settings: { ...p, retrain: true }, timings: [], timed: async (_what, f) => f() };
  const rows: RegimeRow[] = [];
  for (const spec of specs) {
    const regime = await regimeOf(table, spec.blocks, 'regime table', spec.views);
    const t0 = Date.now();
    const data = await cacheData(table, regime, opts);
    const extractSeconds = (Date.now() - t0) / 1000;
    const t1 = Date.now();
    const trained = await train(table, data, rates, { signal: opts.signal, progress: opts.progress });
    const trainSeconds = (Date.now() - t1) / 1000;
    try {
      const { evals } = await evaluate(table, trained, data);
      const row: RegimeRow = {
        regime: regime.name, views: regime.trainViews, epochs: trained.history.length, bestEpoch: trained.bestEpoch, trainableParameters: trained.trainableParameters,
        validation: evals.validation.plain.accuracy, validationTta: evals.validation.tta?.accuracy,
        testExact: evals.testExact.plain.accuracy, testExactTta: evals.testExact.tta?.accuracy,
        extractSeconds, trainSeconds,
      };
      rows.push(row);
      exp.log(`${regime.name} (${regime.trainViews.join('+')}): validation ${percent(row.validation)}${row.validationTta !== undefined ? ` / ${percent(row.validationTta)} TTA` : ''}, ${((extractSeconds + trainSeconds) / 60).toFixed(1)} min`);
    } finally {
      trained.dispose();
    }
  }
  return rows;
}
