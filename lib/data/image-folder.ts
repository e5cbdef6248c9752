// Your own images (issue #25): a folder of class subfolders, read the way Keras' image_dataset_from_directory and
// fastai's ImageDataLoaders.from_folder read one, decoded with sharp (libvips) to square RGB8 at one size.
//
// Three steps, each usable alone:
//   scanImageFolder  — the layout, the class names, which files are images (by content), what was skipped and why;
//   decodeImages     — decode + resize in parallel, streamed in order, one image held per worker, a pixel hash each;
//   planSplits / findDuplicates — stratified seeded validation (and test) splits, exact duplicates across splits.
// Nothing is ever dropped silently: hidden entries are summarised, every other unusable file is listed with a reason.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import * as bmp from 'bmp-ts';
import { rng, shuffle } from '../util/random';
import { MAX_IMAGE_PIXELS, oversizeReason } from './pixels';
import { ImageFormat, SNIFF_BYTES, bmpHeader, sniffImage } from './image-sniff';

// sharp's package.json "types" points at an ES-module .d.mts, whose namespace this CommonJS project's (node10)
// resolution cannot name: derive the two types from the function instead.
type Sharp = ReturnType<typeof sharp>;
type Metadata = Awaited<ReturnType<Sharp['metadata']>>;

export type { ImageFormat } from './image-sniff';
export { IMAGE_FORMATS, sniffImage } from './image-sniff';

// ---- scanning ------------------------------------------------------------------------------------------------------

/** `classes`: root/<class>/…; `splits`: root/train/<class>/… with optional val/ (or valid/, validation/) and test/. */
export type FolderLayout = 'classes' | 'splits';
export type SplitName = 'train' | 'val' | 'test';

export interface ImageFile {
  /** Absolute path. */
  path: string;
  /** Path relative to the root, '/'-separated: what messages show. */
  rel: string;
  /** Index into classNames. */
  label: number;
  /** The split folder it came from; always 'train' in the `classes` layout (validation is carved from it). */
  split: SplitName;
  /** Format from the file's leading bytes (the extension is never consulted). */
  format: ImageFormat;
}

/** A file or folder that is not used, and the one-line reason. */
export interface Rejected {
  path: string;
  rel: string;
  reason: string;
}

export interface FolderScan {
  root: string;
  layout: FolderLayout;
  /** Class folder names in byte order (see byteOrder). */
  classNames: string[];
  /** Which split folders exist ('train' only in the `classes` layout). */
  splits: SplitName[];
  /** Image files, ordered by split (train, val, test), class, then depth-first with each folder's entries in byte order. */
  files: ImageFile[];
  /** Images per split per class (counts[split][label]); splits without a folder are all zeros. */
  counts: Record<SplitName, number[]>;
  /** Hidden and system entries (names starting with '.', __MACOSX, Thumbs.db, desktop.ini), relative paths, folders ending in '/'. */
  skipped: string[];
  /** One line saying what was skipped, e.g. "skipped 3 hidden/system entries: .DS_Store ×2, .ipynb_checkpoints/ ×1". */
  skippedSummary: string;
  /** Files that are not images we decode, unreadable entries and symlink loops, each with its reason. */
  rejected: Rejected[];
  /** Things worth a look that are not errors (a class missing from val/, …). */
  warnings: string[];
}

export interface ScanOptions {
  /** Files sniffed at once (reading the first 64 bytes of each). Default 32. */
  ioConcurrency?: number;
}

const VAL_NAMES = ['val', 'valid', 'validation'];
const SYSTEM_NAMES = new Set(['__MACOSX', 'Thumbs.db', 'desktop.ini']);

/**
 * Byte order of the UTF-8 names (= Unicode code point order, which is what Python's sorted() gives Keras and
 * fastai). Never localeCompare: class indices must not depend on the machine's locale ('Cat' < 'bird' here,
 * everywhere), or a model trained on one machine would mislabel on another.
 */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function isHidden(name: string): boolean {
  // '.ipynb_checkpoints', '.DS_Store', macOS '._x' resource forks, '.git': all start with a dot.
  return name.startsWith('.') || SYSTEM_NAMES.has(name);
}

const posix = (p: string) => p.split(path.sep).join('/');

