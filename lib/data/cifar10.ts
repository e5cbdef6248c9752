// CIFAR-10 from the official binary layout (cifar-10-batches-bin/), parsed in one pass over each file.
//
// Each .bin holds 10,000 records of 3,073 bytes: 1 label byte (0-9), then 1,024 red, 1,024 green and
// 1,024 blue bytes, each plane 32x32 row-major. We keep images as one NHWC uint8 array, the layout tfjs
// wants, so no per-pixel tensor work is needed anywhere.
import * as fs from 'fs';
import * as path from 'path';
import { runtimeContext } from '../settings/context';
import { dataDir, userPath } from '../settings/paths';
import { rng, shuffle } from '../util/random';
import { downloadAndExtract } from './download';
import { classCountOf, ImageSet, imageBytes, sideOfSet } from './image-set';

export const IMAGE_SIZE = 32;
export const CHANNELS = 3;
export const PIXELS_PER_IMAGE = IMAGE_SIZE * IMAGE_SIZE * CHANNELS; // 3,072
export const RECORD_BYTES = 1 + PIXELS_PER_IMAGE; // 3,073
export const RECORDS_PER_BATCH = 10_000;
export const NUM_CLASSES = 10;
export const TRAIN_FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'];
export const TEST_FILE = 'test_batch.bin';
export const META_FILE = 'batches.meta.txt';
export const FOLDER_NAME = 'cifar-10-batches-bin';
export const ARCHIVE_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const ARCHIVE_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';

/** In the shared offline copy only test images 0-999 are exact; 1000-9999 were rebuilt from JPEG (see PROVENANCE.md). */
export const EXACT_TEST_RANGE: readonly [number, number] = [0, 1000];

export type { ImageSet } from './image-set';

export interface Cifar10 {
  train: ImageSet;
  test: ImageSet;
  classNames: string[];
  /** The folder the batches were read from. */
  dir: string;
}

export interface LoadOptions {
  /** Folder holding the .bin files; else env CIFAR10_DIR, else data/cifar-10-batches-bin, else download. */
  dir?: string;
  /** Allow downloading the official archive when no local copy is found (default true). */
  download?: boolean;
  /** Override the archive URL/checksum (tests, mirrors). */
  url?: string;
  md5?: string;
}

/** Parse one batch file's bytes into NHWC images + labels. `file` names the source in errors. */
export function parseBatch(buf: Uint8Array, file: string, expectedRecords?: number): { images: Uint8Array; labels: Uint8Array; n: number } {
  if (buf.length === 0 || buf.length % RECORD_BYTES !== 0) {
    throw new Error(
      `${file}: size ${buf.length} bytes is not a positive multiple of ${RECORD_BYTES} (1 label + 3,072 pixel bytes per record): truncated or not a CIFAR-10 batch`,
    );
  }
  const n = buf.length / RECORD_BYTES;
  if (expectedRecords !== undefined && n !== expectedRecords) {
    throw new Error(`${file}: holds ${n} records, expected ${expectedRecords}`);
  }
  const images = new Uint8Array(n * PIXELS_PER_IMAGE);
  const labels = new Uint8Array(n);
  const plane = IMAGE_SIZE * IMAGE_SIZE;
  for (let r = 0; r < n; r++) {
    const src = r * RECORD_BYTES;
    const label = buf[src];
    if (label >= NUM_CLASSES) {
      throw new Error(`${file}: record ${r} (byte offset ${src}) has label ${label}, expected 0-${NUM_CLASSES - 1}`);
    }
    labels[r] = label;
    const dst = r * PIXELS_PER_IMAGE;
    const red = src + 1;
    const green = red + plane;
    const blue = green + plane;
    for (let p = 0, o = dst; p < plane; p++, o += 3) {
      images[o] = buf[red + p];
      images[o + 1] = buf[green + p];
      images[o + 2] = buf[blue + p];
    }
  }
  return { images, labels, n };
}

function readBatch(dir: string, name: string, expectedRecords = RECORDS_PER_BATCH) {
  const file = path.join(dir, name);
  if (!fs.existsSync(file)) {
    throw new Error(`${file}: missing batch file; a CIFAR-10 folder holds ${[...TRAIN_FILES, TEST_FILE, META_FILE].join(', ')}`);
  }
  return parseBatch(fs.readFileSync(file), file, expectedRecords);
}

