// The classifier: the seed's head on cached backbone features, and the assembled end-to-end inference model
// (square pixels — 32x32 for CIFAR-10, a folder's at the backbone's input — -> resize/normalise -> frozen backbone(s) -> head) saved in tfjs layers format with metadata.
import { NUM_CLASSES } from '../data/cifar10';
import { CIFAR_SIDE, imageBytes, sideOf } from '../data/image-set';
import * as tf from '@tensorflow/tfjs';
import * as fs from 'fs';
import * as path from 'path';
import { execFileSync } from 'child_process';
import { writeFileAtomic, writeJsonAtomic } from '../util/atomic';
import { mapRowBatches } from '../engine/batches';
import { BackboneName, BACKBONES, loadBackbone, readModelJson, readWeights } from '../features/backbones';
import { ensureSavedModel, FrozenGraph, loadFrozenGraph } from '../engine/graph';
import { dataDir, PROJECT_ROOT } from '../settings/paths';
import { ResizeNormalize } from '../data/preprocess';

export { NUM_CLASSES };

export interface HeadConfig {
  /** Feature size D (sum over concatenated backbones). */
  inputDim: number;
  /** Width of the hidden ReLU layer. */
  units: number;
  /** Dropout after BatchNormalization (on the features). */
  dropout: number;
  /** Dropout after the hidden layer (default: same as `dropout`). */
  dropout2?: number;
  numClasses?: number;
  /** Seeds the Glorot initialisers so a run is reproducible. */
  seed?: number;
}

/** Keras' BatchNormalization defaults (tfjs uses the same): the trainer must match them exactly. */
export const BN_EPSILON = 1e-3;
export const BN_MOMENTUM = 0.99;

/** Layer names are fixed: the trainer and the assembled model address head weights by position in this order. */
export const HEAD_LAYER_NAMES = ['head_bn', 'head_dropout1', 'head_dense', 'head_dropout2', 'head_out'] as const;

/** The head's layers, not yet connected: BN -> Dropout -> Dense(ReLU) -> Dropout -> Dense(softmax). */
export function headLayers(cfg: HeadConfig): tf.layers.Layer[] {
  const seed = cfg.seed ?? 1;
  return [
    tf.layers.batchNormalization({ name: HEAD_LAYER_NAMES[0], epsilon: BN_EPSILON, momentum: BN_MOMENTUM }),
    tf.layers.dropout({ name: HEAD_LAYER_NAMES[1], rate: cfg.dropout }),
    tf.layers.dense({
      name: HEAD_LAYER_NAMES[2],
      units: cfg.units,
      activation: 'relu',
      kernelInitializer: tf.initializers.glorotUniform({ seed }),
    }),
    tf.layers.dropout({ name: HEAD_LAYER_NAMES[3], rate: cfg.dropout2 ?? cfg.dropout }),
    tf.layers.dense({
      name: HEAD_LAYER_NAMES[4],
      units: cfg.numClasses ?? NUM_CLASSES,
      activation: 'softmax',
      kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }),
    }),
  ];
}

function applyLayers(layers: tf.layers.Layer[], x: tf.SymbolicTensor): tf.SymbolicTensor {
  for (const l of layers) x = l.apply(x) as tf.SymbolicTensor;
  return x;
}

/** The head as its own model on features [N, D] -> class probabilities [N, 10]. */
export function buildHead(cfg: HeadConfig): tf.LayersModel {
  const input = tf.input({ shape: [cfg.inputDim], name: 'features' });
  return tf.model({ inputs: input, outputs: applyLayers(headLayers(cfg), input), name: 'head' });
}

/**
 * Head weights in layer order: BN gamma, beta, moving mean, moving variance, hidden kernel, bias, output kernel,
 * bias. (model.getWeights() lists trainable weights first, so it is not this order.) Works on the head model and on
 * the assembled model alike.
 */
export function headWeights(model: tf.LayersModel): tf.Tensor[] {
  return [HEAD_LAYER_NAMES[0], HEAD_LAYER_NAMES[2], HEAD_LAYER_NAMES[4]].flatMap((n) => model.getLayer(n).getWeights());
}

