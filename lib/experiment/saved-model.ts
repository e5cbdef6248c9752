// Reading a saved model the way it says it is: notebook 06, `npm run predict`, the report, the demo page and the
// Keras export all open it here. The model is named (current, a model id, or a folder) and says which one was
// loaded; its metadata decides the splits it is judged on (its own limits and split seed) and its regime; and its
// evaluation goes through the model itself, pixels -> probabilities, so a fine-tuned model is never scored on a
// frozen backbone's features.
import * as tf from '@tensorflow/tfjs';
import { imageBytes, sideOf } from '../data/image-set';
import type { Cifar10 } from '../data/cifar10';
import type { Dataset } from '../data/dataset';
import { flipHorizontal } from '../data/augment';
import { mapRowBatches } from '../engine/batches';
import { HEAD_LAYER_NAMES, imageSizeOf, ModelMetadata, predictPixels } from '../model/classifier';
import { ModelRef, resolveModel } from '../model/registry';
import { ExperimentConfig } from '../settings/config';
import { modelsDir } from '../settings/paths';
import { percent } from '../util/format';
import { progress, ProgressSink } from '../util/progress';
import { evaluateSplits, Evaluations, experimentSplits, loadClassifier, SplitProbabilities, Splits } from './pipeline';

export interface SavedModel {
  model: tf.LayersModel;
  head: tf.LayersModel;
  metadata: ModelMetadata;
  ref: ModelRef;
  /** "model 2026...-fine-tune-mobilenet_v2-top5 (current) from models/...: ..." */
  line: string;
}

/** The regime a saved model records (models saved before regimes were recorded are frozen). */
export function savedRegime(meta: ModelMetadata): { name: string; trainableBlocks: number[] } {
  const r = (meta.regime ?? {}) as { name?: string; trainableBlocks?: number[] };
  return { name: r.name ?? 'frozen', trainableBlocks: r.trainableBlocks ?? meta.backbones.map(() => 0) };
}

/** Load the saved model named by the `model` setting (default: the current one) from the `models` folder. */
export async function loadSavedModel(s: Pick<ExperimentConfig, 'models' | 'model'>, cwd?: string): Promise<SavedModel> {
  const ref = resolveModel(modelsDir(s.models), s.model, cwd);
  const { model, head, metadata } = await loadClassifier(ref.dir);
  const val = metadata.metrics?.['validation + TTA'] ?? metadata.metrics?.validation;
  const line = `loaded model ${ref.id} (${ref.via === 'current' ? 'the current model' : ref.via === 'id' ? 'by id' : 'a folder'}) from ${ref.dir}: ` +
    `${savedRegime(metadata).name}, ${metadata.backbones.join(' + ')} @ ${metadata.resolution}px, ${metadata.classNames.length} classes` +
    `${metadata.dataset?.kind === 'folder' ? ` of ${metadata.dataset.name} (${metadata.classNames.slice(0, 6).join(', ')}${metadata.classNames.length > 6 ? ', …' : ''}; ${imageSizeOf(metadata)}x${imageSizeOf(metadata)} ${metadata.dataset.fit ?? 'cover'})` : ''}` +
    `${val !== undefined ? `, validation ${percent(val)} when saved` : ''}; trained ${metadata.date}${metadata.runId ? `, run ${metadata.runId}` : ''}`;
  return { model, head, metadata, ref, line };
}

/** The data settings a model was trained and judged with (its limits and split seed), from its metadata. */
const DATA_KEYS = ['dataset', 'fit', 'valFraction', 'testFraction', 'trainLimit', 'valLimit', 'testLimit', 'splitSeed', 'backbones', 'resolution', 'tta'] as const;

/**
 * The settings to judge a saved model with: `settings`, with the data settings the model recorded taking their
 * place (so a smoke model is judged on its own small splits), and one line naming every value that differed.
 */
