// The feature engine: each image (and each augmented view of it) goes through the frozen backbone once, in parallel
// across cores, and the result is cached on disk by the image's content, so any later run — the same data, a
// subset, another order, a smoke test — reads features instead of recomputing them.
//
// Cache layout: <cacheDir>/features/<backbone>/w<weights>/r<resolution>/<view>/<name>.feat, one file per chunk of
// up to CHUNK images, where <weights> is the content hash of the backbone's files (changed weights never meet old
// features). Each file: 8-byte magic, u32 header length, JSON header (format version, settings incl. weights hash
// and extractor version, count, dim, md5 of the body), then count 16-byte image keys (md5 of the image's pixels at its size),
// then count x dim float32. Files are written atomically; a file whose header, size or body hash does not match is
// never trusted: it is moved once to <cacheDir>/quarantine/ (said in one line) and its images are recomputed.
import { imageBytes, sideOf } from '../data/image-set';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { AUGMENT_VERSION, parseView } from '../data/augment';
import { BackboneName, backboneArtifacts, backboneFingerprint, backboneFolder, backboneSpec } from './backbones';
import { cutShape } from '../model/trunk';
import { initBackend } from '../engine/backend';
import { writeFileAtomic } from '../util/atomic';
import { interruptible, InterruptedError, yieldToEventLoop } from '../util/cancel';
import { bestEffortWrite } from '../util/writable';
import { BatchTask, extractBatch, WORKER_ROLE } from './features-worker';
import { dataDir } from '../settings/paths';
import { DEFAULT_RESOLUTION } from '../data/preprocess';
import { progress as makeProgress, ProgressSink, silentProgress } from '../util/progress';

export interface Features {
  /** n x dim, row i = features of input image i. */
  data: Float32Array;
  n: number;
  dim: number;
  /** How the features were obtained (cache hits, images computed, wall seconds). */
  stats?: { cached: number; computed: number; seconds: number; workers: number };
}

export interface ExtractOptions {
  backbone: BackboneName;
  resolution?: number;
  /** 'plain' (default), 'flip' or 'aug<k>'. */
  view?: string;
  /** wasm worker threads (default: CPU cores on wasm, 0 on tensorflow); 0 = in this thread (a TF graph on tensorflow). */
  workers?: number;
  /** Cache root (default data/cache); `cache: false` disables reading and writing it. */
  cacheDir?: string;
  cache?: boolean;
  /** Images per backbone call (default: 8 on wasm, where activations then stay in cache; 64 on tensorflow). */
  batchSize?: number;
  /** true (default): bar/notebook display; false: silent; or your own sink. */
  progress?: boolean | ProgressSink;
  /** Folder holding the backbone folders (else BACKBONES_DIR, data/models). */
  backbonesDir?: string;
  /** Stops the extraction between batches (as an interrupt does); every finished image stays cached. */
  signal?: AbortSignal;
  /**
   * Cache the activation of this layer (lib/model/trunk.ts `cutLayer`) instead of the pooled features: rows of h*w*c
   * values, what fine-tuning trains its top blocks on.
   */
  cut?: string;
}

export const CACHE_FORMAT = 'cifar10-features-v2';
/** Bump when the arithmetic from pixels to features changes (preprocessing, folding, pooling). */
export const EXTRACTOR_VERSION = 'resize-normalize-fold-pool-v1';
const MAGIC = Buffer.from('CFEAT01\n');
const KEY_BYTES = 16;
/** Images per cache file: big enough to keep the file count low. An interrupt loses nothing: the finished rows of
 * an unfinished chunk are written as a smaller chunk file of their own. */
export const CHUNK = 2048;

// ---------------------------------------------------------------- keys

/** md5 of each image's pixels (16 bytes each, concatenated). Images of another size have other keys. */
export function imageKeys(images: Uint8Array, n: number): Buffer {
  const per = imageBytes(sideOf(images.length, n));
  const keys = Buffer.allocUnsafe(n * KEY_BYTES);
  for (let i = 0; i < n; i++) {
    crypto.createHash('md5').update(images.subarray(i * per, (i + 1) * per)).digest().copy(keys, i * KEY_BYTES);
  }
  return keys;
}

