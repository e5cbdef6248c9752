// The fine-tuning regime as experiment steps, shared by `npm start`, notebook 05 and `npm run regimes`: which layer
// each backbone is cut at, the cached data at the cuts, training the trunks + head, the pooled features the head
// reads (for evaluation and the saved-model check), the fine-tuned backbone weights for the saved model, and the
// choice of regime within a time budget.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { writeJsonAtomic } from '../util/atomic';
import { dataDir } from '../settings/paths';
import { bestEffortWrite } from '../util/writable';
import { BackboneName, BACKBONES, backboneArtifacts } from '../features/backbones';
import { ImageSet } from '../data/cifar10';
import { cutShapeOf, extractFeatures } from '../features/features';
import { loadFineTuned, storeFineTuned } from '../train/finetune-cache';
import { FineTuneConfig, FineTunePart, FineTuneSet, FineTuneTrainer, fineTuneBackendError, fineTuneSet, resolveFineTuneConfig } from '../train/finetune';
import { TrunkPrecision } from '../engine/train-graph';
import { weightLookup } from '../engine/graph';
import { classesOf, columnStats, LabeledFeatures } from '../features/labeled-features';
import { percent } from '../util/format';
import { FeatureOptions } from './pipeline';
import { fit, TrainOptions, TrainResult } from '../train/training-loop';
import { cutLayer, Trunk } from '../model/trunk';
import { imageBytes, sideOfSet } from '../data/image-set';

/** Trainable blocks per backbone (backbones order) -> the cut layer of each (null = frozen, pooled features). */
export async function cutsFor(backbones: BackboneName[], blocks: number[], backbonesDir?: string): Promise<(string | null)[]> {
  if (blocks.length !== backbones.length) {
    throw new Error(`trainable blocks ${blocks.join(',')}: expected ${backbones.length} numbers, one per backbone (${backbones.join(',')})`);
  }
  return Promise.all(backbones.map(async (b, i) => (blocks[i] > 0 ? cutLayer(b, (await backboneArtifacts(b, { dir: backbonesDir })).topology, blocks[i]) : null)));
}

/** A regime's name for tables and logs: "frozen", or "fine-tune mobilenet_v2 top 4". */
export function regimeName(backbones: BackboneName[], blocks: number[]): string {
  const tuned = backbones.map((b, i) => (blocks[i] > 0 ? `${b} top ${blocks[i]}` : '')).filter(Boolean);
  return tuned.length ? `fine-tune ${tuned.join(' + ')}` : 'frozen';
}

/** The cached data of `set` for each view: activations at each cut, pooled features of frozen backbones. */
export async function fineTuneDataFor(set: ImageSet, views: string[], cuts: (string | null)[], backbones: BackboneName[], opts: FeatureOptions & { signal?: AbortSignal }): Promise<FineTuneSet> {
  const parts: FineTunePart[] = [];
  for (const [i, backbone] of backbones.entries()) {
    const cut = cuts[i] ?? undefined;
    const out: Float32Array[] = [];
    let dim = 0;
    for (const view of views) {
      const f = await extractFeatures(set, { backbone, resolution: opts.resolution, view, workers: opts.workers, backbonesDir: opts.backbonesDir, cacheDir: opts.cacheDir, cache: opts.cache, progress: opts.progress, signal: opts.signal, cut });
      out.push(f.data);
      dim = f.dim;
      if (opts.tally && f.stats) {
        opts.tally.computed += f.stats.computed;
        opts.tally.cached += f.stats.cached;
      }
    }
    const shape = cut ? await cutShapeOf(backbone, cut, opts.resolution, opts.backbonesDir) : [dim];
    parts.push({ backbone, cut: cut ?? null, shape, data: { views: out, labels: set.labels, n: set.n, dim, ...(set.classes !== undefined ? { classes: set.classes } : {}) } });
  }
  return fineTuneSet(parts);
}

