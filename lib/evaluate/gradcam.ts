// Grad-CAM (Selvaraju et al. 2017) for the classifier: which part of the image made the head pick a class.
// For each frozen backbone, A = its last spatial feature map [N, h, w, C] (5x5 at 160 px); the head sees
// GlobalAveragePooling(A) of every backbone, concatenated. Weights alpha_k = mean over space of d(logit of the
// class) / dA_k, map = ReLU(sum_k alpha_k A_k), one map per backbone (the gradient reaches each backbone through
// its own slice of the concatenated features), normalised to [0, 1] by its maximum. Only pooling + head are
// differentiated (the backbones run forward once), so it works on every backend, wasm included (no conv backprop).
import { imageBytes, sideOf } from '../data/image-set';
import * as tf from '@tensorflow/tfjs';
import { BackboneName, BACKBONES } from '../features/backbones';
import { imageGrid } from './image-grid';
import { HEAD_LAYER_NAMES, headWeights, ModelMetadata } from '../model/classifier';
import { pixelsToTensor, preprocess } from '../data/preprocess';

/** A backbone cut at its last spatial map: float [N, H, W, 3] in [-1, 1] -> [N, h, w, C]. */
export interface SpatialBackbone {
  name: string;
  model: tf.LayersModel;
}

/** A LayersModel from `model`'s input to the output of its layer `layer` (e.g. the map before pooling). */
export function truncateAt(model: tf.LayersModel, layer: string): tf.LayersModel {
  const out = model.getLayer(layer).output as tf.SymbolicTensor;
  if (out.shape.length !== 4) throw new Error(`truncateAt: layer ${layer} gives shape [${out.shape.join(', ')}], expected a spatial map [N, h, w, C]`);
  return tf.model({ inputs: model.inputs, outputs: out, name: `${model.name}_to_${layer}` });
}

const hasLayer = (m: tf.LayersModel, name: string): boolean => m.layers.some((l) => l.name === name);

/**
 * The spatial backbones nested in a saved classifier (lib/model assembleModel), in the order their features are
 * concatenated (metadata.backbones): each is found as the nested model that holds the backbone's feature layer, so
 * the maps come from exactly the weights that produced the head's features.
 */
export function spatialBackbones(model: tf.LayersModel, backbones: BackboneName[]): SpatialBackbone[] {
  const nested = model.layers.filter((l): l is tf.LayersModel => l instanceof tf.LayersModel);
  const used = new Set<tf.LayersModel>();
  return backbones.map((name) => {
    const layer = BACKBONES[name].featureLayer;
    const m = nested.find((n) => !used.has(n) && hasLayer(n, layer));
    if (!m) throw new Error(`spatialBackbones: no nested backbone with layer ${layer} (${name}) in model ${model.name}`);
    used.add(m);
    return { name, model: truncateAt(m, layer) };
  });
}

/**
 * The head's pre-softmax scores: features [N, D] -> logits [N, K], in inference mode (BN with its moving
 * statistics, no dropout), from the head's own weights. Works on the head model and the assembled model alike.
 */
export function headLogits(model: tf.LayersModel): (features: tf.Tensor2D) => tf.Tensor2D {
  const [gamma, beta, mean, variance, k1, b1, k2, b2] = headWeights(model);
  const eps = model.getLayer(HEAD_LAYER_NAMES[0]).getConfig().epsilon as number;
  return (f) =>
    tf.tidy(() => {
      const x = tf.add(tf.mul(tf.div(tf.sub(f, mean), tf.sqrt(tf.add(variance, eps))), gamma), beta);
      const h = tf.relu(tf.add(tf.matMul(x as tf.Tensor2D, k1 as tf.Tensor2D), b1));
      return tf.add(tf.matMul(h as tf.Tensor2D, k2 as tf.Tensor2D), b2) as tf.Tensor2D;
    });
}

export interface GradCamResult {
  n: number;
  /** The class each map explains (per image). */
  classes: number[];
  /** Its logit per image. */
  scores: number[];
  /** Per backbone: name, map size, maps [n, h, w] row-major in [0, 1] (each image's map divided by its maximum;
   * all zeros when nothing in the map speaks for the class). */
  maps: { name: string; h: number; w: number; data: Float32Array }[];
}