// ---------------------------------------------------------------- cache files

interface CacheSettings {
  backbone: BackboneName;
  /** backboneFingerprint of the weights the features came from. */
  weights: string;
  resolution: number;
  view: string;
  dim: number;
  /** The cut layer for activations (absent: pooled features). */
  cut?: string;
}

interface Header extends CacheSettings {
  format: string;
  extractor: string;
  viewVersion: string;
  count: number;
  bodyMd5: string;
}

function viewVersion(view: string): string {
  return parseView(view).kind === 'aug' ? AUGMENT_VERSION : view;
}

export function cacheFolder(root: string, s: Omit<CacheSettings, 'dim'>): string {
  return path.join(root, 'features', s.backbone, `w${s.weights}`, `r${s.resolution}`, ...(s.cut ? [`cut-${s.cut}`] : []), s.view);
}

/** Move a cache file that cannot be trusted out of the way, once, so later runs neither read nor warn about it. */
function quarantine(root: string, file: string, why: string, warn: (m: string) => void): void {
  const dest = path.join(root, 'quarantine', `${path.basename(file)}.${Date.now()}`);
  try {
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    fs.renameSync(file, dest);
    warn(`feature cache: ${file} is unusable (${why}); moved to ${dest}, its images will be recomputed`);
  } catch {
    warn(`feature cache: ignoring ${file} (${why}); its images will be recomputed`);
  }
}