/** A fine-tuned model in training form: its head, the trunks' weights, and the features it computes. */
export interface FineTuned {
  result: Omit<TrainResult, 'head'>;
  head: tf.LayersModel;
  config: FineTuneConfig;
  /** The pooled (concatenated) features of a set, every view: what the head reads. */
  features(set: FineTuneSet): Promise<LabeledFeatures>;
  /** The fine-tuned weights by backbone (only the trained layers), to put into the saved model. */
  backboneWeights(): Promise<Partial<Record<BackboneName, Map<string, Float32Array>>>>;
  trainableParameters: number;
  /** Set when the weights came from the fine-tuned cache (lib/train/finetune-cache.ts) instead of training. */
  reused?: { savedAt: string };
  dispose(): void;
}

/**
 * Train the top blocks (the parts with a cut) together with the head, through the project's training loop:
 * cosine schedule, backbone blocks at `backboneLr`, early stopping restoring the best epoch, NaN stop, run log.
 */
export async function fineTune(
  train: FineTuneSet, val: FineTuneSet, config: Partial<FineTuneConfig>,
  opts: TrainOptions & { backbonesDir?: string; cache?: { root: string; key: string; retrain?: boolean } } = {},
): Promise<FineTuned> {
  const why = fineTuneBackendError(tf.getBackend());
  if (why) throw new Error(why);
  const cfg = resolveFineTuneConfig(config);
  const log = opts.log ?? (() => {});
  const t0 = Date.now();
  const trunks = await buildTrunks(train.parts.map((p) => p.backbone), train.parts.map((p) => p.cut), opts.backbonesDir);
  const dims = train.parts.map((p, i) => (trunks[i] ? pooledDim(trunks[i]!, p.shape) : p.data.dim));
  const shapes = train.parts.map((p) => p.shape);
  const hit = opts.cache && !opts.cache.retrain ? loadFineTuned(opts.cache.root, opts.cache.key, log) : null;
  let trainer: FineTuneTrainer;
  if (hit) {
    trainer = await new FineTuneTrainer(trunks, shapes, dims, cfg, undefined, undefined, classesOf(train.parts[0].data)).prepare();
    trainer.setWeights(hit.weights);
    tf.dispose(hit.weights);
  } else {
    // BN's moving statistics start at the initial features' (on validation: a forward pass of 5,000, not 90,000).
    const probe = await new FineTuneTrainer(trunks, shapes, dims, cfg, undefined, undefined, classesOf(train.parts[0].data)).prepare();
    const init = columnStats(await probe.pooledFeatures({ ...val, views: 1 }));
    probe.disposeOwn();
    trainer = await new FineTuneTrainer(trunks, shapes, dims, cfg, init, undefined, classesOf(train.parts[0].data)).prepare();
  }
  const summary = (s: FineTuneSet) => ({ n: s.n, dim: trainer.dim, views: s.views });
  const label = opts.label ?? `fine-tune ${train.parts.filter((p) => p.cut).map((p) => `${p.backbone} from ${p.cut}`).join(', ')}`;
  try {
    let result: FineTuned['result'];
    if (hit) {
      result = hit.result;
      log(`fine-tuning: reused the weights trained ${hit.savedAt}${result.runId ? ` (run ${result.runId})` : ''} from the same images, backbones, cuts, views and settings; --retrain trains again`);
    } else {
      const { epochData: _perEpochData, cache: _cache, ...loopOpts } = opts; // fine-tuning trains on its cached views only
      result = await fit(trainer, train, val, summary(train), summary(val), cfg, {
        ...loopOpts,
        label,
        kind: 'fine-tune',
        run: {
          slug: 'fine-tune',
          ...opts.run,
          data: { cuts: train.parts.map((p) => ({ backbone: p.backbone, cut: p.cut, shape: p.shape })), backboneLr: cfg.backboneLr, trainableParameters: trainer.trainableParameters, engine: trainer.engine, ...opts.run?.data },
        },
      }, t0);
      if (opts.cache && Number.isFinite(result.bestValAcc)) {
        const ws = trainer.weights();
        try {
          await storeFineTuned(opts.cache.root, opts.cache.key, ws, result);
        } catch (err) {
          log(`fine-tuning: the trained weights were not cached (${err instanceof Error ? err.message : err}); a re-run trains again`);
        } finally {
          tf.dispose(ws);
        }
      }
    }
    return {
      result,
      reused: hit ? { savedAt: hit.savedAt } : undefined,
      head: trainer.toHead(),
      config: cfg,
      features: (s) => trainer.pooledFeatures(s),
      backboneWeights: async () => {
        const out: Partial<Record<BackboneName, Map<string, Float32Array>>> = {};
        for (const [i, t] of trunks.entries()) if (t) out[train.parts[i].backbone] = await t.weightValues();
        return out;
      },
      trainableParameters: trainer.trainableParameters,
      dispose: () => trainer.dispose(),
    };
  } catch (err) {
    trainer.dispose();
    throw err;
  }
}

