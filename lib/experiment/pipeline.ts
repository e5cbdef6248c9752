// The steps `npm start` and the notebooks share: the labelled splits, (concatenated, multi-view) features for a
// split, and the slow end-to-end mode (pixel-space augmentation through the frozen backbone every epoch).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { AUG_VIEW_OPTIONS, AugmentOptions, randomAugment } from '../data/augment';
import { BackboneName, loadBackbone } from '../features/backbones';
import { Cifar10, EXACT_TEST_RANGE, ImageSet, stratifiedSample } from '../data/cifar10';
import { Dataset, datasetSplits, Splits } from '../data/dataset';
import { CIFAR_SIDE, imageBytes } from '../data/image-set';
import { evaluate, Evaluation, predictFeatures, predictFeaturesTTA, SPLIT_LABELS } from '../evaluate/evaluate';
import { extractFeatures } from '../features/features';
import { assembleModel, buildHead, gitCommit, headConfigOf, headWeights, loadModel, ModelMetadata, predictPixels, saveModel, setHeadWeights } from '../model/classifier';
import { ProgressSink } from '../util/progress';
import { defaultConfig, ExperimentConfig } from '../settings/config';
import { TrainConfig } from '../train/head-trainer';
import { concatFeatures, LabeledFeatures, subsetFeatures } from '../features/labeled-features';
import { SEED_SWEEP, sweep, SweepResult } from '../train/sweep';
import { trainHead, TrainOptions, TrainResult } from '../train/training-loop';

export type { Splits, SplitLimits } from '../data/dataset';
export { makeSplits } from '../data/dataset';

export interface FeatureOptions {
  backbones: BackboneName[];
  resolution: number;
  workers?: number;
  backbonesDir?: string;
  cacheDir?: string;
  cache?: boolean;
  progress?: boolean | ProgressSink;
  /** Adds up, per backbone and view, the images computed now and those read from the cache (the run says both). */
  tally?: { computed: number; cached: number };
}

/** Features of `set` for each view, each view the column-wise concatenation of the backbones' features. */
export async function featuresFor(set: ImageSet, views: string[], opts: FeatureOptions): Promise<LabeledFeatures> {
  if (!opts.backbones.length) throw new Error('featuresFor: at least one backbone is required');
  const out: Float32Array[] = [];
  let dim = 0;
  for (const view of views) {
    const parts = [];
    for (const backbone of opts.backbones) {
      parts.push(
        await extractFeatures(set, {
          backbone,
          resolution: opts.resolution,
          view,
          workers: opts.workers,
          backbonesDir: opts.backbonesDir,
          cacheDir: opts.cacheDir,
          cache: opts.cache,
          progress: opts.progress,
        }),
      );
    }
    for (const p of parts) {
      if (opts.tally && p.stats) {
        opts.tally.computed += p.stats.computed;
        opts.tally.cached += p.stats.cached;
      }
    }
    const f = concatFeatures(parts);
    out.push(f.data);
    dim = f.dim;
  }
  return { views: out, labels: set.labels, n: set.n, dim, ...(set.classes !== undefined ? { classes: set.classes } : {}) };
}

export interface EndToEndOptions extends FeatureOptions {
  /** The seed's augmentations, applied in pixel space every epoch (seed = base seed + epoch). */
  augment: Omit<AugmentOptions, 'seed' | 'seeds'>;
  seed?: number;
}

/**
 * The seed's regime: every epoch augments the training images in pixel space and runs them through the frozen
 * backbone(s) again (no cache), then trains the head one epoch on those features. Slow by design — it exists to
 * compare against training on cached views (accuracy and time) on a small subset. Like trainHead, it logs the run
 * only with `saveRun: true`.
 */