function encodeChunk(s: CacheSettings, keys: Buffer, data: Float32Array): Buffer {
  const count = keys.length / KEY_BYTES;
  const body = Buffer.concat([keys, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
  const header: Header = {
    format: CACHE_FORMAT, extractor: EXTRACTOR_VERSION, ...s, viewVersion: viewVersion(s.view), count,
    bodyMd5: crypto.createHash('md5').update(body).digest('hex'),
  };
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([MAGIC, len, json, body]);
}

/** Header + keys of a chunk file if it claims the expected settings and has the right size; else a reason. */
function readChunkIndex(file: string, s: CacheSettings): { header: Header; keys: Buffer; bodyOffset: number } | string {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const size = fs.fstatSync(fd).size;
    const pre = Buffer.alloc(12);
    if (fs.readSync(fd, pre, 0, 12, 0) !== 12 || !pre.subarray(0, 8).equals(MAGIC)) return 'bad magic';
    const hlen = pre.readUInt32LE(8);
    if (hlen > 65536) return 'bad header length';
    const hbuf = Buffer.alloc(hlen);
    if (fs.readSync(fd, hbuf, 0, hlen, 12) !== hlen) return 'truncated header';
    const h = JSON.parse(hbuf.toString('utf8')) as Header;
    const want = { format: CACHE_FORMAT, extractor: EXTRACTOR_VERSION, ...s, viewVersion: viewVersion(s.view) };
    for (const [k, v] of Object.entries(want)) if ((h as any)[k] !== v) return `header ${k}=${(h as any)[k]}, expected ${v}`;
    const bodyOffset = 12 + hlen;
    const expected = bodyOffset + h.count * (KEY_BYTES + 4 * h.dim);
    if (!Number.isInteger(h.count) || size !== expected) return `size ${size} bytes, header implies ${expected}`;
    const keys = Buffer.alloc(h.count * KEY_BYTES);
    fs.readSync(fd, keys, 0, keys.length, bodyOffset);
    return { header: h, keys, bodyOffset };
  } catch (err) {
    return (err as Error).message;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** The features of a chunk file after checking its body hash; a string reason when it fails. */
function readChunkData(file: string, idx: { header: Header; bodyOffset: number }): Float32Array | string {
  const buf = fs.readFileSync(file);
  const body = buf.subarray(idx.bodyOffset);
  if (crypto.createHash('md5').update(body).digest('hex') !== idx.header.bodyMd5) return 'body hash mismatch';
  const featBytes = body.subarray(idx.header.count * KEY_BYTES);
  const out = new Float32Array(featBytes.length / 4);
  Buffer.from(out.buffer).set(featBytes);
  return out;
}

/**
 * Copy cached rows for the wanted keys into `out`; returns which wanted positions were filled.
 * Bad files are reported once (warn) and skipped.
 */
function readCache(
  root: string, folder: string, s: CacheSettings, wanted: Map<string, number[]>, out: Float32Array, warn: (m: string) => void,
): number {
  if (!fs.existsSync(folder)) return 0;
  let filled = 0;
  for (const name of fs.readdirSync(folder).filter((f) => f.endsWith('.feat')).sort()) {
    if (wanted.size === 0) break;
    const file = path.join(folder, name);
    const idx = readChunkIndex(file, s);
    if (typeof idx === 'string') {
      quarantine(root, file, idx, warn);
      continue;
    }
    const hits: [number, number[]][] = [];
    for (let r = 0; r < idx.header.count; r++) {
      const key = idx.keys.toString('hex', r * KEY_BYTES, (r + 1) * KEY_BYTES);
      const positions = wanted.get(key);
      if (positions) hits.push([r, positions]);
    }
    if (hits.length === 0) continue;
    const data = readChunkData(file, idx);
    if (typeof data === 'string') {
      quarantine(root, file, data, warn);
      continue;
    }
    const dim = s.dim;
    for (const [r, positions] of hits) {
      const row = data.subarray(r * dim, (r + 1) * dim);
      for (const p of positions) out.set(row, p * dim);
      filled += positions.length;
      wanted.delete(idx.keys.toString('hex', r * KEY_BYTES, (r + 1) * KEY_BYTES));
    }
  }
  return filled;
}

/** A chunk file's features when it exists and is valid (header, size, hash), else undefined. */
function readChunkFile(file: string, s: CacheSettings, count: number): Float32Array | undefined {
  if (!fs.existsSync(file)) return undefined;
  const idx = readChunkIndex(file, s);
  if (typeof idx === 'string' || idx.header.count !== count) return undefined;
  const data = readChunkData(file, idx);
  return typeof data === 'string' ? undefined : data;
}

// ---------------------------------------------------------------- claims (runs sharing a cache)

const CLAIM_POLL_MS = 250;
/** A claim older than this is taken over even if its process seems alive (a chunk takes seconds, not minutes). */
const CLAIM_STALE_MS = 10 * 60 * 1000;

/** Whether the process that wrote a claim is gone (same host: pid check; else by age). */
function claimIsStale(claimFile: string): boolean {
  try {
    const c = JSON.parse(fs.readFileSync(claimFile, 'utf8')) as { pid: number; host: string; at: number };
    if (Date.now() - c.at > CLAIM_STALE_MS) return true;
    if (c.host !== os.hostname()) return false;
    try {
      process.kill(c.pid, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  } catch {
    return true; // unreadable or half-written claim: its writer died mid-write
  }
}

/**
 * Claim a chunk for this process (an exclusive-create claim file beside it). True when we may compute it: we hold
 * the claim, or the folder cannot hold claims (read-only cache: nobody else can write the chunk either).
 */
function claimChunk(file: string): boolean {
  const claim = `${file}.claim`;
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      fs.writeFileSync(claim, JSON.stringify({ pid: process.pid, host: os.hostname(), at: Date.now() }), { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return true;
      if (!claimIsStale(claim)) return false;
      fs.rmSync(claim, { force: true }); // its owner died: take it over
    }
  }
  return false;
}

function releaseChunk(file: string): void {
  fs.rmSync(`${file}.claim`, { force: true });
}

// ---------------------------------------------------------------- worker pool

type Pending = { id: number; task: BatchTask; resolve: (f: Float32Array) => void; reject: (e: Error) => void };

/** worker_threads running lib/features-worker; each handles one batch at a time, queue dispatched on demand. */
class FeaturePool {
  private workers: { w: Worker; busy?: Pending; ready: boolean }[] = [];
  private queue: Pending[] = [];
  private nextId = 0;
  private failed?: Error;

  constructor(readonly size: number) {
    // A compiled build has features-worker.js beside us; from sources (ts-node, node --test, and tslab, which
    // names our module features.js although only the .ts exists) each worker needs ts-node too.
    const js = path.join(__dirname, 'features-worker.js');
    const file = fs.existsSync(js) ? js : path.join(__dirname, 'features-worker.ts');
    const isTs = file.endsWith('.ts');
    const tsNode = isTs ? require.resolve('ts-node/register/transpile-only') : '';
    const code = isTs ? `require(${JSON.stringify(tsNode)}); require(${JSON.stringify(file)});` : `require(${JSON.stringify(file)});`;
    // The environment that resolves to this process's runtime context (data, backbones, backend: lib/settings/context.ts).
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const base = (require('../settings/context') as typeof import('../settings/context')).childEnv();
    const env = { ...base, TS_NODE_PROJECT: base.TS_NODE_PROJECT ?? path.join(__dirname, '..', '..', 'tsconfig.json') };
    for (let i = 0; i < size; i++) {
      const w = new Worker(code, { eval: true, workerData: { role: WORKER_ROLE }, env, stdout: false, stderr: false });
      const slot = { w, ready: false } as { w: Worker; busy?: Pending; ready: boolean };
      w.on('message', (m: any) => this.onMessage(slot, m));
      w.on('error', (err) => this.fail(new Error(`feature worker crashed: ${err.message}`)));
      w.on('exit', (code) => {
        if (code !== 0 && !this.failed) this.fail(new Error(`feature worker exited with code ${code}`));
      });
      w.unref();
      this.workers.push(slot);
    }
  }

  private onMessage(slot: { w: Worker; busy?: Pending; ready: boolean }, m: any): void {
    if (m.type === 'ready') slot.ready = true;
    else if (m.type === 'fatal') return this.fail(new Error(m.message));
    else {
      const job = slot.busy;
      slot.busy = undefined;
      if (job && m.id === job.id) {
        if (m.type === 'result') job.resolve(m.features as Float32Array);
        else job.reject(new Error(m.message));
      }
    }
    this.pump();
  }

  private fail(err: Error): void {
    if (this.failed) return;
    this.failed = err;
    for (const s of this.workers) s.busy?.reject(err);
    for (const j of this.queue.splice(0)) j.reject(err);
    this.terminate();
  }

  private pump(): void {
    for (const s of this.workers) {
      if (s.busy || this.queue.length === 0) continue;
      const job = this.queue.shift()!;
      s.busy = job;
      s.w.postMessage({ id: job.id, task: job.task }, [job.task.pixels.buffer as ArrayBuffer]);
    }
    // Keep the process alive only while work is outstanding: an idle pool never blocks exit.
    const busy = this.workers.some((s) => s.busy);
    for (const s of this.workers) busy ? s.w.ref() : s.w.unref();
  }

  run(task: BatchTask): Promise<Float32Array> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, task, resolve, reject });
      this.pump();
    });
  }

  /** Stop at once: reject running and queued jobs with `err` and terminate the threads (an interrupt). */
  abort(err: Error): void {
    this.fail(err);
  }

  /** Reject every queued (not yet running) job: after one batch fails, the rest of that call is pointless. */
  cancelQueued(err: Error): void {
    for (const j of this.queue.splice(0)) j.reject(err);
    this.pump();
  }

  get broken(): boolean {
    return this.failed !== undefined;
  }

  async terminate(): Promise<void> {
    await Promise.all(this.workers.map((s) => s.w.terminate()));
    this.workers = [];
  }
}