/** A trunk (pretrained weights) for each backbone with a cut; null for frozen ones. */
async function buildTrunks(backbones: BackboneName[], cuts: (string | null)[], backbonesDir?: string): Promise<(Trunk | null)[]> {
  const out: (Trunk | null)[] = [];
  for (const [i, b] of backbones.entries()) {
    const cut = cuts[i];
    if (!cut) {
      out.push(null);
      continue;
    }
    const a = await backboneArtifacts(b, { dir: backbonesDir });
    out.push(new Trunk(a.topology, cut, weightLookup(a.weightSpecs, a.weightData)));
  }
  return out;
}

function pooledDim(t: Trunk, shape: number[]): number {
  const f = tf.tidy(() => t.forward(tf.zeros([1, ...shape] as [number, number, number, number])));
  const d = f.shape[1];
  f.dispose();
  return d;
}

// ---------------------------------------------------------------------------------------------------------------
// Choosing the regime within a time budget.

/** Regimes `npm start` considers, best first (the order the regime table measured on validation). */
export function regimeCandidates(backbones: BackboneName[]): number[][] {
  const frozen = backbones.map(() => 0);
  const v2 = backbones.indexOf('mobilenet_v2');
  if (v2 < 0) return [frozen];
  return [...[6, 5, 4, 2, 1].map((k) => backbones.map((_, j) => (j === v2 ? k : 0))), frozen];
}

/** What the regime's run has to process (images per split and views). */
export interface Workload {
  train: number;
  val: number;
  test: number;
  trainViews: number;
  evalViews: number;
  epochs: number;
  batchSize: number;
  /** Arithmetic of the training step (float32 when absent). */
  trunkPrecision?: TrunkPrecision;
}

/**
 * Seconds a regime would take from a cold cache, measured on this machine now: each backbone's extraction rate at
 * its cut (one warm batch of 64 real images), and a fine-tuning step and an inference batch on inputs of the real
 * shapes. Frozen regimes: extraction plus a minute of head training (sweep + final, measured ~40 s).
 */
