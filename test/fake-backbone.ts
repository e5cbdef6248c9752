// A tiny, deterministic (seeded) stand-in for mobilenet_v1_0.75 (same layer names where the loader looks, 768 features, real BN layers
// with non-trivial statistics), written to a temp folder in tfjs layers format: loader, folding, errors and the
// feature engine can be tested without the real weights.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { BACKBONES } from '../lib/features/backbones';
import { rng } from '../lib/util/random';

export async function writeFakeBackbone(root?: string): Promise<string> {
  root = root ?? fs.mkdtempSync(path.join(os.tmpdir(), 'fake-backbones-'));
  const r = rng(7);
  const input = tf.input({ shape: [null, null, 3] as any, name: 'input_1' });
  let x = tf.layers.conv2d({ filters: 16, kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'conv1', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }).apply(input) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'conv1_bn', epsilon: 0.001 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'relu6', name: 'conv1_relu' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', useBias: false, name: 'conv_dw_1', depthwiseInitializer: tf.initializers.glorotUniform({ seed: 2 }) }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'conv_dw_1_bn', epsilon: 0.001 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'relu6', name: 'conv_dw_1_relu' }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.conv2d({ filters: 768, kernelSize: 1, useBias: false, name: 'conv_pw_13', kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.batchNormalization({ name: 'conv_pw_13_bn', epsilon: 0.001 }).apply(x) as tf.SymbolicTensor;
  x = tf.layers.activation({ activation: 'relu6', name: 'conv_pw_13_relu' }).apply(x) as tf.SymbolicTensor;
  // A classifier top the loader must cut off.
  let top = tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d_1' }).apply(x) as tf.SymbolicTensor;
  top = tf.layers.dense({ units: 10, activation: 'softmax', name: 'preds', kernelInitializer: tf.initializers.glorotUniform({ seed: 4 }) }).apply(top) as tf.SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: top });
  // Random BN statistics, so folding has something to get wrong.
  for (const l of model.layers) {
    if (l.getClassName() !== 'BatchNormalization') continue;
    l.setWeights(l.getWeights().map((w, i) => {
      const vals = Array.from({ length: w.size }, () => (i === 3 ? 0.2 + r() : i === 0 ? 0.5 + r() : r() - 0.5));
      return tf.tensor(vals, w.shape);
    }));
  }
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler(async (a) => {
    saved = a;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  const folder = path.join(root, BACKBONES['mobilenet_v1_0.75'].folder);
  fs.mkdirSync(folder, { recursive: true });
  const data = Buffer.from(saved!.weightData as ArrayBuffer);
  // Two shards, as tfjs writes big groups: the first a fixed size, the last shorter.
  const cut = Math.floor(data.length / 2 / 4) * 4;
  fs.writeFileSync(path.join(folder, 'group1-shard1of2.bin'), data.subarray(0, cut));
  fs.writeFileSync(path.join(folder, 'group1-shard2of2.bin'), data.subarray(cut));
  fs.writeFileSync(path.join(folder, 'model.json'), JSON.stringify({
    format: 'layers-model',
    modelTopology: saved!.modelTopology,
    weightsManifest: [{ paths: ['group1-shard1of2.bin', 'group1-shard2of2.bin'], weights: saved!.weightSpecs }],
  }));
  model.dispose();
  return root;
}

/** Deterministic pseudo-images (n x 32x32x3 uint8). */
export function fakeImages(n: number, seed = 1): Uint8Array {
  const r = rng(seed);
  return Uint8Array.from({ length: n * 3072 }, () => Math.floor(r() * 256));
}