function concat(parts: { images: Uint8Array; labels: Uint8Array; n: number }[]): ImageSet {
  const n = parts.reduce((s, p) => s + p.n, 0);
  const images = new Uint8Array(n * PIXELS_PER_IMAGE);
  const labels = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    images.set(p.images, at * PIXELS_PER_IMAGE);
    labels.set(p.labels, at);
    at += p.n;
  }
  return { images, labels, n, indices: Int32Array.from({ length: n }, (_, i) => i) };
}

/** Read `batches.meta.txt`: ten class names, one a line. */
export function readClassNames(dir: string): string[] {
  const file = path.join(dir, META_FILE);
  if (!fs.existsSync(file)) throw new Error(`${file}: missing; expected ${NUM_CLASSES} class names, one a line`);
  const names = fs
    .readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== '');
  if (names.length !== NUM_CLASSES) throw new Error(`${file}: has ${names.length} class names, expected ${NUM_CLASSES}`);
  return names;
}

/** Test images 0..n-1 with their labels, read from the head of test_batch.bin (no need to load the rest). */
export function readFirstTestImages(dir: string, n: number): { images: Uint8Array; labels: Uint8Array; n: number } {
  const file = path.join(dir, TEST_FILE);
  const buf = Buffer.alloc(n * RECORD_BYTES);
  const fd = fs.openSync(file, 'r');
  try {
    const got = fs.readSync(fd, buf, 0, buf.length, 0);
    if (got !== buf.length) throw new Error(`${file}: holds ${Math.floor(got / RECORD_BYTES)} records, expected at least ${n}`);
  } finally {
    fs.closeSync(fd);
  }
  return parseBatch(buf, file);
}

/** Read a cifar-10-batches-bin folder. `recordsPerBatch` is only changed by tests on tiny files. */
export function readCifar10Dir(dir: string, recordsPerBatch: number = RECORDS_PER_BATCH): Cifar10 {
  const classNames = readClassNames(dir);
  const train = concat(TRAIN_FILES.map((f) => readBatch(dir, f, recordsPerBatch)));
  const test = concat([readBatch(dir, TEST_FILE, recordsPerBatch)]);
  return { train, test, classNames, dir };
}

function looksLikeCifarDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, TEST_FILE)) || fs.existsSync(path.join(dir, META_FILE));
}

/** Where the data is: option, CIFAR10_DIR (the runtime context's), data/cifar-10-batches-bin; undefined when none exists. */
export function locateCifar10(opts: LoadOptions = {}): string | undefined {
  if (opts.dir) return userPath(opts.dir); // explicit: errors about its contents name it
  const fromContext = runtimeContext().cifar10Dir;
  if (fromContext) return fromContext;
  const local = dataDir(FOLDER_NAME);
  return looksLikeCifarDir(local) ? local : undefined;
}

/**
 * Load CIFAR-10: 50,000 training and 10,000 test images as NHWC uint8, labels and class names.
 * Downloads and verifies the official archive into data/ when no local copy is found.
 */
export async function loadCifar10(opts: LoadOptions = {}): Promise<Cifar10> {
  let dir = locateCifar10(opts);
  if (dir && fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) {
    throw new Error(`${opts.dir ? 'dir option' : 'CIFAR10_DIR'} ${dir}: not a folder (expected the cifar-10-batches-bin folder holding data_batch_1.bin … test_batch.bin)`);
  }
  if (!dir) {
    if (opts.download === false) throw new Error(noDataMessage('downloading is disabled'));
    const target = dataDir(FOLDER_NAME);
    try {
      await downloadAndExtract({
        url: opts.url ?? ARCHIVE_URL,
        md5: opts.md5 ?? ARCHIVE_MD5,
        archive: dataDir('cifar-10-binary.tar.gz'),
        target,
        folderInArchive: FOLDER_NAME,
        label: 'CIFAR-10',
      });
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      if (/checksum|outside the target|archive/i.test(why)) throw err;
      throw new Error(noDataMessage(why));
    }
    dir = target;
  }
  return readCifar10Dir(dir);
}

function noDataMessage(why: string): string {
  return (
    `CIFAR-10 not found and could not be downloaded (${why}). Download ${ARCHIVE_URL} (md5 ${ARCHIVE_MD5}) ` +
    `and extract it into data/, or set CIFAR10_DIR to a folder holding ${TRAIN_FILES.join(', ')}, ${TEST_FILE} and ${META_FILE}`
  );
}

