// Backbone input preparation: uint8 NHWC (CIFAR 32x32) -> float in [-1, 1] at the backbone's resolution.
// One function for the feature engine and one serialisable layer for the saved end-to-end model, sharing the
// same arithmetic so both paths give the same features.
import * as tf from '@tensorflow/tfjs';
import { sideOf } from './image-set';

/** 160 px: MobileNetV2 features classify CIFAR-10 about as well as at 224, at half the cost. */
export const DEFAULT_RESOLUTION = 160;

/**
 * Scale to [-1, 1] then bilinear-resize (half-pixel centres, as Keras' tf.image.resize). Normalising first is
 * exact (resizing is linear with weights summing to 1) and touches 32x32 pixels instead of 160x160.
 */
function resizeNormalize(images: tf.Tensor4D, size: number): tf.Tensor4D {
  return tf.tidy(() => {
    const x = tf.sub(tf.div(tf.cast(images, 'float32'), 127.5), 1) as tf.Tensor4D;
    if (x.shape[1] === size && x.shape[2] === size) return x;
    return tf.image.resizeBilinear(x, [size, size], false, true);
  });
}

function checkResolution(resolution: number): void {
  if (!Number.isInteger(resolution) || resolution < 32 || resolution > 1024) {
    throw new Error(`resolution ${resolution}: expected an integer number of pixels in 32..1024`);
  }
}

/** images: NHWC, uint8/int32 or float 0..255 -> float32 [N, resolution, resolution, 3] in [-1, 1]. */
export function preprocess(images: tf.Tensor4D, resolution: number = DEFAULT_RESOLUTION): tf.Tensor4D {
  checkResolution(resolution);
  if (images.rank !== 4 || images.shape[3] !== 3) {
    throw new Error(`preprocess: expected NHWC images with 3 channels, got shape [${images.shape.join(', ')}]`);
  }
  return resizeNormalize(images, resolution);
}

/** Pixels of a uint8 NHWC batch of square images (32x32 CIFAR-10, or a folder's at the backbone's input) as a float tensor (no copy through int32). */
export function pixelsToTensor(images: Uint8Array, n: number, h = sideOf(images.length, n), w = h): tf.Tensor4D {
  if (images.length !== n * h * w * 3) {
    throw new Error(`pixel buffer has ${images.length} bytes, expected ${n}x${h}x${w}x3 = ${n * h * w * 3}`);
  }
  return tf.tensor4d(Float32Array.from(images), [n, h, w, 3], 'float32');
}

export interface ResizeNormalizeArgs {
  size: number;
  name?: string;
  trainable?: boolean;
  inputShape?: number[];
  batchInputShape?: (number | null)[];
  dtype?: tf.DataType;
}

/** Keras-style layer doing `preprocess` inside a LayersModel; saved/loaded by name via registerClass. */
export class ResizeNormalize extends tf.layers.Layer {
  static className = 'ResizeNormalize';
  readonly size: number;

  constructor(args: ResizeNormalizeArgs) {
    super(args as any);
    checkResolution(args.size);
    this.size = args.size;
    this.trainable = false;
  }

  computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const s = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    return [s[0], this.size, this.size, s[3]];
  }

  call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
    return resizeNormalize(x, this.size);
  }

  getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), size: this.size };
  }
}
tf.serialization.registerClass(ResizeNormalize);