/** Inverse of headWeights. */
export function setHeadWeights(model: tf.LayersModel, ws: tf.Tensor[]): void {
  if (ws.length !== 8) throw new Error(`setHeadWeights: expected 8 tensors (BN x4, dense x2, out x2), got ${ws.length}`);
  model.getLayer(HEAD_LAYER_NAMES[0]).setWeights(ws.slice(0, 4));
  model.getLayer(HEAD_LAYER_NAMES[2]).setWeights(ws.slice(4, 6));
  model.getLayer(HEAD_LAYER_NAMES[4]).setWeights(ws.slice(6, 8));
}

/** Read the head's hyper-parameters back from a built head model (for assembling and metadata). */
export function headConfigOf(head: tf.LayersModel): HeadConfig {
  const bn = head.getLayer(HEAD_LAYER_NAMES[0]);
  const d1 = head.getLayer(HEAD_LAYER_NAMES[1]).getConfig();
  const dense = head.getLayer(HEAD_LAYER_NAMES[2]).getConfig();
  const d2 = head.getLayer(HEAD_LAYER_NAMES[3]).getConfig();
  const out = head.getLayer(HEAD_LAYER_NAMES[4]).getConfig();
  const inShape = bn.batchInputShape ?? (head.inputs[0].shape as number[]);
  return {
    inputDim: inShape[inShape.length - 1] as number,
    units: dense.units as number,
    dropout: d1.rate as number,
    dropout2: d2.rate as number,
    numClasses: out.units as number,
  };
}

export interface AssembleOptions {
  backbones: BackboneName[];
  resolution: number;
  /** A trained head (from the trainer); its weights are copied into the assembled model. */
  head: tf.LayersModel;
  /** Where backbone weights live (default: BACKBONES_DIR / data/models, see lib/backbones). */
  backbonesDir?: string;
  /** Already-loaded backbones (same order as `backbones`), to avoid loading twice. */
  loaded?: tf.LayersModel[];
  /** Side of the square input pixels (default 32, CIFAR-10). */
  imageSize?: number;
}

/**
 * One LayersModel: uint8-valued float pixels [N, imageSize, imageSize, 3] -> ResizeNormalize -> frozen backbone(s) (features
 * concatenated in `backbones` order, as the trainer concatenates cached features) -> head (softmax [N, 10]).
 * Backbones are nested as layers (each a functional model), so it saves and loads as one tfjs model.
 */
export async function assembleModel(opts: AssembleOptions): Promise<tf.LayersModel> {
  if (opts.backbones.length === 0) throw new Error('assembleModel: at least one backbone is required');
  const cfg = headConfigOf(opts.head);
  const dims = opts.backbones.map((b) => BACKBONES[b].featureSize);
  const total = dims.reduce((a, b) => a + b, 0);
  if (total !== cfg.inputDim) {
    throw new Error(`assembleModel: backbones ${opts.backbones.join('+')} give ${total} features but the head expects ${cfg.inputDim}`);
  }
  const models = opts.loaded ?? (await Promise.all(opts.backbones.map((b) => loadBackbone(b, { dir: opts.backbonesDir }))));
  const side = opts.imageSize ?? CIFAR_SIDE;
  const input = tf.input({ shape: [side, side, 3], name: 'pixels' });
  const x = new ResizeNormalize({ size: opts.resolution, name: 'resize_normalize' }).apply(input) as tf.SymbolicTensor;
  const feats = models.map((m) => {
    // Per layer too: a nested model's own flag is not serialised, its layers' flags are (the reload stays frozen).
    for (const l of m.layers) l.trainable = false;
    m.trainable = false;
    return m.apply(x) as tf.SymbolicTensor;
  });
  const f = feats.length === 1 ? feats[0] : (tf.layers.concatenate({ name: 'features_concat', axis: -1 }).apply(feats) as tf.SymbolicTensor);
  const layers = headLayers(cfg);
  const out = applyLayers(layers, f);
  const model = tf.model({ inputs: input, outputs: out, name: 'cifar10_classifier' });
  setHeadWeights(model, headWeights(opts.head));
  return model;
}

