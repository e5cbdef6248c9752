// The fine-tuned weights, cached by everything that determines them. Fine-tuning is the expensive step of the main
// job once the activations are cached (minutes per epoch on two cores), and it is a function of its inputs: the
// images and labels of the training and validation splits, the backbones' weights, the resolution, the cuts, the
// training views, the resolved configuration (seed included) and the training code's version. A re-run with the
// same inputs loads the result (and the run it came from) instead of repeating the arithmetic; any change to an
// input is a new key. `--retrain` trains again regardless (and replaces the entry).
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { writeFileAtomic } from '../util/atomic';
import { backboneFingerprint, backboneFolder, BackboneName } from '../features/backbones';
import { ImageSet } from '../data/cifar10';
import { EXTRACTOR_VERSION, imageKeys } from '../features/features';
import { TrainResult } from './training-loop';

/** Bump when fine-tuning's arithmetic changes (trainer, graph, sampling): older entries stop matching. */
export const FINE_TUNE_VERSION = 'fine-tune-v3-graph';

export interface FineTuneInputs {
  train: ImageSet;
  val: ImageSet;
  backbones: BackboneName[];
  cuts: (string | null)[];
  resolution: number;
  views: string[];
  /** The resolved FineTuneConfig. */
  config: object;
  backbonesDir?: string;
}

/** The cache key of a fine-tuning run: a hash over its inputs (pixels by md5, backbones by fingerprint). */
export async function fineTuneKey(x: FineTuneInputs): Promise<string> {
  const h = crypto.createHash('sha256');
  h.update(FINE_TUNE_VERSION).update(EXTRACTOR_VERSION);
  for (const s of [x.train, x.val]) {
    h.update(String(s.n)).update(imageKeys(s.images, s.n)).update(s.labels.subarray(0, s.n));
  }
  for (const b of x.backbones) h.update(b).update(backboneFingerprint(await backboneFolder(b, x.backbonesDir)));
  h.update(JSON.stringify({ cuts: x.cuts, resolution: x.resolution, views: x.views, config: x.config }));
  return h.digest('hex').slice(0, 20);
}

export type StoredResult = Omit<TrainResult, 'head'>;

interface Meta {
  key: string;
  shapes: number[][];
  result: StoredResult;
  savedAt: string;
}

const folder = (root: string, key: string) => path.join(root, 'fine-tuned', key);

/** The cached weights (trainer order) and training result for `key`, or null (absent or unreadable: retrain). */
export function loadFineTuned(root: string, key: string, warn: (m: string) => void = console.warn): { weights: tf.Tensor[]; result: StoredResult; savedAt: string } | null {
  const dir = folder(root, key);
  const metaFile = path.join(dir, 'meta.json');
  if (!fs.existsSync(metaFile)) return null;
  try {
    const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as Meta;
    const bytes = fs.readFileSync(path.join(dir, 'weights.bin'));
    const total = meta.shapes.reduce((a, s) => a + s.reduce((p, q) => p * q, 1), 0);
    if (meta.key !== key || bytes.length !== total * 4) throw new Error(`weights.bin has ${bytes.length} bytes, expected ${total * 4}`);
    const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    let off = 0;
    const weights = meta.shapes.map((s) => {
      const n = s.reduce((p, q) => p * q, 1);
      const t = tf.tensor(all.subarray(off, off + n), s, 'float32');
      off += n;
      return t;
    });
    return { weights, result: meta.result, savedAt: meta.savedAt };
  } catch (err) {
    warn(`fine-tuned cache ${dir} is unreadable (${err instanceof Error ? err.message : err}): training again`);
    return null;
  }
}

/** Store weights + result under `key` (weights first, meta last, each atomically: a half entry is never read). */
export async function storeFineTuned(root: string, key: string, weights: tf.Tensor[], result: StoredResult): Promise<string> {
  const dir = folder(root, key);
  fs.mkdirSync(dir, { recursive: true });
  fs.rmSync(path.join(dir, 'meta.json'), { force: true });
  const parts = await Promise.all(weights.map((w) => w.data() as Promise<Float32Array>));
  writeFileAtomic(path.join(dir, 'weights.bin'), Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))));
  const meta: Meta = { key, shapes: weights.map((w) => w.shape), result, savedAt: new Date().toISOString() };
  writeFileAtomic(path.join(dir, 'meta.json'), JSON.stringify(meta, null, 1));
  return dir;
}