let pool: FeaturePool | undefined;

function getPool(size: number): FeaturePool {
  if (!pool || pool.broken || pool.size !== size) {
    pool?.terminate();
    pool = new FeaturePool(size);
  }
  return pool;
}

/** Stop the worker threads (they are idle-unref'd, so this is only needed for a clean shutdown or a new size). */
export async function terminateFeaturePool(): Promise<void> {
  const p = pool;
  pool = undefined;
  await p?.terminate();
}

// ---------------------------------------------------------------- extraction

const cutShapes = new Map<string, Promise<[number, number, number]>>();

/** Shape of a cut layer's activation at `resolution` (from the backbone's topology; memoised). */
export function cutShapeOf(backbone: BackboneName, cut: string, resolution: number, backbonesDir?: string): Promise<[number, number, number]> {
  const key = `${backbone}|${cut}|${resolution}|${backbonesDir ?? ''}`;
  let p = cutShapes.get(key);
  if (!p) {
    p = backboneArtifacts(backbone, { dir: backbonesDir }).then((a) => cutShape(a.topology, cut, resolution));
    p.catch(() => cutShapes.delete(key));
    cutShapes.set(key, p);
  }
  return p;
}

/**
 * Features of every image, in input order, from the cache where possible and the backbone otherwise.
 * Throws a one-line error for bad input (pixel buffer size, unknown backbone/view, resolution).
 */