export async function estimateSeconds(
  blocks: number[], backbones: BackboneName[], w: Workload, sample: ImageSet, opts: FeatureOptions, rates: Map<string, number> = new Map(),
): Promise<Estimate> {
  const cuts = await cutsFor(backbones, blocks, opts.backbonesDir);
  // 256 images (4 batches): one batch alone over-weights the per-call overheads (measured ~25% high).
  const n = Math.min(256, sample.n);
  const probe = { images: sample.images.subarray(0, n * imageBytes(sideOfSet(sample))), n };
  let seconds = 0;
  const perBackbone = w.train * w.trainViews + (w.val + w.test) * w.evalViews;
  for (const [i, backbone] of backbones.entries()) {
    const key = `${backbone}|${cuts[i] ?? ''}`;
    let secondsPerImage = rates.get(key);
    if (secondsPerImage === undefined) {
      const run = (cacheDir?: string) => extractFeatures(probe, { backbone, resolution: opts.resolution, cache: cacheDir !== undefined, cacheDir, progress: false, cut: cuts[i] ?? undefined, backbonesDir: opts.backbonesDir });
      await run(); // loads / writes the graph
      // The timed run writes its chunk as a real run does (into a scratch folder): encoding, checksum and writing
      // a cached activation cost ~12% of its extraction (measured at block_11_add), pooled features ~3%.
      const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'regime-probe-'));
      try {
        const t0 = Date.now();
        await run(scratch);
        secondsPerImage = (Date.now() - t0) / 1000 / n;
      } finally {
        fs.rmSync(scratch, { recursive: true, force: true });
      }
      rates.set(key, secondsPerImage);
    }
    seconds += perBackbone * secondsPerImage;
  }
  if (!cuts.some(Boolean)) return { seconds: seconds + 60, dataSeconds: seconds, trainSeconds: 60 };
  const shapes = await Promise.all(backbones.map(async (b, i) => (cuts[i] ? cutShapeOf(b, cuts[i]!, opts.resolution, opts.backbonesDir) : [BACKBONES[b].featureSize])));
  const trunks = await buildTrunks(backbones, cuts, opts.backbonesDir);
  const dims = shapes.map((s, i) => (trunks[i] ? pooledDim(trunks[i]!, s) : s[0]));
  const cfg = resolveFineTuneConfig({ batchSize: w.batchSize, epochs: 1, trunkPrecision: w.trunkPrecision });
  const t = await new FineTuneTrainer(trunks, shapes, dims, cfg).prepare();
  try {
    const B = w.batchSize;
    const batch = () => shapes.map((s) => tf.randomUniform([B, ...s], 0, 1));
    const y = new Float32Array(B * 10).fill(0.1);
    // Two warm-up steps (kernels, memory: one alone left the timed steps ~25% above a real epoch's), then the
    // median of six: a hiccup of the machine during one step must not decide the regime.
    for (let k = 0; k < 2; k++) await t.trainStep(batch(), y, 1e-9);
    const times: number[] = [];
    for (let k = 0; k < 6; k++) {
      const t0 = performance.now();
      await t.trainStep(batch(), y, 1e-9); // with making the batch, as an epoch assembles each from the cached views
      times.push((performance.now() - t0) / 1000);
    }
    times.sort((a, b) => a - b);
    const step = (times[2] + times[3]) / 2;
    const set = fineTuneSet(shapes.map((s, i) => {
      const dim = s.reduce((a, b) => a * b, 1);
      return { backbone: backbones[i], cut: cuts[i], shape: s, data: { views: [new Float32Array(256 * dim)], labels: new Uint8Array(256), n: 256, dim } };
    }));
    await t.pooledFeatures(set); // warm-up of the inference shapes
    const t1 = Date.now();
    await t.pooledFeatures(set);
    const infer = (Date.now() - t1) / 1000 / 256;
    const epoch = Math.floor(w.train / B) * step + w.val * infer;
    const trainSeconds = w.epochs * epoch + (w.val + w.test) * w.evalViews * infer;
    return { seconds: seconds + trainSeconds, dataSeconds: seconds, trainSeconds };
  } finally {
    t.dispose();
  }
}

/** A regime's estimated cold wall time: computing its cached data, and training + evaluating. */
export interface Estimate {
  seconds: number;
  dataSeconds: number;
  trainSeconds: number;
}

/** The best candidate whose estimate fits `budgetSeconds`, with every estimate (said by `npm start`). */
export async function chooseRegime(backbones: BackboneName[], w: Workload, sample: ImageSet, opts: FeatureOptions, budgetSeconds: number): Promise<{ blocks: number[]; estimates: (Estimate & { blocks: number[]; name: string })[] }> {
  const estimates: (Estimate & { blocks: number[]; name: string })[] = [];
  const rates = new Map<string, number>(); // a frozen backbone's extraction rate is the same for every candidate
  for (const blocks of regimeCandidates(backbones)) {
    const e = await estimateSeconds(blocks, backbones, w, sample, opts, rates);
    estimates.push({ ...e, blocks, name: regimeName(backbones, blocks) });
    if (e.seconds <= budgetSeconds) return { blocks, estimates };
  }
  return { blocks: backbones.map(() => 0), estimates };
}