// ---------------------------------------------------------------------------------------------------------------
// Saving and loading through a file IOHandler: the wasm backend has no file:// scheme.

export const METADATA_FILE = 'metadata.json';
const WEIGHTS_FILE = 'weights.bin';

export interface ModelMetadata {
  backbones: BackboneName[];
  resolution: number;
  classNames: string[];
  /** Side of the square pixels the model takes (absent: 32, CIFAR-10): predict resizes images to it. */
  imageSize?: number;
  /** What it was trained on: CIFAR-10, or a folder of class subfolders and how its images were fitted to the square. */
  dataset?: { kind: 'cifar10' | 'folder'; name: string; fit?: 'cover' | 'contain' };
  head: HeadConfig;
  /** Accuracy per labelled split, e.g. { validation: 0.91, 'test 0-999 (exact)': 0.915 }. */
  metrics: Record<string, number>;
  date: string;
  gitCommit: string | null;
  /** The experiment-log run that produced the head. */
  runId?: string;
  [extra: string]: unknown;
}

/** Current git commit, with "+dirty" when the tree has changes; null outside a repo or before the first commit. */
export function gitCommit(cwd: string = PROJECT_ROOT): string | null {
  try {
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return null;
  }
}

/** An IOHandler writing model.json + one weights.bin into `dir` (each file atomically). */
export function fileSaveHandler(dir: string): tf.io.IOHandler {
  return {
    save: async (a: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> => {
      if (a.modelTopology instanceof ArrayBuffer) throw new Error('fileSaveHandler: binary topologies are not supported');
      const data = a.weightData === undefined ? new ArrayBuffer(0) : tf.io.concatenateArrayBuffers(
        Array.isArray(a.weightData) ? a.weightData : [a.weightData],
      );
      writeFileAtomic(path.join(dir, WEIGHTS_FILE), new Uint8Array(data));
      const json = {
        modelTopology: a.modelTopology,
        format: a.format ?? 'layers-model',
        generatedBy: a.generatedBy,
        convertedBy: a.convertedBy ?? null,
        weightsManifest: [{ paths: [WEIGHTS_FILE], weights: a.weightSpecs ?? [] }],
      };
      writeJsonAtomic(path.join(dir, 'model.json'), json);
      return { modelArtifactsInfo: tf.io.getModelArtifactsInfoForJSON(a) };
    },
  };
}

/** An IOHandler reading a layers model from `dir`; shards are checked (present, right size) before tfjs sees them. */
export function fileLoadHandler(dir: string): tf.io.IOHandler {
  return {
    load: async (): Promise<tf.io.ModelArtifacts> => {
      const json = readModelJson(dir);
      const { specs, data } = readWeights(dir, json);
      return { modelTopology: json.modelTopology, weightSpecs: specs, weightData: data, format: json.format };
    },
  };
}

/** Save model + metadata JSON to `dir` (a model's own folder, lib/model/registry.ts). */
export async function saveModel(model: tf.LayersModel, meta: ModelMetadata, dir: string): Promise<string> {
  await model.save(fileSaveHandler(dir));
  writeJsonAtomic(path.join(dir, METADATA_FILE), meta);
  return dir;
}

/** Load a saved classifier and its metadata; needs only this lib (ResizeNormalize is registered by the import). The
 * model is checked against what its metadata says it is (classes, backbones, resolution, regime): a disagreement is
 * one line naming both sides, never a prediction. */
export async function loadModel(dir: string): Promise<{ model: tf.LayersModel; metadata: ModelMetadata }> {
  const metaFile = path.join(dir, METADATA_FILE);
  if (!fs.existsSync(path.join(dir, 'model.json'))) {
    throw new Error(`no saved model in ${dir} (model.json missing): run \`npm start\` first to train and save one`);
  }
  let metadata: ModelMetadata;
  try {
    metadata = JSON.parse(fs.readFileSync(metaFile, 'utf8'));
  } catch (err) {
    throw new Error(`${metaFile}: unreadable model metadata (${(err as Error).message.split('\n')[0]})`);
  }
  checkMetadata(metadata, metaFile);
  const artifacts = await fileLoadHandler(dir).load!();
  const model = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
  try {
    checkModelAgainstMetadata(model, metadata, dir);
  } catch (err) {
    model.dispose();
    throw err;
  }
  if (tf.getBackend() === 'tensorflow') await attachFrozenGraph(model, artifacts);
  return { model, metadata };
}

/** One line naming the file and the first field that is not what a saved classifier's metadata holds. */
function checkMetadata(m: unknown, file: string): asserts m is ModelMetadata {
  const bad = (field: string, expected: string) => new Error(`${file}: bad model metadata: "${field}" should be ${expected}`);
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw new Error(`${file}: bad model metadata: expected a JSON object`);
  const x = m as Record<string, any>;
  if (!Array.isArray(x.backbones) || x.backbones.length === 0 || !x.backbones.every((b: unknown) => typeof b === 'string' && b in BACKBONES)) {
    throw bad('backbones', `a non-empty list of ${Object.keys(BACKBONES).join(' / ')}`);
  }
  if (!Number.isInteger(x.resolution) || x.resolution < 32) throw bad('resolution', 'an integer >= 32');
  if (!Array.isArray(x.classNames) || !x.classNames.every((c: unknown) => typeof c === 'string')) throw bad('classNames', 'a list of class names');
  if (!x.head || typeof x.head !== 'object' || !Number.isInteger(x.head.inputDim) || !Number.isInteger(x.head.units)) {
    throw bad('head', 'the head configuration ({ inputDim, units, dropout, ... })');
  }
  if (x.imageSize !== undefined && !(Number.isInteger(x.imageSize) && x.imageSize >= 8 && x.imageSize <= 4096)) throw bad('imageSize', 'a whole number of pixels, 8-4096');
  if (x.dataset !== undefined && !(x.dataset && ['cifar10', 'folder'].includes(x.dataset.kind) && typeof x.dataset.name === 'string' && [undefined, 'cover', 'contain'].includes(x.dataset.fit))) {
    throw bad('dataset', '{ kind: "cifar10" | "folder", name, fit?: "cover" | "contain" }');
  }
}

/** The side of the square pixels a saved model takes (its metadata's imageSize; 32 for CIFAR-10 models). */
export const imageSizeOf = (meta: Pick<ModelMetadata, 'imageSize'>): number => meta.imageSize ?? CIFAR_SIDE;

/**
 * The model's own shape must be what the metadata says: as many outputs as class names, the head's input the sum of
 * the named backbones' features, the resize layer at the named resolution, and one trainable-block count per
 * backbone in the regime. A class list edited to 5 names for a 10-way model must not print "6 67.2%".
 */
export function checkModelAgainstMetadata(model: tf.LayersModel, meta: ModelMetadata, dir: string): void {
  const file = path.join(dir, METADATA_FILE);
  const outputs = model.outputs[0].shape[model.outputs[0].shape.length - 1];
  if (outputs !== meta.classNames.length) {
    throw new Error(`${file}: ${meta.classNames.length} class names, but the model in ${dir} has ${outputs} outputs`);
  }
  if (new Set(meta.classNames).size !== meta.classNames.length) throw new Error(`${file}: class names repeat (${meta.classNames.join(', ')})`);
  const features = meta.backbones.reduce((a, b) => a + BACKBONES[b].featureSize, 0);
  if (meta.head.inputDim !== features) {
    throw new Error(`${file}: backbones ${meta.backbones.join(' + ')} give ${features} features, but its head.inputDim says ${meta.head.inputDim}`);
  }
  const bn = model.layers.find((l) => l.name === HEAD_LAYER_NAMES[0]);
  const headIn = bn ? (bn.getWeights()[0]?.shape[0] as number | undefined) : undefined;
  if (headIn !== undefined && headIn !== features) {
    throw new Error(`${file}: backbones ${meta.backbones.join(' + ')} give ${features} features, but the model in ${dir} has a head on ${headIn}`);
  }
  const inShape = model.inputs[0].shape;
  if (inShape[1] !== imageSizeOf(meta) || inShape[2] !== imageSizeOf(meta)) {
    throw new Error(`${file}: images of ${imageSizeOf(meta)}x${imageSizeOf(meta)} px${meta.imageSize === undefined ? ' (no imageSize: CIFAR-10)' : ''}, but the model in ${dir} takes ${inShape[1]}x${inShape[2]}`);
  }
  const resize = model.layers.find((l) => l.getClassName() === 'ResizeNormalize');
  const size = resize ? (resize.getConfig().size as number) : undefined;
  if (size !== undefined && size !== meta.resolution) {
    throw new Error(`${file}: resolution ${meta.resolution} px, but the model in ${dir} resizes to ${size} px`);
  }
  const nested = model.layers.filter((l) => l instanceof tf.LayersModel).length;
  if (nested && nested !== meta.backbones.length) {
    throw new Error(`${file}: backbones ${meta.backbones.join(' + ')} (${meta.backbones.length}), but the model in ${dir} nests ${nested}`);
  }
  const regime = meta.regime as { trainableBlocks?: unknown } | undefined;
  if (regime?.trainableBlocks !== undefined) {
    const b = regime.trainableBlocks;
    if (!Array.isArray(b) || b.length !== meta.backbones.length || !b.every((k) => Number.isInteger(k) && k >= 0)) {
      throw new Error(`${file}: regime.trainableBlocks ${JSON.stringify(b)} should be one whole number per backbone (${meta.backbones.join(', ')})`);
    }
  }
}

/** Saved classifiers loaded on the tensorflow backend, with their frozen TF graph (see predictPixels). */
const frozenGraphs = new WeakMap<tf.LayersModel, FrozenGraph>();

/**
 * Give `model` a frozen TF graph of itself (written once per content hash under data/cache/graphs): predictPixels
 * then runs pixels -> probabilities in one TF session call, ~2x faster than op-by-op eager execution.
 */
/** True when predictPixels runs `model` through a frozen TF graph. */
export function usesFrozenGraph(model: tf.LayersModel): boolean {
  return frozenGraphs.has(model);
}

export async function attachFrozenGraph(model: tf.LayersModel, a: tf.io.ModelArtifacts): Promise<void> {
  const data = Array.isArray(a.weightData) ? tf.io.concatenateArrayBuffers(a.weightData) : a.weightData;
  if (!a.modelTopology || !a.weightSpecs || !data) throw new Error('attachFrozenGraph: model artifacts without topology or weights');
  const side = model.inputs[0].shape[1] as number;
  const dir = ensureSavedModel({ topology: a.modelTopology, weightSpecs: a.weightSpecs, weightData: data, inputShape: [side, side, 3] }, dataDir('cache', 'graphs'), 'classifier');
  frozenGraphs.set(model, await loadFrozenGraph(dir));
}

/**
 * Class probabilities for uint8 NHWC pixels at the model's input size, in batches (keeps memory flat on large sets).
 * Returns a flat Float32Array [n * numClasses].
 */
export async function predictPixels(model: tf.LayersModel, pixels: Uint8Array, n: number, batchSize?: number): Promise<Float32Array> {
  const k = (model.outputs[0].shape[1] as number) ?? NUM_CLASSES;
  const graph = frozenGraphs.get(model);
  // 64 images per TF graph call (measured fastest); 32 eager: a MobileNet at 160 px holds ~2.5 MB of activations
  // per image per layer, and wasm's heap tops out at 4 GB.
  const step = batchSize ?? (graph ? 64 : 32);
  const side = sideOf(pixels.length, n, 'predictPixels: pixels');
  const wants = model.inputs[0].shape[1];
  if (n > 0 && side !== wants) throw new Error(`predictPixels: images are ${side}x${side} px, the model takes ${wants}x${wants}`);
  const per = imageBytes(side);
  return mapRowBatches(n, step, k, (s, m) => {
    const x = tf.tensor4d(Float32Array.from(pixels.subarray(s * per, (s + m) * per)), [m, side, side, 3]);
    if (graph) return graph.predict(x);
    return model.predict(x, { batchSize: m }) as tf.Tensor; // one pass: predict's own batching slices per 32
  });
}
