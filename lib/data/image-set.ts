// Images as the experiment holds them: square RGB8, NHWC, one Uint8Array per set. CIFAR-10's are 32x32; a folder of
// your own images is resized once to the backbone's input (lib/data/folder-dataset.ts), so its side is the resolution.
// Code that gets a bare pixel buffer and a count infers the side from the two (sideOf), so one function serves both.

export interface ImageSet {
  /** NHWC uint8, n * size * size * 3. */
  images: Uint8Array;
  /** Class index per image (into the dataset's classNames). */
  labels: Uint8Array;
  n: number;
  /** Index of each image in its source (CIFAR-10: train 0..49999, test 0..9999; a folder: its file list). */
  indices: Int32Array;
  /** Side of the square images in pixels (absent: 32, CIFAR-10). */
  size?: number;
  /** How many classes the dataset has, whether or not all appear here (absent: 10, CIFAR-10). */
  classes?: number;
}

/** The dataset's class count a set carries (10 for CIFAR-10's). */
export const classesOfSet = (set: Pick<ImageSet, 'classes'>): number => set.classes ?? 10;

/** CIFAR-10's side. */
export const CIFAR_SIDE = 32;

/** Bytes of one size x size RGB image. */
export const imageBytes = (size: number): number => size * size * 3;

/** The side of a set's images. */
export const sideOfSet = (set: Pick<ImageSet, 'size'>): number => set.size ?? CIFAR_SIDE;

/**
 * The side of `n` square RGB images held in `bytes` bytes (32 when n is 0). Throws one line when the buffer is not
 * n whole square images: a wrong count or a non-square buffer never gets silently reinterpreted.
 */
export function sideOf(bytes: number, n: number, what = 'pixel buffer'): number {
  if (!(Number.isInteger(n) && n >= 0)) throw new Error(`${what}: image count ${n} is not a whole number`);
  if (n === 0) return CIFAR_SIDE;
  const per = bytes / n / 3;
  const side = Math.round(Math.sqrt(per));
  if (!(Number.isInteger(per) && side * side === per && side > 0)) {
    throw new Error(`${what}: ${bytes} bytes is not ${n} square RGB images (expected n=${n} x size x size x 3 bytes, e.g. ${n * 3072} at 32x32)`);
  }
  return side;
}

/** Number of classes the labels use (largest label + 1), at least `atLeast`. */
export function classCountOf(labels: ArrayLike<number>, atLeast = 0): number {
  let k = atLeast;
  for (let i = 0; i < labels.length; i++) if (labels[i] + 1 > k) k = labels[i] + 1;
  return k;
}
