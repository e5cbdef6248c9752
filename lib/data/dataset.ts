// The experiment's dataset is one setting: `cifar10` (the default) or a folder of your own images. Both end as the
// same Splits — train, validation, test — so every step after this one (features, regimes, training, evaluation,
// the saved model, notebooks 02-06) runs unchanged on either.
import { Cifar10, EXACT_TEST_RANGE, loadCifar10, splitTrainVal, stratifiedSample, subset, testRange } from './cifar10';
import { FolderDataset, loadFolderDataset } from './folder-dataset';
import { CIFAR_SIDE, ImageSet, sideOfSet } from './image-set';
import type { ExperimentConfig } from '../settings/config';
import { dataDir, userPath } from '../settings/paths';
import type { ProgressSink } from '../util/progress';
import * as fs from 'fs';

export interface Cifar10Dataset extends Cifar10 {
  kind: 'cifar10';
  name: 'CIFAR-10';
  size: typeof CIFAR_SIDE;
}

export type Dataset = Cifar10Dataset | FolderDataset;

/** The labelled splits of one experiment. */
export interface Splits {
  classNames: string[];
  /** Training images minus the validation split. */
  train: ImageSet;
  /** Held out of the TRAINING images (stratified, seeded): model selection never sees test images. */
  val: ImageSet;
  /** CIFAR-10: test images 0-999, exact in the shared copy, the headline test figure. A folder: its test split. */
  testExact: ImageSet;
  /** CIFAR-10: the whole test set (1000-9999 JPEG-rebuilt in the shared copy) or its first testLimit images. A folder: its test split. */
  testFull: ImageSet;
  /** What the test rows are called in tables and metadata (absent: CIFAR-10's "test 0-999 (exact)"). */
  testLabel?: string;
  /** A folder's files (relative paths) by image index: tables name images by file. */
  files?: readonly string[];
}

export interface SplitLimits {
  /** Stratified caps for smoke runs (0/undefined = all). */
  trainLimit?: number;
  valLimit?: number;
  /** CIFAR-10: the first N test images; a folder: a stratified N of its test split (0/undefined = all). */
  testLimit?: number;
  /** CIFAR-10's validation size (default 5,000). */
  valSize?: number;
  seed?: number;
}

/** The settings that say which dataset and how it is read. */
export type DatasetSettings = Pick<ExperimentConfig, 'dataset' | 'fit' | 'valFraction' | 'testFraction' | 'splitSeed' | 'resolution'>;

export const isCifar10 = (dataset: string): boolean => dataset.toLowerCase() === 'cifar10';

/**
 * Load the dataset the settings name. A folder's images are resized once to the resolution (so the backbone's own
 * resize is the identity); CIFAR-10 stays 32x32. Throws one line for a dataset setting that is no folder.
 */
export async function loadDataset(s: DatasetSettings, opts: { log?: (line: string) => void; progress?: boolean | ProgressSink; where?: string } = {}): Promise<Dataset> {
  if (isCifar10(s.dataset)) {
    const c = await loadCifar10();
    return { ...c, kind: 'cifar10', name: 'CIFAR-10', size: CIFAR_SIDE };
  }
  const root = userPath(s.dataset);
  const where = opts.where ?? 'DATASET';
  let st: fs.Stats;
  try {
    st = fs.statSync(root);
  } catch {
    throw new Error(`${where} ${s.dataset}: no such folder (expected cifar10, or a folder with one subfolder of images per class)`);
  }
  if (!st.isDirectory()) throw new Error(`${where} ${s.dataset}: not a folder (expected cifar10, or a folder with one subfolder of images per class)`);
  return loadFolderDataset(root, {
    size: s.resolution, fit: s.fit, seed: s.splitSeed, valFraction: s.valFraction, testFraction: s.testFraction,
    cacheDir: dataDir('cache'), log: opts.log, progress: opts.progress,
  });
}

