// The seed's augmentations (random flip, rotation, independent x/y stretch, translation) on uint8 NHWC batches, in
// plain JS: 32x32 images are tiny, so an inverse-mapped bilinear warp per image costs microseconds and needs no
// tensors. Deterministic for a seed; shape and 0..255 range preserved.
import { rng } from '../util/random';
import { sideOf } from './image-set';

export interface AugmentOptions {
  seed: number;
  /** Random horizontal flip with probability 1/2 (default true). */
  flip?: boolean;
  /** Uniform rotation in [-rotateDeg, +rotateDeg] degrees (default 0). */
  rotateDeg?: number;
  /** Scale factors drawn independently for x and y in [min, max] (a stretch; default none). */
  zoom?: [number, number];
  /** Shift up to this fraction of the width/height in each direction (default 0). */
  translate?: number;
  /** Per-image seeds (overrides `seed` + position): makes an image's augmentation independent of its batch. */
  seeds?: ArrayLike<number>;
  h?: number;
  w?: number;
}

/** What the cached `aug<k>` views use. Changing it must bump AUGMENT_VERSION (cache key). */
export const AUG_VIEW_OPTIONS: Omit<AugmentOptions, 'seed'> = { flip: true, rotateDeg: 10, zoom: [0.9, 1.1], translate: 0.1 };
export const AUGMENT_VERSION = 'aug-v1:flip,rot10,zoom0.9-1.1,tr0.1,reflect,bilinear';

function checkBatch(images: Uint8Array, n: number, h: number, w: number): void {
  if (!Number.isInteger(n) || n < 0 || images.length !== n * h * w * 3) {
    throw new Error(`image batch has ${images.length} bytes, expected n=${n} x ${h}x${w}x3 = ${n * h * w * 3}`);
  }
}

/** Mirror every image left-right (new array). Flipping twice gives back the input. */
export function flipHorizontal(images: Uint8Array, n: number, h = sideOf(images.length, n), w = h): Uint8Array {
  checkBatch(images, n, h, w);
  const out = new Uint8Array(images.length);
  const row = w * 3;
  for (let r = 0; r < n * h; r++) {
    const base = r * row;
    for (let x = 0; x < w; x++) {
      const s = base + x * 3;
      const d = base + (w - 1 - x) * 3;
      out[d] = images[s];
      out[d + 1] = images[s + 1];
      out[d + 2] = images[s + 2];
    }
  }
  return out;
}

/** Reflect an out-of-range coordinate back into [0, size-1] (Keras' default fill_mode 'reflect'). */
function reflect(v: number, size: number): number {
  if (size === 1) return 0;
  const period = 2 * (size - 1);
  v = Math.abs(v) % period;
  return v > size - 1 ? period - v : v;
}

/** Random flip/rotate/stretch/translate per image; seeded; returns a new array of the same shape. */
export function randomAugment(images: Uint8Array, n: number, opts: AugmentOptions): Uint8Array {
  const h = opts.h ?? sideOf(images.length, n);
  const w = opts.w ?? h;
  checkBatch(images, n, h, w);
  if (opts.seeds && opts.seeds.length !== n) throw new Error(`randomAugment: ${opts.seeds.length} seeds for ${n} images`);
  const [zMin, zMax] = opts.zoom ?? [1, 1];
  if (!(zMin > 0 && zMax >= zMin)) throw new Error(`randomAugment: zoom [${zMin}, ${zMax}] must satisfy 0 < min <= max`);
  const rot = ((opts.rotateDeg ?? 0) * Math.PI) / 180;
  const tr = opts.translate ?? 0;
  const out = new Uint8Array(images.length);
  const per = h * w * 3;
  const cx = (w - 1) / 2;
  const cy = (h - 1) / 2;
  const batchRandom = rng(opts.seed);
  for (let i = 0; i < n; i++) {
    const random = opts.seeds ? rng(opts.seeds[i]) : batchRandom;
    const flip = (opts.flip ?? true) && random() < 0.5;
    const angle = (2 * random() - 1) * rot;
    const sx = zMin + random() * (zMax - zMin);
    const sy = zMin + random() * (zMax - zMin);
    const tx = (2 * random() - 1) * tr * w;
    const ty = (2 * random() - 1) * tr * h;
    // Output pixel (x, y) samples source at inverse(translate . rotate . scale . flip) about the centre.
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    const src = i * per;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const dx = x - cx - tx;
        const dy = y - cy - ty;
        let u = (cos * dx + sin * dy) / sx;
        const v = (-sin * dx + cos * dy) / sy;
        if (flip) u = -u;
        const fx = reflect(u + cx, w);
        const fy = reflect(v + cy, h);
        const x0 = Math.floor(fx);
        const y0 = Math.floor(fy);
        const x1 = Math.min(x0 + 1, w - 1);
        const y1 = Math.min(y0 + 1, h - 1);
        const ax = fx - x0;
        const ay = fy - y0;
        const p00 = src + (y0 * w + x0) * 3;
        const p01 = src + (y0 * w + x1) * 3;
        const p10 = src + (y1 * w + x0) * 3;
        const p11 = src + (y1 * w + x1) * 3;
        const d = src + (y * w + x) * 3;
        for (let c = 0; c < 3; c++) {
          const top = images[p00 + c] + (images[p01 + c] - images[p00 + c]) * ax;
          const bot = images[p10 + c] + (images[p11 + c] - images[p10 + c]) * ax;
          out[d + c] = Math.round(top + (bot - top) * ay); // Uint8Array clamps to 0..255
        }
      }
    }
  }
  return out;
}

/** FNV-1a over one image's bytes: seeds its random views from its content, not its position in a batch. */
function imageSeed(images: Uint8Array, offset: number, length: number, k: number): number {
  let hsh = (0x811c9dc5 ^ Math.imul(k + 1, 0x9e3779b1)) >>> 0;
  for (let i = offset; i < offset + length; i++) hsh = Math.imul(hsh ^ images[i], 16777619);
  return hsh >>> 0;
}

/** Validate a view name: 'plain', 'flip' or 'aug<k>' (k >= 0). */
export function parseView(view: string): { kind: 'plain' | 'flip' | 'aug'; k: number } {
  if (view === 'plain' || view === 'flip') return { kind: view, k: 0 };
  const m = /^aug(\d+)$/.exec(view);
  if (m) return { kind: 'aug', k: Number(m[1]) };
  throw new Error(`view "${view}": expected 'plain', 'flip' or 'aug<k>' (e.g. aug0, aug1)`);
}

/**
 * One named view of a batch. 'aug<k>' is the k-th random view, seeded by k and each image's own pixels, so the
 * same image always gets the same view whatever batch or order it comes in (the feature cache relies on it).
 * 'plain' returns the input array itself.
 */
export function applyView(images: Uint8Array, n: number, view: string, h = sideOf(images.length, n), w = h): Uint8Array {
  const { kind, k } = parseView(view);
  checkBatch(images, n, h, w);
  if (kind === 'plain') return images;
  if (kind === 'flip') return flipHorizontal(images, n, h, w);
  const per = h * w * 3;
  const seeds = new Uint32Array(n);
  for (let i = 0; i < n; i++) seeds[i] = imageSeed(images, i * per, per, k);
  return randomAugment(images, n, { ...AUG_VIEW_OPTIONS, seed: k, seeds, h, w });
}