interface Walk {
  root: string;
  skipped: string[];
  rejected: Rejected[];
  /** Real paths of folders already entered: a symlink back into one of them is a loop (or a repeat), not followed. */
  seen: Set<string>;
}

type Entry = { name: string; full: string; kind: 'dir' | 'file' };

/** A folder's usable entries in byte order; hidden ones go to `skipped`, unreadable ones to `rejected`. */
function listEntries(dir: string, w: Walk): Entry[] {
  const rel = (p: string) => posix(path.relative(w.root, p));
  const out: Entry[] = [];
  for (const name of fs.readdirSync(dir).sort(byteOrder)) {
    const full = path.join(dir, name);
    if (isHidden(name)) {
      w.skipped.push(rel(full) + (isDir(full) ? '/' : ''));
      continue;
    }
    let st: fs.Stats;
    try {
      st = fs.statSync(full); // follows symlinks: a linked-in folder of images is fine
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const reason = code === 'ENOENT' ? 'broken symlink' : code === 'ELOOP' ? 'symlink loop' : `cannot read (${code ?? (err as Error).message})`;
      w.rejected.push({ path: full, rel: rel(full), reason });
      continue;
    }
    if (st.isDirectory()) out.push({ name, full, kind: 'dir' });
    else if (st.isFile()) out.push({ name, full, kind: 'file' });
    else w.rejected.push({ path: full, rel: rel(full), reason: 'not a regular file or folder' });
  }
  return out;
}

/** Enter a folder once: false (and a rejection) when its real path was already entered — symlink loops end here. */
function enter(dir: string, w: Walk): boolean {
  const real = fs.realpathSync(dir);
  if (w.seen.has(real)) {
    w.rejected.push({ path: dir, rel: posix(path.relative(w.root, dir)), reason: `symlink loop or repeat: resolves to ${real}, already scanned (not followed)` });
    return false;
  }
  w.seen.add(real);
  return true;
}

/** Every file under a class folder, nested folders included (as Keras and fastai do), in byte order. */
function filesUnder(dir: string, w: Walk): string[] {
  if (!enter(dir, w)) return [];
  const files: string[] = [];
  for (const e of listEntries(dir, w)) {
    if (e.kind === 'dir') files.push(...filesUnder(e.full, w));
    else files.push(e.full);
  }
  return files;
}

async function readHead(file: string): Promise<Buffer> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const buf = Buffer.alloc(SNIFF_BYTES);
    const { bytesRead } = await fh.read(buf, 0, SNIFF_BYTES, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Map with at most `limit` calls in flight, results in input order. */
async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return out;
}

function summariseSkipped(skipped: string[]): string {
  if (skipped.length === 0) return 'skipped nothing (no hidden or system entries)';
  const byName = new Map<string, number>();
  for (const s of skipped) {
    const base = s.endsWith('/') ? s.slice(0, -1).split('/').pop() + '/' : (s.split('/').pop() as string);
    const key = base.startsWith('._') ? '._* (macOS resource forks)' : base;
    byName.set(key, (byName.get(key) ?? 0) + 1);
  }
  const parts = [...byName].sort((a, b) => b[1] - a[1] || byteOrder(a[0], b[0])).map(([k, n]) => `${k} ×${n}`);
  return `skipped ${skipped.length} hidden/system ${skipped.length === 1 ? 'entry' : 'entries'} (and anything inside them): ${parts.join(', ')}`;
}

/**
 * Scan a folder of images: root/<class>/… or root/train/<class>/… (+ val/, test/). Throws a one-line error naming
 * the folder when the layout is unusable: not a folder, fewer than 2 classes, a class folder with no images, a class
 * in val/ or test/ that train/ lacks, or an unexpected folder beside train/.
 */
