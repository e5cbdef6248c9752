// Labelling image files with the saved classifier: decode PNG/JPEG (maintained codecs, format read from the bytes),
// reduce to 32x32 the way CIFAR-10's photos were made, and report the top classes. Used by `npm run predict` and
// notebook 6.
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import { predictPixels } from './model';

export interface RgbImage {
  width: number;
  height: number;
  /** RGB, row-major, 3 bytes per pixel. */
  data: Uint8Array;
}

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47]);

/** Decode a PNG or JPEG file to RGB (alpha composited on white). Throws a one-line error naming the file. */
export function decodeImage(file: string): RgbImage {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${file}: cannot read (${code === 'ENOENT' ? 'no such file' : code ?? (err as Error).message})`);
  }
  let rgba: { width: number; height: number; data: Uint8Array };
  let kind: string;
  try {
    if (buf.subarray(0, 4).equals(PNG_MAGIC)) {
      kind = 'PNG';
      rgba = PNG.sync.read(buf);
    } else if (buf[0] === 0xff && buf[1] === 0xd8) {
      kind = 'JPEG';
      rgba = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 512 });
    } else {
      throw new Error(`not a PNG or JPEG (starts with bytes ${buf.subarray(0, 4).toString('hex') || '<empty file>'})`);
    }
  } catch (err) {
    const msg = (err as Error).message.split('\n')[0];
    throw new Error(msg.startsWith('not a PNG') ? `${file}: ${msg}` : `${file}: corrupt or unsupported image (${msg})`);
  }
  if (!(rgba.width > 0 && rgba.height > 0) || rgba.data.length < rgba.width * rgba.height * 4) {
    throw new Error(`${file}: corrupt ${kind} (decoded ${rgba.width}x${rgba.height} with ${rgba.data.length} bytes)`);
  }
  const n = rgba.width * rgba.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = rgba.data[i * 4 + 3] / 255;
    for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.round(rgba.data[i * 4 + c] * a + 255 * (1 - a));
  }
  return { width: rgba.width, height: rgba.height, data };
}

/**
 * Resize to size x size: area averaging when shrinking (each output pixel = mean of the source area it covers, as
 * CIFAR-10's downsampled photos), bilinear (half-pixel centres) when enlarging. The whole image is used (no crop).
 */
export function resizeTo(img: RgbImage, size = 32): Uint8Array {
  const { width: W, height: H, data } = img;
  const out = new Uint8Array(size * size * 3);
  const sx = W / size;
  const sy = H / size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const acc = [0, 0, 0];
      if (sx >= 1 && sy >= 1) {
        // Area average over [x*sx, (x+1)*sx) x [y*sy, (y+1)*sy) with fractional edge weights.
        const x0 = x * sx, x1 = (x + 1) * sx, y0 = y * sy, y1 = (y + 1) * sy;
        let wsum = 0;
        for (let yy = Math.floor(y0); yy < Math.ceil(y1); yy++) {
          const wy = Math.min(yy + 1, y1) - Math.max(yy, y0);
          for (let xx = Math.floor(x0); xx < Math.ceil(x1); xx++) {
            const w = wy * (Math.min(xx + 1, x1) - Math.max(xx, x0));
            const o = (Math.min(yy, H - 1) * W + Math.min(xx, W - 1)) * 3;
            acc[0] += w * data[o];
            acc[1] += w * data[o + 1];
            acc[2] += w * data[o + 2];
            wsum += w;
          }
        }
        for (let c = 0; c < 3; c++) acc[c] /= wsum;
      } else {
        const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), W - 1);
        const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), H - 1);
        const xa = Math.floor(fx), ya = Math.floor(fy);
        const xb = Math.min(xa + 1, W - 1), yb = Math.min(ya + 1, H - 1);
        const ax = fx - xa, ay = fy - ya;
        for (let c = 0; c < 3; c++) {
          const p = (yy: number, xx: number) => data[(yy * W + xx) * 3 + c];
          const top = p(ya, xa) + (p(ya, xb) - p(ya, xa)) * ax;
          const bot = p(yb, xa) + (p(yb, xb) - p(yb, xa)) * ax;
          acc[c] = top + (bot - top) * ay;
        }
      }
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(acc[c]);
    }
  }
  return out;
}

/** Top-k (class, probability) of one probability row. */
export function topK(probs: ArrayLike<number>, classNames: string[], k = 3): { name: string; probability: number }[] {
  return Array.from({ length: probs.length }, (_, i) => i)
    .sort((a, b) => probs[b] - probs[a])
    .slice(0, k)
    .map((i) => ({ name: classNames[i] ?? String(i), probability: probs[i] }));
}

/** Decode, resize to 32x32 and classify one file; throws a one-line error naming the file when it cannot be read. */
export function predictFile(model: tf.LayersModel, classNames: string[], file: string, k = 3): { pixels: Uint8Array; top: { name: string; probability: number }[] } {
  const pixels = resizeTo(decodeImage(file), 32);
  return { pixels, top: topK(predictPixels(model, pixels, 1), classNames, k) };
}