/** The images at positions `idx` of `set` (indices stay traceable to the source split). */
export function subset(set: ImageSet, idx: ArrayLike<number>): ImageSet {
  const n = idx.length;
  const per = imageBytes(sideOfSet(set));
  const images = new Uint8Array(n * per);
  const labels = new Uint8Array(n);
  const indices = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const j = idx[i];
    if (!(j >= 0 && j < set.n)) throw new Error(`subset: position ${j} is outside 0..${set.n - 1}`);
    images.set(set.images.subarray(j * per, (j + 1) * per), i * per);
    labels[i] = set.labels[j];
    indices[i] = set.indices[j];
  }
  return { images, labels, n, indices, ...(set.size !== undefined ? { size: set.size } : {}), ...(set.classes !== undefined ? { classes: set.classes } : {}) };
}

/**
 * Choose `count` of `positions`, the same share of every class (largest remainder), seeded.
 * Returned positions are sorted, so the result keeps the source order.
 */
export function stratifiedSample(labels: Uint8Array, positions: ArrayLike<number>, count: number, seed: number): number[] {
  if (!Number.isInteger(count) || count < 0) throw new Error(`sample size ${count} must be a whole number >= 0`);
  if (count > positions.length) throw new Error(`sample size ${count} is larger than the ${positions.length} images available`);
  const byClass: number[][] = Array.from({ length: classCountOf(labels) }, () => []);
  for (let i = 0; i < positions.length; i++) byClass[labels[positions[i]]].push(positions[i]);
  const total = positions.length;
  const exact = byClass.map((c) => (c.length * count) / (total || 1));
  const take = exact.map(Math.floor);
  let left = count - take.reduce((a, b) => a + b, 0);
  const order = exact.map((e, c) => [e - Math.floor(e), c] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  for (const [, c] of order) {
    if (left === 0) break;
    if (take[c] < byClass[c].length) {
      take[c]++;
      left--;
    }
  }
  const random = rng(seed);
  const chosen: number[] = [];
  byClass.forEach((members, c) => chosen.push(...shuffle(members.slice(), random).slice(0, take[c])));
  return chosen.sort((a, b) => a - b);
}

export interface SplitOptions {
  /** Images held out of the training set for validation (default 5,000: 500 per class). */
  valSize?: number;
  seed?: number;
  /** Stratified caps for quick runs (0 or undefined = everything). */
  trainLimit?: number;
  valLimit?: number;
}

/**
 * Carve a stratified, seeded validation split out of the training set, so model selection never
 * looks at the test set. Limits take stratified subsets of each side for quick runs.
 */
export function splitTrainVal(train: ImageSet, opts: SplitOptions = {}): { train: ImageSet; val: ImageSet } {
  const seed = opts.seed ?? 42;
  const valSize = opts.valSize ?? 5000;
  const all = Array.from({ length: train.n }, (_, i) => i);
  const valPos = stratifiedSample(train.labels, all, valSize, seed);
  const inVal = new Uint8Array(train.n);
  for (const p of valPos) inVal[p] = 1;
  let trainPos = all.filter((p) => !inVal[p]);
  let valSel = valPos;
  if (opts.trainLimit && opts.trainLimit < trainPos.length) trainPos = stratifiedSample(train.labels, trainPos, opts.trainLimit, seed + 1);
  if (opts.valLimit && opts.valLimit < valSel.length) valSel = stratifiedSample(train.labels, valSel, opts.valLimit, seed + 2);
  return { train: subset(train, trainPos), val: subset(train, valSel) };
}

/** Test images [start, end) — e.g. EXACT_TEST_RANGE for the exact part of the shared copy. */
export function testRange(test: ImageSet, start: number, end: number): ImageSet {
  if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= test.n)) {
    throw new Error(`test range [${start}, ${end}) must lie within [0, ${test.n}) with start < end`);
  }
  return subset(
    test,
    Array.from({ length: end - start }, (_, i) => start + i),
  );
}

/** Count of images per class. */
export function classCounts(set: ImageSet, classes = classCountOf(set.labels)): number[] {
  const counts = new Array(classes).fill(0);
  for (let i = 0; i < set.n; i++) counts[set.labels[i]]++;
  return counts;
}

/** Positions of the first `k` images of each class, class by class (for sample grids). */
export function firstPerClass(set: ImageSet, k: number, classes = classCountOf(set.labels)): number[] {
  const byClass: number[][] = Array.from({ length: classes }, () => []);
  for (let i = 0; i < set.n && byClass.some((c) => c.length < k); i++) {
    if (byClass[set.labels[i]].length < k) byClass[set.labels[i]].push(i);
  }
  return byClass.flat();
}
