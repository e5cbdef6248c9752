// One batch of pixels -> backbone features; used in-process and as the body of each feature-pool worker thread.
// Each worker owns a wasm backend and the compiled backbones it has been asked for (loaded once, kept). On the
// tensorflow backend the batch runs in-process through the backbone's frozen TF graph (lib/engine/graph.ts) instead.
import { isMainThread, parentPort, workerData } from 'worker_threads';
import * as tf from '@tensorflow/tfjs';
import { applyView } from '../data/augment';
import { BackboneName, backboneArtifacts, compileExtractor, FeatureExtractor } from './backbones';
import { prefixTopology } from '../model/trunk';
import { initBackend } from '../engine/backend';
import { ensureSavedModel, FrozenGraph, loadFrozenGraph } from '../engine/graph';
import { dataDir } from '../settings/paths';
import { pixelsToTensor, preprocess } from '../data/preprocess';
import { CIFAR_SIDE, sideOf } from '../data/image-set';

export interface BatchTask {
  backbone: BackboneName;
  backbonesDir?: string;
  /** backboneFingerprint of the weights: a compiled extractor or graph is reused only for the same weights. */
  weights: string;
  resolution: number;
  view: string;
  n: number;
  /** n x size x size x 3 uint8 (transferred, not copied, to the worker). */
  pixels: Uint8Array;
  /** Output the activation of this layer (flattened) instead of the pooled features. */
  cut?: string;
}

/** The backbone's artifacts, truncated at `cut` when given (the frozen bottom that fine-tuning caches). */
async function artifactsFor(backbone: BackboneName, backbonesDir: string | undefined, cut: string | undefined) {
  const a = await backboneArtifacts(backbone, { dir: backbonesDir });
  return cut ? { ...a, topology: prefixTopology(a.topology, cut) } : a;
}

const extractors = new Map<string, Promise<FeatureExtractor>>();

/** The compiled (BN-folded, fused) extractor for a backbone, loaded once per thread. */
export function getExtractor(backbone: BackboneName, weights: string, backbonesDir?: string, cut?: string): Promise<FeatureExtractor> {
  const key = `${backbone}|${weights}|${backbonesDir ?? ''}|${cut ?? ''}`;
  let p = extractors.get(key);
  if (!p) {
    p = artifactsFor(backbone, backbonesDir, cut).then(compileExtractor);
    p.catch(() => extractors.delete(key));
    extractors.set(key, p);
  }
  return p;
}

const graphs = new Map<string, Promise<FrozenGraph>>();

/** The backbone (resize + normalise + folded net + pooling) as a frozen TF graph, written once per weights hash. */
export function getFeatureGraph(backbone: BackboneName, weights: string, resolution: number, backbonesDir?: string, cut?: string, inputSide = CIFAR_SIDE): Promise<FrozenGraph> {
  const key = `${backbone}|${weights}|${resolution}|${backbonesDir ?? ''}|${cut ?? ''}|${inputSide}`;
  let p = graphs.get(key);
  if (!p) {
    p = artifactsFor(backbone, backbonesDir, cut).then((a) =>
      loadFrozenGraph(ensureSavedModel({ ...a, resizeTo: resolution, inputShape: [inputSide, inputSide, 3] }, dataDir('cache', 'graphs'), `${backbone}-r${resolution}${cut ? `-${cut}` : ''}${inputSide === CIFAR_SIDE ? '' : `-in${inputSide}`}`)),
    );
    p.catch(() => graphs.delete(key));
    graphs.set(key, p);
  }
  return p;
}

export async function extractBatch(task: BatchTask): Promise<Float32Array> {
  const viewed = applyView(task.pixels, task.n, task.view);
  if (tf.getBackend() === 'tensorflow') {
    const graph = await getFeatureGraph(task.backbone, task.weights, task.resolution, task.backbonesDir, task.cut, sideOf(task.pixels.length, task.n));
    const out = tf.tidy(() => graph.predict(pixelsToTensor(viewed, task.n)));
    try {
      return (await out.data()) as Float32Array;
    } finally {
      out.dispose();
    }
  }
  const extractor = await getExtractor(task.backbone, task.weights, task.backbonesDir, task.cut);
  const out = tf.tidy(() => extractor.predict(preprocess(pixelsToTensor(viewed, task.n), task.resolution)));
  try {
    const data = (await out.data()) as Float32Array;
    // Must own its whole buffer: it is transferred to the main thread (a view into wasm memory would detach it).
    return data.byteOffset === 0 && data.buffer.byteLength === data.byteLength ? data : data.slice();
  } finally {
    out.dispose();
  }
}

export const WORKER_ROLE = 'cifar10-feature-worker';

if (!isMainThread && workerData?.role === WORKER_ROLE && parentPort) {
  const port = parentPort;
  // Workers always use wasm: the pool exists only because wasm runs one thread per instance.
  const ready = initBackend({ prefer: 'wasm', log: () => {} });
  ready.then(
    () => port.postMessage({ type: 'ready' }),
    (err) => port.postMessage({ type: 'fatal', message: `worker backend: ${(err as Error).message}` }),
  );
  port.on('message', async (msg: { id: number; task: BatchTask }) => {
    try {
      await ready;
      const features = await extractBatch(msg.task);
      port.postMessage({ type: 'result', id: msg.id, features }, [features.buffer as ArrayBuffer]);
    } catch (err) {
      port.postMessage({ type: 'error', id: msg.id, message: (err as Error).message });
    }
  });
}