export async function scanImageFolder(root: string, opts: ScanOptions = {}): Promise<FolderScan> {
  const abs = path.resolve(root);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch {
    throw new Error(`${abs}: no such folder (expected a folder with one subfolder of images per class)`);
  }
  if (!st.isDirectory()) throw new Error(`${abs}: not a folder (expected a folder with one subfolder of images per class)`);
  const w: Walk = { root: abs, skipped: [], rejected: [], seen: new Set() };
  const outside = (e: Entry, where: string) =>
    w.rejected.push({ path: e.full, rel: posix(path.relative(abs, e.full)), reason: `file outside any class folder (images belong in ${where}<class>/)` });

  enter(abs, w);
  const top = listEntries(abs, w);
  const topDirs = top.filter((e) => e.kind === 'dir');
  const trainEntry = topDirs.find((e) => e.name === 'train');
  // train/ holding class folders means the split layout; a train/ of plain images is just a class called "train".
  const splitLayout = trainEntry !== undefined && fs.readdirSync(trainEntry.full).some((n) => !isHidden(n) && isDir(path.join(trainEntry.full, n)));

  // (split, folder) pairs whose subfolders are classes.
  const splitDirs: { split: SplitName; dir: Entry | undefined; prefix: string }[] = [];
  if (splitLayout) {
    const vals = topDirs.filter((e) => VAL_NAMES.includes(e.name));
    if (vals.length > 1) throw new Error(`${abs}: both ${vals.map((v) => v.name + '/').join(' and ')} exist; keep one validation folder`);
    const unexpected = topDirs.filter((e) => e.name !== 'train' && e.name !== 'test' && !VAL_NAMES.includes(e.name));
    if (unexpected.length) {
      throw new Error(
        `${abs}: unexpected folder ${unexpected.map((u) => u.name + '/').join(', ')} beside train/ (expected only train/, val/ (or valid/, validation/) and test/, each holding class folders)`,
      );
    }
    for (const e of top) if (e.kind === 'file') outside(e, 'train/');
    splitDirs.push({ split: 'train', dir: trainEntry, prefix: 'train/' });
    if (vals[0]) splitDirs.push({ split: 'val', dir: vals[0], prefix: vals[0].name + '/' });
    const test = topDirs.find((e) => e.name === 'test');
    if (test) splitDirs.push({ split: 'test', dir: test, prefix: 'test/' });
  } else {
    for (const e of top) if (e.kind === 'file') outside(e, '');
    splitDirs.push({ split: 'train', dir: undefined, prefix: '' });
  }

  // Candidate files per (split, class folder).
  const groups: { split: SplitName; className: string; folderRel: string; files: string[] }[] = [];
  for (const s of splitDirs) {
    const entries = s.dir ? (enter(s.dir.full, w) ? listEntries(s.dir.full, w) : []) : topDirs;
    for (const e of entries) {
      if (e.kind === 'file') {
        outside(e, s.prefix);
        continue;
      }
      groups.push({ split: s.split, className: e.name, folderRel: s.prefix + e.name + '/', files: filesUnder(e.full, w) });
    }
  }

  const classNames = [...new Set(groups.filter((g) => g.split === 'train').map((g) => g.className))].sort(byteOrder);
  const where = splitLayout ? `${abs}/train` : abs;
  if (classNames.length < 2) {
    throw new Error(`${where}: found ${classNames.length} class folder${classNames.length === 1 ? ` (${classNames[0]}/)` : 's'}; a classifier needs at least 2, one subfolder of images per class`);
  }
  const strays = groups.filter((g) => !classNames.includes(g.className));
  if (strays.length) {
    throw new Error(`${abs}: class folder${strays.length > 1 ? 's' : ''} ${strays.map((g) => g.folderRel).join(', ')} not in train/ (train/ defines the classes: ${classNames.join(', ')})`);
  }

  // Sniff every candidate's leading bytes: the content, not the extension, decides what is an image.
  const all = groups.flatMap((g) => g.files.map((f) => ({ g, f })));
  const sniffed = await mapLimit(all, opts.ioConcurrency ?? 32, async ({ f }) => {
    try {
      return sniffImage(await readHead(f));
    } catch (err) {
      return { reason: `cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
    }
  });

  const files: ImageFile[] = [];
  const counts: Record<SplitName, number[]> = { train: [], val: [], test: [] };
  for (const s of ['train', 'val', 'test'] as const) counts[s] = new Array(classNames.length).fill(0);
  const empty: string[] = [];
  const splitRank: Record<SplitName, number> = { train: 0, val: 1, test: 2 };
  const ordered = groups.slice().sort((a, b) => splitRank[a.split] - splitRank[b.split] || byteOrder(a.className, b.className));
  const result = new Map<string, ReturnType<typeof sniffImage>>();
  all.forEach(({ g, f }, i) => result.set(`${g.split}\0${f}`, sniffed[i]));
  for (const g of ordered) {
    const label = classNames.indexOf(g.className);
    let n = 0;
    const rejectedHere: string[] = [];
    for (const f of g.files) {
      const r = result.get(`${g.split}\0${f}`)!;
      const rel = posix(path.relative(abs, f));
      if ('format' in r) {
        files.push({ path: f, rel, label, split: g.split, format: r.format });
        n++;
      } else {
        w.rejected.push({ path: f, rel, reason: r.reason });
        rejectedHere.push(path.basename(f));
      }
    }
    counts[g.split][label] += n;
    if (n === 0) {
      empty.push(rejectedHere.length ? `${g.folderRel} (${rejectedHere.length} file${rejectedHere.length > 1 ? 's' : ''}, none an image we decode)` : `${g.folderRel} (empty)`);
    }
  }
  if (empty.length) throw new Error(`${abs}: class folder${empty.length > 1 ? 's' : ''} with no images: ${empty.join(', ')}`);

  const splits = splitDirs.map((s) => s.split);
  const warnings: string[] = [];
  for (const { split, prefix } of splitDirs) {
    if (split === 'train') continue;
    const missing = classNames.filter((_, c) => counts[split][c] === 0);
    const them = missing.length > 1 ? 'them' : 'it';
    if (missing.length) warnings.push(`${prefix} has no folder for class${missing.length > 1 ? 'es' : ''} ${missing.join(', ')}: ${split} accuracy will not cover ${them}`);
  }
  w.rejected.sort((a, b) => byteOrder(a.rel, b.rel));
  return {
    root: abs,
    layout: splitLayout ? 'splits' : 'classes',
    classNames,
    splits,
    files,
    counts,
    skipped: w.skipped.sort(byteOrder),
    skippedSummary: summariseSkipped(w.skipped),
    rejected: w.rejected,
    warnings,
  };
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

// ---- decoding ------------------------------------------------------------------------------------------------------

/** 'cover': scale to fill the square, centre-crop the overflow. 'contain': scale to fit inside, pad the rest. */
export type Fit = 'cover' | 'contain';

/** Transparent pixels are composited on white: the same choice as lib/data/pixels.ts rgbaToRgb (predict, demo). */
export const ALPHA_BACKGROUND = { r: 255, g: 255, b: 255 } as const;
/**
 * 'contain' pads with black, as Keras' image_dataset_from_directory(pad_to_aspect_ratio=True) and
 * tf.image.resize_with_pad do (zeros), so a model compared with a Keras run sees the same borders.
 */
export const PAD_BACKGROUND = { r: 0, g: 0, b: 0 } as const;

export interface DecodeOptions {
  /** Side of the square output, e.g. 160 or 224. */
  size: number;
  /** Default 'cover' (centre-crop), as Keras' crop_to_aspect_ratio and most ImageNet pipelines. */
  fit?: Fit;
  /** Pad colour for 'contain' (default PAD_BACKGROUND, black). */
  padColor?: { r: number; g: number; b: number };
  /**
   * Images decoded at once (default os.availableParallelism()). sharp's own libvips threads are 1 per image on glibc
   * Linux, so parallelism comes from images in flight, run on libuv's pool (4 threads unless UV_THREADPOOL_SIZE says
   * more). It also bounds memory: at most this many decoded images exist before the consumer takes them.
   */
  concurrency?: number;
  /** Largest width x height decoded (default MAX_IMAGE_PIXELS, the project's one limit), checked from the header. */
  maxPixels?: number;
}

export interface DecodedImage {
  ok: true;
  /** Position in the input list. */
  index: number;
  file: ImageFile;
  /** size * size * 3 bytes, RGB8 sRGB, row-major (NHWC for one image, as ImageSet holds them). */
  pixels: Uint8Array;
  /** sha256 (hex) of `pixels`: equal hashes = the same pixels the model will see (exact duplicates). */
  hash: string;
  /** Source size as displayed (after EXIF orientation). */
  width: number;
  height: number;
}

export interface DecodeFailure {
  ok: false;
  index: number;
  file: ImageFile;
  /** One line, without the path, e.g. "corrupt or truncated JPEG (VipsJpeg: premature end of JPEG image)". */
  reason: string;
}

export type DecodeResult = DecodedImage | DecodeFailure;

class Unusable extends Error {}

const FORMAT_NAME: Record<ImageFormat, string> = { jpeg: 'JPEG', png: 'PNG', webp: 'WebP', gif: 'GIF', bmp: 'BMP', tiff: 'TIFF', avif: 'AVIF' };

function checkSize(file: string, format: ImageFormat, width: number | undefined, height: number | undefined, limit: number): void {
  if (!(width && height && width > 0 && height > 0)) throw new Unusable(`${FORMAT_NAME[format]} header gives no usable size (${width}x${height})`);
  const over = oversizeReason(file, { format: FORMAT_NAME[format], width, height }, limit);
  if (over) throw new Unusable(over.slice(file.length + 2)); // the reason without the "file: " prefix
}

/**
 * A sharp pipeline over the file's first frame, its size checked against the limit from the header first, and the
 * size as displayed (EXIF orientations 5-8 swap width and height).
 */
async function openImage(buf: Buffer, file: string, format: ImageFormat, limit: number): Promise<{ img: Sharp; width: number; height: number }> {
  if (format === 'bmp') {
    // libvips has no BMP loader in sharp's prebuilt binaries: bmp-ts decodes, sharp does the rest.
    const h = bmpHeader(buf);
    checkSize(file, format, h.width, h.height, limit);
    const d = bmp.decode(buf); // pixels as ABGR, 4 bytes each (bmp-ts' native layout, used by all its bit depths)
    const n = d.width * Math.abs(d.height);
    // Alpha only when the header declares an alpha mask and some pixel uses it: writers that declare one and leave it
    // all zero mean "opaque" (browsers read them so), and 24-bit/paletted BMPs have none.
    let alpha = h.alphaMask;
    if (alpha) {
      alpha = false;
      for (let i = 0; i < n; i++) if (d.data[i * 4] !== 0) { alpha = true; break; }
    }
    const ch = alpha ? 4 : 3;
    const out = Buffer.alloc(n * ch);
    for (let i = 0; i < n; i++) {
      out[i * ch] = d.data[i * 4 + 3];
      out[i * ch + 1] = d.data[i * 4 + 2];
      out[i * ch + 2] = d.data[i * 4 + 1];
      if (alpha) out[i * ch + 3] = d.data[i * 4];
    }
    return { img: sharp(out, { raw: { width: d.width, height: Math.abs(d.height), channels: ch } }), width: h.width, height: h.height };
  }
  // The header is read without sharp's pixel limit, so an oversized image gets the project's own message; the decoding
  // pipeline keeps limitInputPixels as a backstop. failOn 'warning': a file libvips warns about (truncated data, bad
  // markers) is reported, not trained on with its missing rows filled grey.
  const img = sharp(buf, { limitInputPixels: limit, failOn: 'warning' });
  let meta: Metadata;
  try {
    meta = await sharp(buf, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new Unusable(`corrupt ${FORMAT_NAME[format]} header (${oneLine(err)})`);
  }
  const width = meta.width;
  const height = meta.pageHeight ?? meta.height; // a GIF/TIFF/WebP of many frames: the first one is decoded
  checkSize(file, format, width, height, limit);
  const swap = (meta.orientation ?? 1) >= 5;
  return { img, width: swap ? height : width, height: swap ? width : height };
}

const oneLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0].trim();

/**
 * Decode one file to size x size RGB8: first frame only (GIF, WebP, TIFF pages), EXIF orientation applied, alpha
 * composited on white, CMYK/greyscale/16-bit/ICC-profiled input converted to 8-bit sRGB, resized once with `fit`.
 * Throws a one-line error "<file>: <reason>".
 */
export async function decodeImageFile(file: string, opts: DecodeOptions): Promise<{ pixels: Uint8Array; width: number; height: number; format: ImageFormat }> {
  const { size } = opts;
  if (!(Number.isInteger(size) && size >= 1 && size <= 4096)) throw new Error(`decode size ${size}: expected a whole number of pixels, 1-4096`);
  const limit = opts.maxPixels ?? MAX_IMAGE_PIXELS;
  if (!(Number.isInteger(limit) && limit >= 1)) throw new Error(`maxPixels ${limit}: expected a whole number of pixels >= 1`);
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (err) {
    throw new Error(`${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? oneLine(err)})`);
  }
  return decodeImageBuffer(buf, file, opts);
}

/** decodeImageFile on bytes already read (`file` names them in errors): the folder dataset hashes them first. */
export async function decodeImageBuffer(buf: Buffer, file: string, opts: DecodeOptions): Promise<{ pixels: Uint8Array; width: number; height: number; format: ImageFormat }> {
  const { size } = opts;
  if (!(Number.isInteger(size) && size >= 1 && size <= 4096)) throw new Error(`decode size ${size}: expected a whole number of pixels, 1-4096`);
  const limit = opts.maxPixels ?? MAX_IMAGE_PIXELS;
  const kind = sniffImage(buf.subarray(0, SNIFF_BYTES));
  if ('reason' in kind) throw new Error(`${file}: ${kind.reason}`);
  const format = kind.format;
  try {
    const { img, width, height } = await openImage(buf, file, format, limit);
    const { data, info } = await img
      .autoOrient()
      .flatten({ background: ALPHA_BACKGROUND })
      .toColourspace('srgb')
      .resize(size, size, { fit: opts.fit ?? 'cover', position: 'centre', background: opts.padColor ?? PAD_BACKGROUND })
      .removeAlpha()
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.width !== size || info.height !== size || info.channels !== 3 || data.length !== size * size * 3) {
      throw new Unusable(`decoded to ${info.width}x${info.height}x${info.channels}, expected ${size}x${size}x3`);
    }
    return { pixels: new Uint8Array(data.buffer, data.byteOffset, data.length), width, height, format };
  } catch (err) {
    if (err instanceof Unusable) throw new Error(`${file}: ${err.message}`);
    // sharp/libvips and bmp-ts messages for broken data: truncated, bad markers, bad CRCs, short reads.
    // libvips' own text for the warning that failed the decode is sometimes replaced by sharp's generic line (its
    // error buffer is shared by the threads decoding at once): say what that line means instead of quoting it.
    const why = oneLine(err).replace(/^Warning treated as error due to failOn setting$/, 'libvips warned while decoding it: damaged or incomplete data');
    throw new Error(`${file}: corrupt or truncated ${FORMAT_NAME[format]} (${why})`);
  }
}

/**
 * Decode `files` in parallel (at most `concurrency` at once) and yield the results in input order, failures included
 * (a broken file never stops the run). Only the window of images in flight is held: stop iterating to stop decoding.
 */
export async function* decodeStream(files: readonly ImageFile[], opts: DecodeOptions): AsyncGenerator<DecodeResult> {
  const window = opts.concurrency ?? os.availableParallelism();
  if (!(Number.isInteger(window) && window >= 1)) throw new Error(`concurrency ${opts.concurrency}: expected a whole number >= 1`);
  const start = (index: number): Promise<DecodeResult> => {
    const file = files[index];
    const p = file.path;
    return decodeImageFile(p, opts).then(
      (d): DecodeResult => ({ ok: true, index, file, pixels: d.pixels, hash: pixelHash(d.pixels), width: d.width, height: d.height }),
      (err): DecodeResult => {
        const line = oneLine(err);
        return { ok: false, index, file, reason: line.startsWith(p + ': ') ? line.slice(p.length + 2) : line };
      },
    );
  };
  const pending: Promise<DecodeResult>[] = [];
  let next = 0;
  while (next < files.length && pending.length < window) pending.push(start(next++));
  while (pending.length) {
    const result = await pending.shift()!;
    if (next < files.length) pending.push(start(next++));
    yield result;
  }
}

export interface DecodeReport {
  decoded: number;
  failed: { path: string; rel: string; reason: string }[];
  seconds: number;
}

/**
 * Decode `files`, handing each decoded image to `onImage` in input order (awaited: a slow consumer slows decoding
 * instead of piling images up). Failures are collected with their reasons, never thrown.
 */
export async function decodeImages(
  files: readonly ImageFile[],
  opts: DecodeOptions,
  onImage: (img: DecodedImage) => void | Promise<void>,
): Promise<DecodeReport> {
  const t0 = Date.now();
  const report: DecodeReport = { decoded: 0, failed: [], seconds: 0 };
  for await (const r of decodeStream(files, opts)) {
    // Narrowed by `in`, not by `ok`: tslab compiles without strictNullChecks, where a boolean discriminant does not narrow.
    if ('reason' in r) report.failed.push({ path: r.file.path, rel: r.file.rel, reason: r.reason });
    else {
      report.decoded++;
      await onImage(r);
    }
  }
  report.seconds = (Date.now() - t0) / 1000;
  return report;
}

export function pixelHash(pixels: Uint8Array): string {
  return crypto.createHash('sha256').update(pixels).digest('hex');
}

// ---- splits --------------------------------------------------------------------------------------------------------

export interface SplitPlanOptions {
  /** Share of each class held out for validation when there is no val/ folder (default 0.15). */
  valFraction?: number;
  /** Share of each class held out for test when there is no test/ folder (default 0.15; 0 = no test split). */
  testFraction?: number;
  /** Default 42, as the CIFAR-10 split. */
  seed?: number;
}

export interface SplitPlan {
  /** Positions into the items given, ascending. */
  train: number[];
  val: number[];
  test: number[];
  /** Images per class in each split. */
  counts: Record<SplitName, number[]>;
  /** Which held-out splits were carved from train (rather than read from their own folder). */
  carved: { val: boolean; test: boolean };
}

/**
 * Assign every item (scan.files, or the ones that decoded) to train, val or test. Items from val/ and test/ folders
 * stay there; a split without a folder is carved from train, per class (stratified: each class gives its own share,
 * at least one image, keeping at least one for training), seeded, so the same folder always splits the same way.
 * Throws one line naming every class with too few images for the splits asked.
 */
export function planSplits(items: readonly { label: number; split: SplitName; rel?: string; key?: string }[], classNames: readonly string[], opts: SplitPlanOptions = {}): SplitPlan {
  const valFraction = opts.valFraction ?? 0.15;
  const testFraction = opts.testFraction ?? 0.15;
  const seed = opts.seed ?? 42;
  for (const [name, f] of [['valFraction', valFraction], ['testFraction', testFraction]] as const) {
    if (!(f >= 0 && f < 1)) throw new Error(`${name} ${f}: expected a share in [0, 1)`);
  }
  const has = (s: SplitName) => items.some((it) => it.split === s);
  const carveVal = !has('val') && valFraction > 0;
  const carveTest = !has('test') && testFraction > 0;
  if (valFraction + testFraction >= 1 && carveVal && carveTest) throw new Error(`valFraction ${valFraction} + testFraction ${testFraction}: must leave a share for training (sum < 1)`);
  const out: Record<SplitName, number[]> = { train: [], val: [], test: [] };
  const trainByClass: number[][] = classNames.map(() => []);
  items.forEach((it, i) => {
    if (!(Number.isInteger(it.label) && it.label >= 0 && it.label < classNames.length)) throw new Error(`item ${i}${it.rel ? ` (${it.rel})` : ''}: label ${it.label} outside 0..${classNames.length - 1}`);
    if (it.split === 'train') trainByClass[it.label].push(i);
    else out[it.split].push(i);
  });
  const held = (carveVal ? 1 : 0) + (carveTest ? 1 : 0);
  if (held > 0) {
    const short = classNames
      .map((name, c) => ({ name, n: trainByClass[c].length }))
      .filter((x) => x.n < held + 1);
    if (short.length) {
      const asked = [carveVal && 'validation', carveTest && 'test'].filter(Boolean).join(' and ');
      throw new Error(
        `too few images to hold out ${asked} per class (each needs at least ${held + 1}: one for training, one per held-out split): ` +
          short.map((x) => `class "${x.name}" has ${x.n}`).join(', '),
      );
    }
  }
  trainByClass.forEach((members, c) => {
    const n = members.length;
    if (held === 0) return void out.train.push(...members);
    let v = carveVal ? Math.max(1, Math.round(n * valFraction)) : 0;
    let t = carveTest ? Math.max(1, Math.round(n * testFraction)) : 0;
    // Keep at least one training image: shrink the larger held-out share first, never below one.
    while (v + t > n - 1) {
      if (v >= t && v > 1) v--;
      else if (t > 1) t--;
      else break;
    }
    // Items with a key (the folder dataset's file content hash) are ordered by a seeded hash of it: an image added
    // later lands at its own place in the order, so the others keep their splits (up to the rounding of the shares)
    // and the held-out images stay held out. Without keys: one generator per class, from the seed and the class
    // name, so adding a class never reshuffles the others.
    const keyed = members.every((i) => items[i].key !== undefined);
    const order = keyed
      ? members.map((i) => [crypto.createHash('sha256').update(`${seed}:${items[i].key}`).digest('hex'), i] as const).sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] - y[1])).map((x) => x[1])
      : shuffle(members.slice(), rng(seed ^ nameSeed(classNames[c])));
    out.val.push(...order.slice(0, v));
    out.test.push(...order.slice(v, v + t));
    out.train.push(...order.slice(v + t));
  });
  for (const s of ['train', 'val', 'test'] as const) out[s].sort((a, b) => a - b);
  const counts = {} as Record<SplitName, number[]>;
  for (const s of ['train', 'val', 'test'] as const) {
    counts[s] = classNames.map(() => 0);
    for (const i of out[s]) counts[s][items[i].label]++;
  }
  return { ...out, counts, carved: { val: carveVal, test: carveTest } };
}

function nameSeed(name: string): number {
  return crypto.createHash('sha256').update(name).digest().readUInt32LE(0);
}

/** The split of each item position under `plan` (for findDuplicates). */
export function splitOf(plan: SplitPlan, n: number): SplitName[] {
  const out = new Array<SplitName>(n);
  for (const s of ['train', 'val', 'test'] as const) for (const i of plan[s]) out[i] = s;
  return out;
}

/** Per-class counts as a small aligned table: class, train, val, test. */
export function formatSplitCounts(plan: SplitPlan, classNames: readonly string[]): string {
  const w = Math.max(5, ...classNames.map((c) => c.length));
  const row = (a: string, b: string | number, c: string | number, d: string | number) => `${a.padEnd(w)}  ${String(b).padStart(6)}  ${String(c).padStart(6)}  ${String(d).padStart(6)}`;
  const total = (s: SplitName) => plan.counts[s].reduce((x, y) => x + y, 0);
  return [row('class', 'train', 'val', 'test'), ...classNames.map((c, i) => row(c, plan.counts.train[i], plan.counts.val[i], plan.counts.test[i])), row('total', total('train'), total('val'), total('test'))].join('\n');
}

export interface DuplicateGroup {
  hash: string;
  members: { index: number; rel: string; split: SplitName; label: number }[];
  /** Same pixels in more than one split: the held-out figure is inflated by them. */
  crossSplit: boolean;
  /** Same pixels under more than one class: at least one label is wrong. */
  crossClass: boolean;
}

/**
 * Exact duplicates by decoded-pixel hash (the pixels the model sees after resize). Groups that cross splits or
 * classes come first; within a group, members keep input order.
 */
export function findDuplicates(items: readonly { hash: string; rel: string; split: SplitName; label: number }[]): DuplicateGroup[] {
  const byHash = new Map<string, DuplicateGroup['members']>();
  items.forEach((it, index) => {
    const list = byHash.get(it.hash) ?? [];
    list.push({ index, rel: it.rel, split: it.split, label: it.label });
    byHash.set(it.hash, list);
  });
  const groups: DuplicateGroup[] = [];
  for (const [hash, members] of byHash) {
    if (members.length < 2) continue;
    groups.push({ hash, members, crossSplit: new Set(members.map((m) => m.split)).size > 1, crossClass: new Set(members.map((m) => m.label)).size > 1 });
  }
  const rank = (g: DuplicateGroup) => (g.crossSplit ? 0 : 2) + (g.crossClass ? 0 : 1);
  return groups.sort((a, b) => rank(a) - rank(b) || a.members[0].index - b.members[0].index);
}

/** One line per duplicate group, e.g. "same pixels in train and val: train/cat/a.png, val/cat/a-copy.jpg". */
export function describeDuplicates(groups: readonly DuplicateGroup[], classNames: readonly string[]): string[] {
  return groups.map((g) => {
    const splits = [...new Set(g.members.map((m) => m.split))];
    const classes = [...new Set(g.members.map((m) => classNames[m.label]))];
    const what = `${g.crossSplit ? `in ${splits.join(' and ')}` : `within ${splits[0]}`}${g.crossClass ? `, labelled ${classes.join(' and ')}` : ''}`;
    return `same pixels ${what}: ${g.members.map((m) => m.rel).join(', ')}`;
  });
}
