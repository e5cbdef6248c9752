// Head-training speed: seconds per epoch over 45,000 cached features of 2,048 dims (v1 768 + v2 1280), for the
// hand-written trainer (lib/train/head-trainer.ts) against tfjs' own `fit` of the same head (extrapolated from a few batches:
// a full fit epoch takes ~40 s on wasm). Synthetic features: speed does not depend on their values.
// Run: npm run bench:train -- [--n 45000] [--dim 2048] [--units 256] [--batch 256] [--bn-affine]
// (`npm run bench` runs the same measurement on every backend, side by side.)
import * as os from 'os';
import * as tf from '@tensorflow/tfjs';
import { writeJsonAtomic } from '../lib/util/atomic';
import { parseCli, runCli } from '../lib/util/cli';
import { initBackend } from '../lib/engine/backend';
import { buildHead } from '../lib/model/classifier';
import { dataDir } from '../lib/settings/paths';
import { rng } from '../lib/util/random';
import { DEFAULT_TRAIN, HeadTrainer } from '../lib/train/head-trainer';
import { LabeledFeatures } from '../lib/features/labeled-features';

export interface HeadBench {
  n: number;
  dim: number;
  units: number;
  batchSize: number;
  bnAffine: boolean;
  /** Best of the timed epochs, and all of them. */
  trainerSeconds: number;
  trainerEpochs: number[];
  /** tfjs `fit` of the same head, scaled from 6 batches to an epoch. */
  fitSeconds: number;
}

/** Time the trainer (2 epochs after a warm-up) and tfjs fit on the current backend. */
export async function benchHead(o: Partial<Pick<HeadBench, 'n' | 'dim' | 'units' | 'batchSize' | 'bnAffine'>> = {}): Promise<HeadBench> {
  const n = o.n ?? 45000;
  const dim = o.dim ?? 2048;
  const units = o.units ?? DEFAULT_TRAIN.units;
  const batchSize = o.batchSize ?? DEFAULT_TRAIN.batchSize;
  const bnAffine = o.bnAffine ?? DEFAULT_TRAIN.bnAffine;
  const r = rng(1);
  const data = new Float32Array(n * dim);
  for (let i = 0; i < data.length; i++) data[i] = r() * 2;
  const d: LabeledFeatures = { views: [data], labels: Uint8Array.from({ length: n }, (_, i) => i % 10), n, dim };

  const trainer = new HeadTrainer(dim, { ...DEFAULT_TRAIN, units, batchSize, bnAffine });
  await trainer.trainEpoch({ ...d, n: batchSize * 4, views: [data.subarray(0, batchSize * 4 * dim)] }, 0); // warm-up
  const epochs: number[] = [];
  for (let e = 0; e < 2; e++) {
    const t0 = performance.now();
    await trainer.trainEpoch(d, e);
    epochs.push((performance.now() - t0) / 1000);
  }
  trainer.dispose();

  const head = buildHead({ inputDim: dim, units, dropout: DEFAULT_TRAIN.dropout });
  head.compile({ optimizer: tf.train.adam(DEFAULT_TRAIN.lr), loss: 'categoricalCrossentropy' });
  const m = batchSize * 6;
  const x = tf.tensor2d(data.subarray(0, m * dim), [m, dim]);
  const y = tf.oneHot(tf.tensor1d(Array.from(d.labels.subarray(0, m)), 'int32'), 10);
  await head.fit(x, y, { batchSize, epochs: 1, verbose: 0 }); // warm-up
  const t0 = performance.now();
  await head.fit(x, y, { batchSize, epochs: 1, verbose: 0 });
  const fitSeconds = ((performance.now() - t0) / 1000) * (n / m);
  tf.dispose([x, y]);
  head.dispose();
  return { n, dim, units, batchSize, bnAffine, trainerSeconds: Math.min(...epochs), trainerEpochs: epochs, fitSeconds };
}