export function settingsOfModel<T extends Pick<ExperimentConfig, (typeof DATA_KEYS)[number]>>(settings: T, meta: ModelMetadata): { settings: T; note?: string } {
  const recorded = (meta.config ?? {}) as Partial<ExperimentConfig>;
  const out = { ...settings, backbones: [...meta.backbones], resolution: meta.resolution } as T;
  const differ: string[] = [];
  for (const k of DATA_KEYS) {
    // A model saved before datasets were recorded was trained on CIFAR-10: judged on it, whatever DATASET says.
    const v = k === 'backbones' ? meta.backbones : k === 'resolution' ? meta.resolution
      : k === 'dataset' && recorded.dataset === undefined && meta.dataset?.kind !== 'folder' ? 'cifar10' : recorded[k];
    if (v === undefined) continue;
    (out as Record<string, unknown>)[k] = v;
    if (JSON.stringify(v) !== JSON.stringify(settings[k])) differ.push(`${k} ${JSON.stringify(v)} (settings: ${JSON.stringify(settings[k])})`);
  }
  return { settings: out, note: differ.length ? `the model was trained with ${differ.join(', ')}: judged with its own` : undefined };
}

/** The splits a saved model is judged on: made from its own recorded limits and split seed. */
export function splitsOfModel(data: Dataset | Cifar10, s: Pick<ExperimentConfig, 'trainLimit' | 'valLimit' | 'testLimit' | 'splitSeed'>): Splits {
  return experimentSplits(data, s);
}

/** The saved model's probabilities for a set of images: plain, and plain + mirror averaged when `tta`. */
export async function modelProbabilities(model: tf.LayersModel, images: Uint8Array, n: number, tta: boolean, bar?: ProgressSink): Promise<SplitProbabilities> {
  const plain = await predictPixels(model, images, n);
  bar?.tick(n);
  if (!tta) return { plain };
  const flipped = await predictPixels(model, flipHorizontal(images.subarray(0, n * imageBytes(model.inputs[0].shape[1] as number)), n), n);
  bar?.tick(n);
  const avg = new Float32Array(plain.length);
  for (let i = 0; i < avg.length; i++) avg[i] = (plain[i] + flipped[i]) / 2;
  return { plain, tta: avg };
}

/**
 * The saved model judged on every labelled split through itself (pixels -> probabilities), with TTA as its
 * metadata says it was measured: the same table `npm start` printed, from the files alone.
 */
export async function evaluateSavedModel(saved: SavedModel, splits: Splits, tta: boolean): Promise<Evaluations> {
  const n = (splits.val.n + splits.testFull.n) * (tta ? 2 : 1);
  const bar = progress(`evaluating ${saved.ref.id} on pixels`, n, 'img');
  try {
    const val = await modelProbabilities(saved.model, splits.val.images, splits.val.n, tta, bar);
    const test = await modelProbabilities(saved.model, splits.testFull.images, splits.testFull.n, tta, bar);
    bar.done();
    return evaluateSplits({ val, test }, splits);
  } catch (err) {
    bar.done('failed');
    throw err;
  }
}

/** Where two accuracy tables differ (split, plain/TTA, both values); empty when they agree to every digit shown. */
export function metricDifferences(measured: Record<string, number>, recorded: Record<string, number> | undefined): string[] {
  if (!recorded) return ['the metadata records no accuracies'];
  const out: string[] = [];
  for (const [k, v] of Object.entries(measured)) {
    const r = recorded[k];
    if (r === undefined) out.push(`${k}: ${percent(v)} (not recorded)`);
    else if (percent(v) !== percent(r)) out.push(`${k}: ${percent(v)} now, ${percent(r)} when saved`);
  }
  return out;
}

/**
 * The features the saved model's head reads (the backbones' pooled outputs, fine-tuned blocks included), for
 * images: what the model really separates classes with (notebook 06's UMAP).
 */
export async function modelFeatures(model: tf.LayersModel, images: Uint8Array, n: number): Promise<{ data: Float32Array; dim: number }> {
  const input = model.getLayer(HEAD_LAYER_NAMES[0]).input as tf.SymbolicTensor;
  const sub = tf.model({ inputs: model.inputs, outputs: input });
  const dim = input.shape[input.shape.length - 1] as number;
  const side = sideOf(images.length, n, 'modelFeatures: images');
  const per = imageBytes(side);
  const data = await mapRowBatches(n, 32, dim, (s, m) =>
    sub.predict(tf.tensor4d(Float32Array.from(images.subarray(s * per, (s + m) * per)), [m, side, side, 3])) as tf.Tensor,
  );
  return { data, dim };
}