export async function trainEndToEnd(
  train: ImageSet,
  val: LabeledFeatures,
  config: Partial<TrainConfig>,
  opts: EndToEndOptions,
  trainOpts: TrainOptions = {},
): Promise<TrainResult & { extractSeconds: number }> {
  let extractSeconds = 0;
  const dim = val.dim;
  const placeholder: LabeledFeatures = { views: [new Float32Array(train.n * dim)], labels: train.labels, n: train.n, dim };
  const res = await trainHead(placeholder, val, config, {
    ...trainOpts,
    label: trainOpts.label ?? 'end-to-end',
    run: { kind: 'end-to-end', ...trainOpts.run, data: { augment: opts.augment, backbones: opts.backbones, resolution: opts.resolution, ...trainOpts.run?.data } },
    epochData: async (epoch) => {
      const t0 = Date.now();
      const images = randomAugment(train.images, train.n, { ...opts.augment, seed: (opts.seed ?? 1) * 1000 + epoch });
      const f = await featuresFor({ ...train, images }, ['plain'], { ...opts, cache: false, progress: false });
      extractSeconds += (Date.now() - t0) / 1000;
      return f;
    },
  });
  return { ...res, extractSeconds };
}


// ---------------------------------------------------------------------------------------------------------------
// The experiment itself, step by step. `npm start` and notebooks 02-06 share these defaults and steps, so the
// notebooks run with full parameters reproduce the `npm start` model.

/**
 * The experiment's defaults (lib/settings/config.ts), typed: the configuration measured in the README. Notebooks pass them
 * to params() (any overridden by its env var) and `npm start` resolves its flags onto the same keys.
 */
export const EXPERIMENT: Readonly<ExperimentConfig> = Object.freeze(defaultConfig());
export type ExperimentParams = ExperimentConfig;

/** The feature options every extraction of one experiment uses. */
export function featureOptions(p: Pick<ExperimentParams, 'backbones' | 'resolution'> & { workers?: number | null }): FeatureOptions {
  return { backbones: [...p.backbones], resolution: p.resolution, workers: p.workers ?? undefined };
}

/** The splits of one experiment (validation carved from the training set with the fixed split seed). */
export function experimentSplits(data: Dataset | Cifar10, p: Pick<ExperimentParams, 'trainLimit' | 'valLimit' | 'testLimit' | 'splitSeed'>): Splits {
  return datasetSplits(data, { trainLimit: p.trainLimit, valLimit: p.valLimit, testLimit: p.testLimit, seed: p.splitSeed });
}

/** Views to extract for evaluation: plain, plus flip when TTA is on. */
export const evalViews = (tta: boolean): string[] => (tta ? ['plain', 'flip'] : ['plain']);

export interface SplitEvaluation {
  label: string;
  plain: Evaluation;
  /** With test-time augmentation (plain + flip averaged), when the features have a flip view. */
  tta?: Evaluation;
}

/** Class probabilities for every image of a split: plain, and with test-time augmentation when measured. */
export interface SplitProbabilities {
  plain: Float32Array;
  /** Plain and flipped predictions averaged. */
  tta?: Float32Array;
}

/** The evaluations of one model, by split; `all` in table order (validation, test 0-999, the rest of test). */
export interface Evaluations {
  validation: SplitEvaluation;
  testExact: SplitEvaluation;
  /** Test images beyond 0-999, when the run reaches past them. */
  testFull?: SplitEvaluation;
  all: SplitEvaluation[];
}

/**
 * A model's probabilities on every labelled split: validation, test 0-999 (exact) and the full test set (partly
 * JPEG-rebuilt), each plain and, when measured, with TTA. `test` covers splits.testFull, whose first rows are the
 * exact test images. Both doors and both ways of computing probabilities (a head on cached features, the saved
 * model on pixels) end here, so their tables are the same function of the probabilities.
 */