// ---------------------------------------------------------------------------------------------------------------
// The regime table: each regime trained and evaluated on the same splits (notebook 05, `npm run regimes`).

export interface RegimeSpec {
  /** Trainable blocks per backbone (all 0 = frozen). */
  blocks: number[];
  /** Cached training views sampled per epoch. */
  views: string[];
}

export interface RegimeRow {
  regime: string;
  views: string[];
  epochs: number;
  bestEpoch: number;
  trainableParameters: number;
  /** Headline accuracies, plain and with TTA (plain + flip averaged). */
  validation: number;
  validationTta?: number;
  testExact: number;
  testExactTta?: number;
  /** Wall seconds computing the cached data (0 when it was all cached), and training. */
  extractSeconds: number;
  trainSeconds: number;
}

/** The regime table's rows: frozen (plain, plain+flip), then each fine-tuning candidate on plain+flip views. */
export function regimeTableSpecs(backbones: BackboneName[]): RegimeSpec[] {
  const frozen = backbones.map(() => 0);
  const tuned = regimeCandidates(backbones).filter((b) => b.some((k) => k > 0)).reverse();
  return [{ blocks: frozen, views: ['plain'] }, { blocks: frozen, views: ['plain', 'flip'] }, ...tuned.map((blocks) => ({ blocks, views: ['plain', 'flip'] }))];
}

/** The regime table as Markdown (README, notebook 05). */
export function regimeTable(rows: RegimeRow[], n: { train: number; val: number; test: number }): string {
  const pct = (x: number | undefined) => (x === undefined ? '—' : percent(x));
  return [
    `| regime | train views | trainable params | epochs (best) | validation | + TTA | test 0-999 | + TTA | data, min | training, min |`,
    '|---|---|---|---|---|---|---|---|---|---|',
    ...rows.map((r) => `| ${r.regime} | ${r.views.join('+')} | ${(r.trainableParameters / 1e6).toFixed(2)}M | ${r.epochs} (${r.bestEpoch}) | ${pct(r.validation)} | ${pct(r.validationTta)} | ${pct(r.testExact)} | ${pct(r.testExactTta)} | ${(r.extractSeconds / 60).toFixed(1)} | ${(r.trainSeconds / 60).toFixed(1)} |`),
    '',
    `${n.train.toLocaleString('en')} training, ${n.val.toLocaleString('en')} validation, ${n.test.toLocaleString('en')} exact test images; "data" is computing the cached features/activations (0 when already cached).`,
  ].join('\n');
}

/**
 * Auto choices are remembered per settings (backbones, resolution, split sizes, views, epochs, batch, budget) in
 * the data folder: the estimate is a measurement and moves with the machine's load, and a re-run must not switch
 * to a regime whose data was never cached (a "warm" re-run would then be a cold one).
 */
export function choiceFile(): string {
  return dataDir('cache', 'regime-choices.json');
}

export function rememberedChoice(key: string): { blocks: number[]; estimates: string; at: string } | undefined {
  try {
    return JSON.parse(fs.readFileSync(choiceFile(), 'utf8'))[key];
  } catch {
    return undefined; // none yet, or unreadable: choose afresh
  }
}

export function rememberChoice(key: string, value: { blocks: number[]; estimates: string }): void {
  let all: Record<string, unknown> = {};
  try {
    all = JSON.parse(fs.readFileSync(choiceFile(), 'utf8'));
  } catch {
    // first choice
  }
  all[key] = { ...value, at: new Date().toISOString() };
  bestEffortWrite(`regime choice in ${choiceFile()}`, () => writeJsonAtomic(choiceFile(), all));
}
