// A folder of your own images as the experiment's dataset: scanned (lib/data/image-folder.ts), each file decoded and
// resized ONCE to the backbone's input and kept in a content-addressed pixel cache, split stratified and seeded, with
// everything a user should know said in the log — what was skipped, which files could not be read and why, exact
// duplicates across splits, the class counts.
//
// Pixel cache: <cache>/pixels/<fit>-<size>/<aa>/<sha256 of the file's bytes>.rgb — a 16-byte header (magic, source
// width and height, side) and size*size*3 bytes. A file is found by what it holds, not its name: renaming or moving
// it costs nothing, and an edited file is decoded again. Only the images in flight are ever held at their decoded
// size; what stays in memory is the resized set (size*size*3 bytes per image: 77 KB at 160 px).
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { writeFileAtomic } from '../util/atomic';
import { bestEffortWrite } from '../util/writable';
import { progress as makeProgress, ProgressSink, silentProgress } from '../util/progress';
import {
  decodeImageBuffer, describeDuplicates, DuplicateGroup, findDuplicates, Fit, FolderScan, formatSplitCounts, ImageFile, pixelHash, planSplits,
  scanImageFolder, SplitName, SplitPlan,
} from './image-folder';
import { imageBytes, ImageSet } from './image-set';

export interface FolderDatasetOptions {
  /** Side of the square images: the backbone's input resolution. */
  size: number;
  fit: Fit;
  /** Seed of the held-out splits (the experiment's split seed). */
  seed: number;
  /** Shares of each class held out when there is no val/ or test/ folder. */
  valFraction: number;
  testFraction: number;
  /** Cache root (the pixel cache lives in <cacheDir>/pixels); `cache: false` reads and writes none. */
  cacheDir: string;
  cache?: boolean;
  /** Files read and decoded at once (default: cores + 2, so reading overlaps decoding). */
  concurrency?: number;
  log?: (line: string) => void;
  progress?: boolean | ProgressSink;
}

export interface FolderDataset {
  kind: 'folder';
  root: string;
  /** The folder's name, for titles. */
  name: string;
  classNames: string[];
  size: number;
  fit: Fit;
  /** Every image that decoded, in scan order; indices[i] = i, the position in `files` and `sourceSizes`. */
  all: ImageSet;
  /** Relative path of each image of `all` (by position). */
  files: string[];
  /** Source width x height as displayed (EXIF orientation applied), by position in `all`. */
  sourceSizes: { width: number; height: number }[];
  /** Positions into `all` per split. */
  plan: SplitPlan;
  scan: FolderScan;
  /** Files that are images by their bytes but could not be decoded, with the reason. */
  failed: { rel: string; reason: string }[];
  duplicates: DuplicateGroup[];
  /** How the pixels were obtained: decoded now or read from the pixel cache. */
  stats: { decoded: number; cached: number; seconds: number };
  /** The lines said while loading (also passed to `log`). */
  notes: string[];
}

const MAGIC = Buffer.from('PIX1');
const HEADER_BYTES = 16;

function pixelCacheFile(root: string, fit: Fit, size: number, hash: string): string {
  return path.join(root, 'pixels', `${fit}-${size}`, hash.slice(0, 2), `${hash}.rgb`);
}

function readPixelCache(file: string, size: number): { pixels: Uint8Array; width: number; height: number } | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  // A file of the wrong size or header is ignored (and overwritten by the decode): never trusted.
  if (buf.length !== HEADER_BYTES + imageBytes(size) || !buf.subarray(0, 4).equals(MAGIC) || buf.readUInt32LE(12) !== size) return undefined;
  return { pixels: buf.subarray(HEADER_BYTES), width: buf.readUInt32LE(4), height: buf.readUInt32LE(8) };
}

function encodePixelCache(pixels: Uint8Array, width: number, height: number, size: number): Buffer {
  const head = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(width, 4);
  head.writeUInt32LE(height, 8);
  head.writeUInt32LE(size, 12);
  return Buffer.concat([head, pixels]);
}