export function evaluateSplits(probs: { val: SplitProbabilities; test: SplitProbabilities }, splits: Splits): Evaluations {
  const k = splits.classNames.length;
  const one = (label: string, p: SplitProbabilities, set: ImageSet, rows: number): SplitEvaluation => {
    const opts = { split: label, classNames: splits.classNames, indices: set.indices, files: splits.files };
    return {
      label,
      plain: evaluate(p.plain.subarray(0, rows * k), set.labels, opts),
      tta: p.tta && evaluate(p.tta.subarray(0, rows * k), set.labels, { ...opts, split: `${label} + TTA` }),
    };
  };
  const validation = one(SPLIT_LABELS.validation, probs.val, splits.val, splits.val.n);
  const testExact = one(splits.testLabel ?? SPLIT_LABELS.exactTest, probs.test, splits.testExact, splits.testExact.n);
  // Beyond the exact images only when the test set reaches past them (a smoke run may stop at image 999).
  let testFull: SplitEvaluation | undefined;
  if (splits.testFull.n > splits.testExact.n) {
    const n = splits.testFull.n;
    const full = n === 10000 ? SPLIT_LABELS.fullTest : `test 0-${n - 1} (images ${EXACT_TEST_RANGE[1]}-${n - 1} JPEG-rebuilt)`;
    testFull = one(full, probs.test, splits.testFull, n);
  }
  return { validation, testExact, testFull, all: [validation, testExact, ...(testFull ? [testFull] : [])] };
}

/** A head's probabilities on cached features: the plain view, and every view averaged (TTA) when there are several. */
export async function headProbabilities(head: tf.LayersModel, f: LabeledFeatures): Promise<SplitProbabilities> {
  return {
    plain: await predictFeatures(head, f.views[0], f.n, f.dim),
    tta: f.views.length > 1 ? await predictFeaturesTTA(head, f.views, f.n, f.dim) : undefined,
  };
}

/** The head on every labelled split (see evaluateSplits); `test` must be the features of splits.testFull. */
export async function evaluateHead(head: tf.LayersModel, val: LabeledFeatures, test: LabeledFeatures, splits: Splits): Promise<Evaluations> {
  return evaluateSplits({ val: await headProbabilities(head, val), test: await headProbabilities(head, test) }, splits);
}

/** The headline accuracy of a split: with TTA when measured, else plain. */
export const headline = (e: SplitEvaluation): number => (e.tta ?? e.plain).accuracy;

/** Accuracies keyed by split label (plain, and "+ TTA"), for metadata and the run log. */
export function metricsOf(evals: Evaluations): Record<string, number> {
  const m: Record<string, number> = {};
  for (const e of evals.all) {
    m[e.label] = e.plain.accuracy;
    if (e.tta) m[`${e.label} + TTA`] = e.tta.accuracy;
  }
  return m;
}

/** Largest |probability difference| allowed between the saved model (pixels) and the head on cached features. */
export const ASSEMBLE_TOLERANCE = 1e-3;

/**
 * Assemble pixels -> resize -> frozen backbone(s) -> head and save it with its metadata in its own folder,
 * then load the saved files back the way `npm run predict` does and check they agree with head(cached features) on
 * the first exact test images: the accuracies in the metadata are then the saved model's. The files are staged and
 * moved into place only after the check, so a failed check leaves the previous model as it was.
 */