/** CIFAR-10's splits: validation carved from the training set, test 0-999 and the full test set. */
export function makeSplits(data: Cifar10, limits: SplitLimits = {}): Splits {
  const { train, val } = splitTrainVal(data.train, { valSize: limits.valSize, seed: limits.seed, trainLimit: limits.trainLimit, valLimit: limits.valLimit });
  const nTest = limits.testLimit ? Math.min(limits.testLimit, data.test.n) : data.test.n;
  const testFull = nTest === data.test.n ? data.test : testRange(data.test, 0, nTest);
  const testExact = testRange(data.test, EXACT_TEST_RANGE[0], Math.min(EXACT_TEST_RANGE[1], nTest));
  return { classNames: data.classNames, train, val, testExact, testFull };
}

/** A folder's planned splits, each capped by its limit (stratified, seeded) for smoke runs. */
export function folderSplits(ds: FolderDataset, limits: SplitLimits = {}): Splits {
  const seed = limits.seed ?? 42;
  const pick = (positions: number[], limit: number | undefined, offset: number): number[] =>
    limit && limit < positions.length ? stratifiedSample(ds.all.labels, positions, limit, seed + offset) : positions;
  const train = subset(ds.all, pick(ds.plan.train, limits.trainLimit, 1));
  const val = subset(ds.all, pick(ds.plan.val, limits.valLimit, 2));
  const test = subset(ds.all, pick(ds.plan.test, limits.testLimit, 3));
  return { classNames: ds.classNames, train, val, testExact: test, testFull: test, testLabel: 'test', files: ds.files };
}

/** The splits of a dataset under the experiment's limits and split seed. */
export function datasetSplits(ds: Dataset | Cifar10, limits: SplitLimits = {}): Splits {
  return 'kind' in ds && ds.kind === 'folder' ? folderSplits(ds, limits) : makeSplits(ds, limits);
}

/** "train 38,250, validation 6,750 (from the training set), test 10,000 (exact 0-999: 1,000)" and the folder's equivalent. */
export function describeSplits(ds: Dataset, splits: Splits): string {
  if (ds.kind === 'cifar10') {
    return `CIFAR-10: train ${splits.train.n}, validation ${splits.val.n} (from the training set), test ${splits.testFull.n} (exact 0-999: ${splits.testExact.n})`;
  }
  return `${ds.name} (${ds.classNames.length} classes, ${sideOfSet(splits.train)}x${sideOfSet(splits.train)} ${ds.fit}): train ${splits.train.n}, validation ${splits.val.n}${ds.plan.carved.val ? ' (held out of the training images)' : ' (val/)'}, test ${splits.testFull.n}${ds.plan.carved.test ? ' (held out)' : ' (test/)'}`;
}

/**
 * The images of a split at `indices` (an evaluation's image indices, e.g. its top losses): CIFAR-10's indices point
 * into its training or test set, a folder's into its one image list.
 */
export function imagesAt(ds: Dataset, split: 'train' | 'test', indices: ArrayLike<number>): ImageSet {
  return subset(ds.kind === 'folder' ? ds.all : split === 'train' ? ds.train : ds.test, indices);
}

/** One line: what was loaded, from where. */
export function describeDataset(ds: Dataset): string {
  if (ds.kind === 'cifar10') return `CIFAR-10: ${ds.train.n} training + ${ds.test.n} test images, 32x32, ${ds.classNames.length} classes, from ${ds.dir}`;
  const bad = ds.failed.length + ds.scan.rejected.length;
  return `${ds.name}: ${ds.all.n} images of ${ds.classNames.length} classes at ${ds.size}x${ds.size} (${ds.fit}), from ${ds.root}` +
    `${bad ? `; ${bad} file${bad === 1 ? '' : 's'} not used (listed above)` : ''}`;
}

/** How many files of each format a folder holds (by their bytes), largest first: "JPEG 1,210, PNG 611, ...". */
export function formatCounts(ds: FolderDataset): [string, number][] {
  const counts = new Map<string, number>();
  for (const f of ds.scan.files) counts.set(f.format.toUpperCase(), (counts.get(f.format.toUpperCase()) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1]);
}

/** What a saved model records about its dataset. */
export function datasetRecord(ds: Dataset): { kind: 'cifar10' | 'folder'; name: string; fit?: 'cover' | 'contain' } {
  return ds.kind === 'cifar10' ? { kind: 'cifar10', name: 'CIFAR-10' } : { kind: 'folder', name: ds.name, fit: ds.fit };
}