async function main() {
  const { values } = parseCli({
    usage: 'npm run bench:train -- [options]',
    options: {
      n: { type: 'string', arg: 'rows', help: 'feature rows per epoch', default: '45000' },
      dim: { type: 'string', arg: 'd', help: 'feature size', default: '2048' },
      units: { type: 'string', arg: 'u', help: 'hidden units', default: String(DEFAULT_TRAIN.units) },
      batch: { type: 'string', arg: 'b', help: 'mini-batch size', default: String(DEFAULT_TRAIN.batchSize) },
      'bn-affine': { type: 'boolean', help: 'train BatchNorm scale/offset too' },
    },
  });
  const backend = await initBackend();
  const load = os.loadavg()[0];
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  const b = await benchHead({ n: num(values.n), dim: num(values.dim), units: num(values.units), batchSize: num(values.batch), bnAffine: values['bn-affine'] });
  console.log(`hand-written trainer: ${b.trainerEpochs.map((s) => s.toFixed(2)).join(' / ')} s per epoch (n=${b.n}, dim=${b.dim}, units=${b.units}, batch=${b.batchSize}, bnAffine=${b.bnAffine})`);
  console.log(`tfjs fit (extrapolated from 6 batches): ${b.fitSeconds.toFixed(1)} s per epoch — ${(b.fitSeconds / b.trainerSeconds).toFixed(1)}x slower`);
  if (load > 1) console.log(`note: load average was ${load.toFixed(2)} at the start; timings are only meaningful on an idle machine`);
  const file = dataDir('bench', `train-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeJsonAtomic(file, { ...b, backend: backend.name, load1: load, cpu: os.cpus()[0]?.model });
  console.log(`saved ${file}`);
}

if (require.main === module) {
  runCli(main);
}

/** One fine-tuning step (npm start's top-4 regime: MobileNetV2 blocks 13-16 + Conv_1 + head, v1's 768 features beside). */
export interface FineTuneStepBench {
  cut: string;
  batchSize: number;
  /** Milliseconds per step, as one TF graph call (the default) and op by op (tfjs eager autodiff). */
  graphMs: number;
  eagerMs: number;
}

/** ms per training step of each engine, on random activations of the cut's shape (speed does not depend on values). */
export async function benchFineTuneStep(backbonesDir?: string, batchSize = 128, steps = 10): Promise<FineTuneStepBench> {
  const { backboneArtifacts } = await import('../lib/features/backbones');
  const { FineTuneTrainer, resolveFineTuneConfig } = await import('../lib/train/finetune');
  const { weightLookup } = await import('../lib/engine/graph');
  const { Trunk, cutLayer, cutShape } = await import('../lib/model/trunk');
  const a = await backboneArtifacts('mobilenet_v2', { dir: backbonesDir });
  const cut = cutLayer('mobilenet_v2', a.topology, 4);
  const shape = cutShape(a.topology, cut, 160);
  const cfg = resolveFineTuneConfig({ batchSize });
  const ms: Record<'graph' | 'eager', number> = { graph: 0, eager: 0 };
  for (const engine of ['graph', 'eager'] as const) {
    const t = await new FineTuneTrainer([new Trunk(a.topology, cut, weightLookup(a.weightSpecs, a.weightData)), null], [shape, [768]], [1280, 768], cfg, undefined, engine).prepare();
    const batch = () => [tf.randomUniform([batchSize, ...shape], 0, 1), tf.randomUniform([batchSize, 768])];
    const y = new Float32Array(batchSize * 10).fill(0.1);
    for (let k = 0; k < 3; k++) await t.trainStep(batch(), y, 1e-4); // graph loading, kernel set-up
    let spent = 0;
    for (let k = 0; k < steps; k++) {
      const inputs = batch(); // made outside the timed part
      const t0 = performance.now();
      await t.trainStep(inputs, y, 1e-4);
      spent += performance.now() - t0;
    }
    ms[engine] = +(spent / steps).toFixed(1);
    t.dispose();
  }
  return { cut, batchSize, graphMs: ms.graph, eagerMs: ms.eager };
}