export async function saveClassifier(opts: {
  head: tf.LayersModel;
  params: Pick<ExperimentParams, 'backbones' | 'resolution' | 'views' | 'tta'>;
  splits: Splits;
  test: LabeledFeatures;
  evals: Evaluations;
  training: Record<string, unknown>;
  runId?: string;
  /** The model's own folder (lib/model/registry.ts: <models>/<model id>). */
  dir: string;
  /** Fine-tuned weights of backbone layers (by backbone): the saved model carries them in place of the pretrained. */
  backboneWeights?: Partial<Record<BackboneName, Map<string, Float32Array>>>;
  /** What the metadata records about the regime (fine-tuning: blocks, cuts, rates). */
  regime?: Record<string, unknown>;
  /** What it was trained on (absent: CIFAR-10). */
  dataset?: ModelMetadata['dataset'];
}): Promise<{ dir: string; maxDiff: number }> {
  const backbones = [...opts.params.backbones];
  const target = opts.dir;
  // Staged inside the target folder (the one checked writable up front), moved up file by file after the check.
  const staging = path.join(target, `.staging-${process.pid}-${Date.now()}`);
  const tuned = opts.backboneWeights;
  const loaded = tuned ? await Promise.all(backbones.map((b) => loadBackbone(b, { replace: tuned[b] }))) : undefined;
  const imageSize = opts.splits.testExact.size ?? CIFAR_SIDE;
  const model = await assembleModel({ backbones, resolution: opts.params.resolution, head: opts.head, loaded, imageSize });
  const meta: ModelMetadata = {
    backbones,
    resolution: opts.params.resolution,
    classNames: opts.splits.classNames,
    ...(imageSize !== CIFAR_SIDE ? { imageSize } : {}),
    dataset: opts.dataset ?? { kind: 'cifar10', name: 'CIFAR-10' },
    head: headConfigOf(opts.head),
    metrics: metricsOf(opts.evals),
    date: new Date().toISOString(),
    gitCommit: gitCommit(),
    runId: opts.runId,
    training: { ...opts.training, trainViews: [...opts.params.views], tta: opts.params.tta },
    regime: opts.regime ?? { name: 'frozen' },
    // The resolved settings of the run that made this model, when the caller has them all (npm start, notebook 05).
    ...('trainLimit' in opts.params ? { config: { ...(opts.params as ExperimentParams) } } : {}),
    note: 'Accuracies marked "+ TTA" average plain and flipped predictions; the saved model predicts the plain view.',
  };
  try {
    await saveModel(model, meta, staging);
  } catch (err) {
    // The folder went away or became unwritable after the up-front check: the training must not be lost with it.
    const rescued = path.join(os.tmpdir(), `cifar10-model-rescued-${Date.now()}`);
    await saveModel(model, meta, rescued);
    fs.rmSync(staging, { recursive: true, force: true });
    throw new Error(`${target}: could not save the model (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); it was saved to ${rescued} instead`);
  } finally {
    model.dispose();
  }
  try {
    const { model: saved } = await loadModel(staging);
    const k = Math.min(16, opts.splits.testExact.n);
    const viaModel = await predictPixels(saved, opts.splits.testExact.images.subarray(0, k * imageBytes(imageSize)), k);
    saved.dispose();
    const viaHead = await predictFeatures(opts.head, opts.test.views[0].subarray(0, k * opts.test.dim), k, opts.test.dim);
    let maxDiff = 0;
    for (let i = 0; i < viaModel.length; i++) maxDiff = Math.max(maxDiff, Math.abs(viaModel[i] - viaHead[i]));
    if (!(maxDiff <= ASSEMBLE_TOLERANCE)) {
      throw new Error(
        `the saved model disagrees with the head on cached features (max |dp| = ${maxDiff.toExponential(2)} > ${ASSEMBLE_TOLERANCE} on ${k} test images): ` +
          'the features were not computed from these backbone weights; not saved',
      );
    }
    swapInto(staging, target);
    return { dir: target, maxDiff };
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}

/** Move the staged files into `target`, each by an atomic rename; model.json last, so a reader never pairs a new
 * model.json with old weights. */
function swapInto(staging: string, target: string): void {
  const files = fs.readdirSync(staging).sort((a, b) => Number(a === 'model.json') - Number(b === 'model.json'));
  for (const f of files) fs.renameSync(path.join(staging, f), path.join(target, f));
}

/** The saved classifier, its metadata, and its head as a separate model (to evaluate on cached features). */
export async function loadClassifier(dir: string): Promise<{ model: tf.LayersModel; metadata: ModelMetadata; head: tf.LayersModel }> {
  const { model, metadata } = await loadModel(dir);
  const head = buildHead(metadata.head);
  setHeadWeights(head, headWeights(model));
  return { model, metadata, head };
}

export interface RegimeComparison {
  images: number;
  epochs: number;
  rows: { regime: string; valAccuracy: number; seconds: number }[];
}

/**
 * The two augmentation regimes on the same small subset and the same head settings: training on cached views
 * (features computed once; the time includes computing them when the cache is cold) versus the seed's end-to-end
 * regime (fresh pixel-space augmentation through the frozen backbones every epoch). Accuracy and wall time. Both
 * runs go to the experiment log.
 */
export async function compareRegimes(
  data: Dataset | Cifar10,
  p: Pick<ExperimentParams, 'backbones' | 'resolution' | 'views' | 'splitSeed' | 'seed'>,
  opts: { images: number; valImages?: number; epochs: number; config?: Partial<TrainConfig> },
): Promise<RegimeComparison> {
  const small = datasetSplits(data, { trainLimit: opts.images, valLimit: opts.valImages ?? 1000, seed: p.splitSeed });
  const fo = featureOptions(p);
  const cfg: Partial<TrainConfig> = { ...opts.config, epochs: opts.epochs, patience: 0, seed: p.seed };
  const val = await featuresFor(small.val, ['plain'], fo);
  const t0 = Date.now();
  const train = await featuresFor(small.train, [...p.views], fo);
  const cached = await trainHead(train, val, cfg, { label: 'cached views', saveRun: true, run: { kind: 'train', slug: 'compare-cached', data: { compare: 'cached' } } });
  const cachedSeconds = (Date.now() - t0) / 1000;
  const e2e = await trainEndToEnd(small.train, val, cfg, { ...fo, augment: AUG_VIEW_OPTIONS, seed: p.seed }, { saveRun: true, run: { slug: 'compare-e2e' } });
  cached.head.dispose();
  e2e.head.dispose();
  return {
    images: small.train.n,
    epochs: opts.epochs,
    rows: [
      { regime: `cached views (${p.views.join(',')})`, valAccuracy: cached.bestValAcc, seconds: cachedSeconds },
      { regime: 'end-to-end (augment + backbones every epoch)', valAccuracy: e2e.bestValAcc, seconds: e2e.seconds },
    ],
  };
}

/** What the run log records about the data of every run of an experiment. */
export function runData(p: ExperimentParams): Record<string, unknown> {
  // The whole resolved configuration, typed as lib/settings/config.ts has it (arrays, booleans, numbers, null = decided later).
  return { backbones: p.backbones, resolution: p.resolution, trainViews: p.views, tta: p.tta, config: { ...p } };
}

/** Head settings shared by the sweep and the final training. */
function headBase(p: ExperimentParams): Partial<TrainConfig> {
  return { units: p.units, batchSize: p.batchSize, seed: p.seed };
}

/**
 * The seed's sweep — learning rates 0.0005-0.0015 x dropout 0.25/0.35 — in one call, every run in the log under one
 * group (unless `saveRun: false`). Ranking eight settings needs neither all the data nor the full schedule, so it
 * runs on a stratified subset (`sweepImages`) for `sweepEpochs`; the final training uses everything.
 */
export async function sweepHeads(train: LabeledFeatures, val: LabeledFeatures, p: ExperimentParams, opts: TrainOptions = {}): Promise<SweepResult & { images: number }> {
  const sub = p.sweepImages && p.sweepImages < train.n
    ? subsetFeatures(train, stratifiedSample(train.labels, Array.from({ length: train.n }, (_, i) => i), p.sweepImages, p.seed))
    : train;
  const s = await sweep(sub, val, SEED_SWEEP, { ...headBase(p), epochs: p.sweepEpochs }, { ...opts, saveRun: opts.saveRun ?? true, run: { ...opts.run, data: { ...runData(p), sweepTrain: sub.n } } });
  return { ...s, images: sub.n };
}

/** The final training on all training features with the chosen learning rate and dropout; logged unless `saveRun: false`. */
export function trainFinal(train: LabeledFeatures, val: LabeledFeatures, p: ExperimentParams, lr: number, dropout: number, opts: TrainOptions = {}): Promise<TrainResult> {
  return trainHead(train, val, { ...headBase(p), epochs: p.epochs, lr, dropout }, {
    label: `final lr=${lr} drop=${dropout}`,
    ...opts,
    saveRun: opts.saveRun ?? true,
    run: { kind: 'train', slug: 'final', ...opts.run, data: runData(p) },
  });
}