/**
 * Grad-CAM maps for `input` (float [N, H, W, 3] in [-1, 1], as the backbones take it). `classes` defaults to each
 * image's predicted class (arg-max logit). Reads are async (`array()`/`data()`): webgpu in Node cannot read synchronously.
 */
export async function gradCam(opts: {
  backbones: SpatialBackbone[];
  logits: (features: tf.Tensor2D) => tf.Tensor2D;
  input: tf.Tensor4D;
  classes?: number[];
}): Promise<GradCamResult> {
  const n = opts.input.shape[0];
  if (!opts.backbones.length) throw new Error('gradCam: no backbones');
  if (opts.classes && opts.classes.length !== n) throw new Error(`gradCam: ${opts.classes.length} classes for ${n} images`);
  const maps = opts.backbones.map((b) => tf.tidy(() => b.model.predict(opts.input) as tf.Tensor4D));
  try {
    const pooledLogits = (as: tf.Tensor[]) => {
      const pooled = as.map((a) => tf.mean(a, [1, 2]) as tf.Tensor2D);
      return opts.logits(pooled.length === 1 ? pooled[0] : (tf.concat(pooled, 1) as tf.Tensor2D));
    };
    const logits = tf.tidy(() => pooledLogits(maps));
    const k = logits.shape[1];
    let all: number[][];
    try {
      all = (await logits.array()) as number[][];
    } finally {
      logits.dispose();
    }
    const classes = opts.classes ?? all.map((row) => row.indexOf(Math.max(...row)));
    classes.forEach((c) => {
      if (!(Number.isInteger(c) && c >= 0 && c < k)) throw new Error(`gradCam: class ${c} outside 0..${k - 1}`);
    });
    const scores = classes.map((c, i) => all[i][c]);
    const cams = tf.tidy(() => {
      const mask = tf.oneHot(tf.tensor1d(classes, 'int32'), k);
      // Images are independent (BN in inference mode), so the gradient of the sum is each image's own gradient.
      const grads = tf.grads((...as: tf.Tensor[]) => tf.sum(tf.mul(pooledLogits(as), mask)))(maps);
      return maps.map((a, b) => {
        const alpha = tf.mean(grads[b], [1, 2], true); // [N, 1, 1, C]
        const cam = tf.relu(tf.sum(tf.mul(a, alpha), 3)); // [N, h, w]
        const max = tf.max(cam, [1, 2], true);
        return tf.div(cam, tf.maximum(max, 1e-12));
      });
    });
    const result: GradCamResult['maps'] = [];
    try {
      for (const [b, c] of cams.entries()) {
        const [, h, w] = c.shape;
        result.push({ name: opts.backbones[b].name, h, w, data: (await c.data()) as Float32Array });
      }
    } finally {
      tf.dispose(cams);
    }
    return { n, classes, scores, maps: result };
  } finally {
    maps.forEach((m) => m.dispose());
  }
}

/** The saved classifier's Grad-CAM maps for uint8 pixels at its input size, per backbone (lib/pipeline loadClassifier). */
export async function classifierGradCam(
  clf: { model: tf.LayersModel; head: tf.LayersModel; metadata: Pick<ModelMetadata, 'backbones' | 'resolution'> },
  pixels: Uint8Array,
  n: number,
  classes?: number[],
): Promise<GradCamResult> {
  const backbones = spatialBackbones(clf.model, clf.metadata.backbones);
  const per = imageBytes(clf.model.inputs[0].shape[1] as number); // the first n images, at the model's input size
  const input = tf.tidy(() => preprocess(pixelsToTensor(pixels.subarray(0, n * per), n), clf.metadata.resolution));
  try {
    return await gradCam({ backbones, logits: headLogits(clf.head), input, classes });
  } finally {
    input.dispose();
    // The truncated models share the saved model's layers and weights: nothing of theirs to free.
  }
}

// ---- drawing ----

