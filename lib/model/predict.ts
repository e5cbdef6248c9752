// Labelling image files with the saved classifier, the way the model says its images were made. A CIFAR-10 model:
// decode PNG/JPEG (maintained codecs, format read from the bytes) and reduce to 32x32 as CIFAR-10's photos were (the
// demo page does the same arithmetic). A model trained on a folder: decode any format the folder could hold and
// resize to its input size with its fit — the same code (sharp) that made its training images. Used by
// `npm run predict` and notebook 6.
import * as fs from 'fs';
import * as tf from '@tensorflow/tfjs';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import { imageSizeOf, ModelMetadata, predictPixels } from './classifier';
import { decodeImageFile } from '../data/image-folder';
import { imageHeaderSize, MAX_IMAGE_PIXELS, oversizeReason, RgbImage, resizeTo, rgbaToRgb } from '../data/pixels';

export type { RgbImage } from '../data/pixels';
export { resizeTo } from '../data/pixels';

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
  // Dimensions from the header before any decoder allocates width x height x 4 bytes (decompression bombs).
  const header = imageHeaderSize(buf);
  const oversize = header && oversizeReason(file, header);
  if (oversize) throw new Error(oversize);
  let rgba: { width: number; height: number; data: Uint8Array };
  let kind: string;
  try {
    if (buf.subarray(0, 4).equals(PNG_MAGIC)) {
      kind = 'PNG';
      rgba = PNG.sync.read(buf);
    } else if (buf[0] === 0xff && buf[1] === 0xd8) {
      kind = 'JPEG';
      // jpeg-js's own caps stay as a backstop for headers the reader above does not find (the same pixel limit).
      rgba = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6, maxMemoryUsageInMB: 512 });
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
  return rgbaToRgb(rgba);
}

/** Top-k (class, probability) of one probability row. */
export function topK(probs: ArrayLike<number>, classNames: string[], k = 3): { name: string; probability: number }[] {
  return Array.from({ length: probs.length }, (_, i) => i)
    .sort((a, b) => probs[b] - probs[a])
    .slice(0, k)
    .map((i) => ({ name: classNames[i] ?? String(i), probability: probs[i] }));
}

/** Decode, resize to 32x32 and classify one file; throws a one-line error naming the file when it cannot be read. */
export async function predictFile(model: tf.LayersModel, classNames: string[], file: string, k = 3): Promise<{ pixels: Uint8Array; top: { name: string; probability: number }[] }> {
  const pixels = resizeTo(decodeImage(file), 32);
  return { pixels, top: topK(await predictPixels(model, pixels, 1), classNames, k) };
}

/**
 * Classify one file as the model's metadata says: its class names, its input size, and for a folder-trained model its
 * fit (cover/contain) through the decoder that made its training images. Throws one line naming the file.
 */
export async function predictImage(
  model: tf.LayersModel, meta: Pick<ModelMetadata, 'classNames' | 'imageSize' | 'dataset'>, file: string, k = 3,
): Promise<{ pixels: Uint8Array; size: number; top: { name: string; probability: number }[] }> {
  const size = imageSizeOf(meta);
  if (meta.dataset?.kind !== 'folder') return { ...(await predictFile(model, meta.classNames, file, k)), size };
  const { pixels } = await decodeImageFile(file, { size, fit: meta.dataset.fit ?? 'cover' });
  return { pixels, size, top: topK(await predictPixels(model, pixels, 1), meta.classNames, k) };
}