type Loaded = { ok: true; key: string; pixels: Uint8Array; width: number; height: number; cached: boolean } | { ok: false; reason: string };

/** One file: its bytes hashed, its pixels from the cache or decoded now (and cached). Never throws. */
async function loadOne(file: ImageFile, o: FolderDatasetOptions): Promise<Loaded> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file.path);
  } catch (err) {
    return { ok: false, reason: `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
  }
  const key = crypto.createHash('sha256').update(buf).digest('hex');
  const useCache = o.cache !== false;
  const cacheFile = pixelCacheFile(o.cacheDir, o.fit, o.size, key);
  const hit = useCache ? readPixelCache(cacheFile, o.size) : undefined;
  if (hit) return { ok: true, key, ...hit, cached: true };
  try {
    const d = await decodeImageBuffer(buf, file.path, { size: o.size, fit: o.fit });
    if (useCache) bestEffortWrite(`pixel cache in ${path.join(o.cacheDir, 'pixels')}`, () => writeFileAtomic(cacheFile, encodePixelCache(d.pixels, d.width, d.height, o.size)));
    return { ok: true, key, pixels: d.pixels, width: d.width, height: d.height, cached: false };
  } catch (err) {
    const line = ((err as Error).message ?? String(err)).split('\n')[0];
    return { ok: false, reason: line.startsWith(file.path + ': ') ? line.slice(file.path.length + 2) : line };
  }
}

/**
 * Scan `root`, load every image (pixel cache, else decode + resize once, in parallel, in order), and plan the splits.
 * Throws one line when the folder has no classes, no images, or a class too small for the splits; everything else
 * (unreadable files, hidden entries, duplicates) is said and the run goes on.
 */
export async function loadFolderDataset(root: string, o: FolderDatasetOptions): Promise<FolderDataset> {
  const t0 = Date.now();
  const notes: string[] = [];
  const say = (line: string) => {
    notes.push(line);
    o.log?.(line);
  };
  const scan = await scanImageFolder(root); // throws one line for fewer than 2 classes, an empty class, strays beside train/
  if (scan.classNames.length > 256) {
    throw new Error(`${root}: ${scan.classNames.length} class folders: at most 256 are supported (labels are one byte); is this a folder of folders of classes?`);
  }
  say(`dataset ${root}: ${scan.layout === 'splits' ? `split folders ${scan.splits.join(', ')}; ` : ''}${scan.classNames.length} classes (${scan.classNames.join(', ')}), ${scan.files.length} image files`);
  if (scan.skipped.length) say(scan.skippedSummary);
  for (const r of scan.rejected) say(`not used: ${r.rel}: ${r.reason}`);
  for (const w of scan.warnings) say(`note: ${w}`);
  if (!scan.files.length) throw new Error(`${root}: no image files in its class folders (${scan.rejected.length} other files; see the lines above)`);

  const per = imageBytes(o.size);
  const n = scan.files.length;
  const images = new Uint8Array(n * per); // compacted as it fills: failures leave no gaps
  const labels = new Uint8Array(n);
  const indices = new Int32Array(n);
  const files: string[] = [];
  const sourceSizes: { width: number; height: number }[] = [];
  const keys: string[] = [];
  const splits: SplitName[] = [];
  const hashes: string[] = [];
  const failed: FolderDataset['failed'] = [];
  let decoded = 0;
  let cached = 0;
  const window = o.concurrency ?? os.availableParallelism() + 2;
  const sink: ProgressSink =
    typeof o.progress === 'object' ? o.progress : o.progress === false ? silentProgress : makeProgress(`images ${o.fit} ${o.size}px`, n);
  const pending: Promise<Loaded>[] = [];
  let next = 0;
  while (next < n && pending.length < window) pending.push(loadOne(scan.files[next++], o));
  for (let i = 0; i < n; i++) {
    const r = await pending.shift()!;
    if (next < n) pending.push(loadOne(scan.files[next++], o));
    const f = scan.files[i];
    sink.tick(1);
    if ('reason' in r) {
      // (`in`, not `!r.ok`: tslab compiles without strictNullChecks, where a boolean discriminant does not narrow)
      failed.push({ rel: f.rel, reason: r.reason });
      continue;
    }
    const at = files.length;
    images.set(r.pixels, at * per);
    labels[at] = f.label;
    indices[at] = at;
    files.push(f.rel);
    sourceSizes.push({ width: r.width, height: r.height });
    keys.push(r.key);
    splits.push(f.split);
    hashes.push(pixelHash(r.pixels));
    r.cached ? cached++ : decoded++;
  }
  const seconds = (Date.now() - t0) / 1000;
  sink.done(`${decoded} decoded, ${cached} from the pixel cache`);
  const m = files.length;
  say(`images: ${m} loaded at ${o.size}x${o.size} (${o.fit}) — ${decoded} decoded and resized now, ${cached} from the pixel cache (${seconds.toFixed(1)} s)`);
  if (failed.length) {
    say(`skipped ${failed.length} file${failed.length === 1 ? '' : 's'} that could not be decoded:`);
    for (const x of failed) say(`  ${x.rel}: ${x.reason}`);
  }
  if (!m) throw new Error(`${root}: none of its ${n} image files could be decoded (see the lines above)`);
  const all: ImageSet = { images: images.subarray(0, m * per), labels: labels.subarray(0, m), n: m, indices: indices.subarray(0, m), size: o.size, classes: scan.classNames.length };
  const items = files.map((rel, i) => ({ label: all.labels[i], split: splits[i], rel, key: keys[i] }));
  const plan = planSplits(items, scan.classNames, { valFraction: o.valFraction, testFraction: o.testFraction, seed: o.seed });
  const held = [plan.carved.val && `validation ${Math.round(o.valFraction * 100)}%`, plan.carved.test && `test ${Math.round(o.testFraction * 100)}%`].filter(Boolean);
  say(`splits${held.length ? ` (${held.join(' and ')} of each class held out, seed ${o.seed})` : ' (from the split folders)'}:\n${formatSplitCounts(plan, scan.classNames)}`);
  const counts = scan.classNames.map((_, c) => plan.counts.train[c] + plan.counts.val[c] + plan.counts.test[c]);
  const [lo, hi] = [Math.min(...counts), Math.max(...counts)];
  if (lo > 0 && hi / lo >= 2) say(`note: classes are imbalanced: ${hi / lo >= 10 ? 'over ' : ''}${(hi / lo).toFixed(1)}x between the largest (${scan.classNames[counts.indexOf(hi)]}, ${hi}) and the smallest (${scan.classNames[counts.indexOf(lo)]}, ${lo}); accuracy favours the large ones, read the per-class table`);
  const splitOfPos: SplitName[] = new Array(m);
  for (const s of ['train', 'val', 'test'] as const) for (const i of plan[s]) splitOfPos[i] = s;
  const duplicates = findDuplicates(files.map((rel, i) => ({ hash: hashes[i], rel, split: splitOfPos[i], label: all.labels[i] })));
  const crossing = duplicates.filter((g) => g.crossSplit || g.crossClass);
  if (duplicates.length) {
    say(`duplicates: ${duplicates.length} group${duplicates.length === 1 ? '' : 's'} of identical images${crossing.length ? `, ${crossing.length} across splits or classes (held-out figures are inflated by them, or a label is wrong):` : ' (within one split: harmless)'}`);
    for (const line of describeDuplicates(crossing.slice(0, 20), scan.classNames)) say(`  ${line}`);
    if (crossing.length > 20) say(`  … and ${crossing.length - 20} more`);
  }
  return {
    kind: 'folder', root, name: path.basename(path.resolve(root)), classNames: scan.classNames, size: o.size, fit: o.fit, all, files, sourceSizes, plan, scan, failed,
    duplicates, stats: { decoded, cached, seconds }, notes,
  };
}