export async function extractFeatures(set: { images: Uint8Array; n: number }, opts: ExtractOptions): Promise<Features> {
  const t0 = Date.now();
  const spec = backboneSpec(opts.backbone);
  const resolution = opts.resolution ?? DEFAULT_RESOLUTION;
  const view = opts.view ?? 'plain';
  parseView(view);
    const { images, n } = set;
  const side = sideOf(images.length, n, 'extractFeatures: images');
  const per = imageBytes(side);
  if (!Number.isInteger(resolution) || resolution < 32) throw new Error(`resolution ${resolution}: expected an integer >= 32`);
  if (opts.batchSize !== undefined && !(Number.isInteger(opts.batchSize) && opts.batchSize >= 1)) {
    throw new Error(`batchSize ${opts.batchSize}: expected a positive integer`);
  }
  if (opts.workers !== undefined && !(Number.isInteger(opts.workers) && opts.workers >= 0)) {
    throw new Error(`workers ${opts.workers}: expected an integer >= 0 (0 = in this thread)`);
  }
  const weights = backboneFingerprint(await backboneFolder(opts.backbone, opts.backbonesDir));
  const cut = opts.cut;
  const dim = cut ? (await cutShapeOf(opts.backbone, cut, resolution, opts.backbonesDir)).reduce((a, b) => a * b, 1) : spec.featureSize;
  const out = new Float32Array(n * dim);
  const settings: CacheSettings = { backbone: opts.backbone, weights, resolution, view, dim, ...(cut ? { cut } : {}) };
  const useCache = opts.cache !== false;
  const cacheRoot = opts.cacheDir ?? dataDir('cache');
  const folder = cacheFolder(cacheRoot, settings);

  // Deduplicate by content: identical images are computed once and get identical features.
  const keys = imageKeys(images, n);
  const wanted = new Map<string, number[]>();
  for (let i = 0; i < n; i++) {
    const k = keys.toString('hex', i * KEY_BYTES, (i + 1) * KEY_BYTES);
    const list = wanted.get(k);
    list ? list.push(i) : wanted.set(k, [i]);
  }
  const cached = useCache ? readCache(cacheRoot, folder, settings, wanted, out, (m) => console.warn(m)) : 0;
  const missing = [...wanted.values()]; // position lists of images still to compute (one entry per distinct image)

  const backend = missing.length ? (await initBackend()).name : 'n/a';
  // Measured at 160 px on 2 cores: wasm is fastest at 8 images per call; a TF graph at 32-64 (636 img/s for
  // MobileNetV2 at 64, 491 at 100).
  const batchSize = opts.batchSize ?? (backend === 'tensorflow' ? 64 : 8);
  // wasm runs one thread per instance, so it fans out to a pool of wasm workers (one per core); tensorflow runs
  // in-process on TF's own threads. An explicit `workers` count asks for the wasm pool on any backend (the tests
  // use it to compare the two engines).
  const nWorkers = backend === 'wasm' ? (opts.workers ?? os.cpus().length) : (opts.workers ?? 0);
  const toCompute = missing.reduce((a, l) => a + l.length, 0);
  let shared = 0; // images another run computed meanwhile (read from the cache it wrote)
  if (missing.length) {
    // Interrupt (notebook) / Ctrl-C (CLI): stop between batches, keep the chunks already cached, say how far.
    const label = `${cut ? `activations ${opts.backbone}/${cut}` : `features ${opts.backbone}`} ${resolution}px ${view}`;
    let done = 0;
    let written = 0;
    const op = interruptible(label, opts.signal);
    const howFar = () => `after ${done.toLocaleString('en')} / ${missing.length.toLocaleString('en')} images; ${written.toLocaleString('en')} cached`;
    const onAbort = () => {
      if (nWorkers > 0) pool?.abort(new InterruptedError(`${label} interrupted ${howFar()}`)); // stops the workers now
    };
    op.signal.addEventListener('abort', onAbort, { once: true });
    const run: (t: BatchTask) => Promise<Float32Array> =
      nWorkers > 0 ? (t) => (op.check(howFar), getPool(nWorkers).run(t)) : (() => {
        let chain = Promise.resolve(); // in-process: one batch at a time
        return (t: BatchTask) => {
          // A macrotask between batches lets a SIGINT (or a kernel message) arrive; a microtask chain never would.
          const p = chain.then(yieldToEventLoop).then(() => (op.check(howFar), extractBatch(t)));
          chain = p.then(() => undefined, () => undefined);
          return p;
        };
      })();
    const sink: ProgressSink =
      typeof opts.progress === 'object' ? opts.progress
        : opts.progress === false ? silentProgress
        : makeProgress(`${label}${nWorkers ? ` x${nWorkers} workers` : ''}`, missing.length);
    const chunks: number[][][] = [];
    for (let i = 0; i < missing.length; i += CHUNK) chunks.push(missing.slice(i, i + CHUNK));
    const keysOf = (chunk: number[][]) =>
      Buffer.concat(chunk.map((positions) => keys.subarray(positions[0] * KEY_BYTES, (positions[0] + 1) * KEY_BYTES)));
    const fileOf = (chunk: number[][]) => path.join(folder, crypto.createHash('md5').update(keysOf(chunk)).digest('hex') + '.feat');
    const place = (chunk: number[][], feats: Float32Array) =>
      chunk.forEach((positions, j) => {
        const row = feats.subarray(j * dim, (j + 1) * dim);
        for (const p of positions) out.set(row, p * dim);
      });
    // The chunks being computed, with the rows finished so far: an interrupt (or a failure) writes those rows as a
    // partial chunk file, so the work done before it is kept however large the chunk (see keepPartials).
    const inFlight = new Set<{ chunk: number[][]; feats: Float32Array; finished: Uint8Array }>();
    const compute = async (chunk: number[][]) => {
      const feats = new Float32Array(chunk.length * dim);
      const track = { chunk, feats, finished: new Uint8Array(chunk.length) };
      inFlight.add(track);
      const batches: Promise<void>[] = [];
      for (let b = 0; b < chunk.length; b += batchSize) {
        const part = chunk.slice(b, b + batchSize);
        const pixels = new Uint8Array(part.length * per);
        part.forEach((positions, j) => pixels.set(images.subarray(positions[0] * per, (positions[0] + 1) * per), j * per));
        batches.push(
          run({ backbone: opts.backbone, backbonesDir: opts.backbonesDir, weights, resolution, view, n: part.length, pixels, cut }).then((f) => {
            if (f.length !== part.length * dim) throw new Error(`backbone returned ${f.length} values for ${part.length} images x ${dim}`);
            feats.set(f, b * dim);
            track.finished.fill(1, b, b + part.length);
            sink.tick(part.length);
            done += part.length;
          }),
        );
      }
      await Promise.all(batches);
      inFlight.delete(track);
      place(chunk, feats);
      if (useCache) {
        // A read-only or full cache folder costs the caching, never the features just computed.
        if (bestEffortWrite(`feature cache in ${folder}`, () => writeFileAtomic(fileOf(chunk), encodeChunk(settings, keysOf(chunk), feats)))) {
          written += chunk.length;
        }
      }
    };
    /**
     * After an interrupt or a failure, write the finished rows of every unfinished chunk as a chunk file of its own
     * (the same format, content hash and atomic write as a whole chunk; named by its own keys), which the next run's
     * cache read finds like any other: interrupting a 2,000-image extraction at 67% keeps 1,340 images, not none.
     * Rows are copied now, so a batch that lands later cannot change what was hashed.
     */
    const keepPartials = () => {
      for (const { chunk, feats, finished } of inFlight) {
        const rows = [...finished.keys()].filter((j) => finished[j]);
        if (!useCache || rows.length === 0) continue;
        const part = rows.map((j) => chunk[j]);
        const partFeats = new Float32Array(rows.length * dim);
        rows.forEach((j, r) => partFeats.set(feats.subarray(j * dim, (j + 1) * dim), r * dim));
        if (bestEffortWrite(`feature cache in ${folder}`, () => writeFileAtomic(fileOf(part), encodeChunk(settings, keysOf(part), partFeats)))) {
          written += part.length;
        }
      }
      inFlight.clear();
    };
    try {
      // Runs sharing a cache share the work: each chunk is claimed before it is computed; a chunk another live run
      // has claimed is left to it and read from the cache once written (or taken over if that run dies).
      const claimed: number[][][] = [];
      const others: number[][][] = [];
      for (const chunk of chunks) (!useCache || claimChunk(fileOf(chunk)) ? claimed : others).push(chunk);
      const release = () => claimed.forEach((c) => useCache && releaseChunk(fileOf(c)));
      // A chunk claimed only after another run finished it (it read the cache before that run wrote, and claimed
      // after it released) is in the cache now: read it rather than compute it again.
      /** Place a chunk another run wrote, if it is in the cache and valid; true when it was. */
      const takeWritten = (chunk: number[][]): boolean => {
        const feats = useCache ? readChunkFile(fileOf(chunk), settings, chunk.length) : undefined;
        if (!feats) return false;
        place(chunk, feats);
        sink.tick(chunk.length);
        shared += chunk.reduce((a, l) => a + l.length, 0);
        return true;
      };
      /**
       * The rows of a chunk not yet in the cache: another run that held it and was interrupted left its finished
       * rows in a partial chunk file; those are placed (counted as shared) and only the rest is computed.
       */
      const notInPartials = (chunk: number[][]): number[][] => {
        const want = new Map(chunk.map((positions) => [keys.toString('hex', positions[0] * KEY_BYTES, (positions[0] + 1) * KEY_BYTES), positions]));
        const got = readCache(cacheRoot, folder, settings, want, out, (m) => console.warn(m));
        if (got) {
          sink.tick(chunk.length - want.size);
          shared += got;
        }
        const left = new Set(want.values());
        return chunk.filter((positions) => left.has(positions));
      };
      const computeUnlessWritten = async (chunk: number[][]): Promise<void> => {
        if (!takeWritten(chunk)) await compute(chunk);
      };
      try {
        await Promise.all(claimed.map(computeUnlessWritten));
      } catch (err) {
        keepPartials(); // while the claims are held: a run waiting on one finds the partial file before it takes over
        throw err;
      } finally {
        release();
      }
      for (const chunk of others) {
        const file = fileOf(chunk);
        for (;;) {
          if (takeWritten(chunk)) break;
          if (claimChunk(file)) {
            try {
              const rest = notInPartials(chunk);
              if (rest.length) await compute(rest);
            } catch (err) {
              keepPartials();
              throw err;
            } finally {
              releaseChunk(file);
            }
            break;
          }
          await new Promise((r) => setTimeout(r, CLAIM_POLL_MS));
          op.check(howFar);
        }
      }
    } catch (err) {
      if (nWorkers > 0) pool?.cancelQueued(err as Error);
      keepPartials();
      sink.done(err instanceof InterruptedError ? 'interrupted' : 'failed');
      // The interrupt's line was composed when it came; say what is cached now, partial chunks included.
      if (err instanceof InterruptedError) throw new InterruptedError(`${label} interrupted ${howFar()}`);
      throw err;
    } finally {
      op.signal.removeEventListener('abort', onAbort);
      op.release();
    }
    sink.done(`${toCompute - shared} computed, ${cached + shared} from cache${shared ? ` (${shared} computed meanwhile by another run)` : ''}`);
  }
  return { data: out, n, dim, stats: { cached: cached + shared, computed: toCompute - shared, seconds: (Date.now() - t0) / 1000, workers: nWorkers } };
}