/** Bilinear resize of one [h, w] map to [H, W] (half-pixel centres, edges clamped: as tf.image.resizeBilinear). */
export function upsample(map: ArrayLike<number>, h: number, w: number, H: number, W: number): Float32Array {
  const out = new Float32Array(H * W);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(Math.max(((y + 0.5) * h) / H - 0.5, 0), h - 1);
    const y0 = Math.floor(sy);
    const y1 = Math.min(y0 + 1, h - 1);
    const fy = sy - y0;
    for (let x = 0; x < W; x++) {
      const sx = Math.min(Math.max(((x + 0.5) * w) / W - 0.5, 0), w - 1);
      const x0 = Math.floor(sx);
      const x1 = Math.min(x0 + 1, w - 1);
      const fx = sx - x0;
      const top = map[y0 * w + x0] * (1 - fx) + map[y0 * w + x1] * fx;
      const bottom = map[y1 * w + x0] * (1 - fx) + map[y1 * w + x1] * fx;
      out[y * W + x] = top * (1 - fy) + bottom * fy;
    }
  }
  return out;
}

/** The "jet" colour map: 0 -> dark blue, 0.5 -> green, 1 -> dark red. */
export function jet(t: number): [number, number, number] {
  const c = (v: number) => Math.round(255 * Math.min(Math.max(v, 0), 1));
  return [c(1.5 - Math.abs(4 * t - 3)), c(1.5 - Math.abs(4 * t - 2)), c(1.5 - Math.abs(4 * t - 1))];
}

/**
 * One square RGB image (side `side`, default 32) resized to `size` (nearest neighbour, as the other galleries) with `cam` ([h, w] in [0, 1])
 * upsampled bilinearly and blended over it in jet colours: opacity grows with the heat, so cold regions keep the
 * image visible and hot ones turn red.
 */
export function overlay(image: Uint8Array, cam: ArrayLike<number> | undefined, h: number, w: number, size: number, side = sideOf(image.length, 1)): Uint8Array {
  const heat = cam ? upsample(cam, h, w, size, size) : undefined;
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const sy = Math.floor((y * side) / size);
    for (let x = 0; x < size; x++) {
      const src = (sy * side + Math.floor((x * side) / size)) * 3;
      const o = (y * size + x) * 3;
      if (!heat) {
        out.set(image.subarray(src, src + 3), o);
        continue;
      }
      const t = heat[y * size + x];
      const a = 0.15 + 0.5 * t;
      const col = jet(t);
      for (let c = 0; c < 3; c++) out[o + c] = Math.round((1 - a) * image[src + c] + a * col[c]);
    }
  }
  return out;
}

/** Short caption names for backbones. */
const SHORT: Record<string, string> = { 'mobilenet_v1_0.75': 'V1', mobilenet_v2: 'V2' };

/**
 * A PNG grid with, per image, the image and then its map for each backbone (`perRow` images to a row, a wider gap
 * between images). Captions: `captions[i]` under the image, "<backbone>: <class explained>" under each map.
 */
export function gradCamGrid(
  pixels: Uint8Array,
  cams: GradCamResult,
  opts: { classNames: string[]; captions?: string[]; size?: number; perRow?: number; imageSize?: number },
): Buffer {
  const { n, maps } = cams;
  const size = opts.size ?? 128;
  const per = 1 + maps.length;
  const tiles = new Uint8Array(n * per * size * size * 3);
  const perImage = imageBytes(opts.imageSize ?? sideOf(pixels.length, n));
  const labels: string[] = [];
  for (let i = 0; i < n; i++) {
    const img = pixels.subarray(i * perImage, (i + 1) * perImage);
    const cls = opts.classNames[cams.classes[i]] ?? String(cams.classes[i]);
    tiles.set(overlay(img, undefined, 0, 0, size), i * per * size * size * 3);
    labels.push(opts.captions?.[i] ?? '');
    maps.forEach((m, b) => {
      tiles.set(overlay(img, m.data.subarray(i * m.h * m.w, (i + 1) * m.h * m.w), m.h, m.w, size), (i * per + b + 1) * size * size * 3);
      labels.push(`${SHORT[m.name] ?? m.name}: ${cls}`);
    });
  }
  return imageGrid(tiles, n * per, { h: size, w: size, scale: 1, cols: per * Math.min(opts.perRow ?? 2, n), labels, groupSize: per });
}
