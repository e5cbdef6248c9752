// `npm start`: the whole experiment, headless — load CIFAR-10 -> features (cached, multi-core) -> the seed's 4x2
// lr x dropout sweep -> final training -> evaluation (validation, test 0-999 exact, full test) -> save the
// end-to-end model to models/cifar10/ -> a summary table. Every run lands in the experiment log (data/runs/).
//
// Smoke run:  npm start -- --train-limit 2000 --val-limit 500 --test-limit 1000 --epochs 3 --sweep-epochs 2
// Options come from flags or the matching env vars (TRAIN_LIMIT, BACKBONES, ...); `npm start -- --help` lists them.
import { parseArgs } from 'util';
import { initBackend } from '../lib/backend';
import { BackboneName, BACKBONES } from '../lib/backbones';
import { loadCifar10, stratifiedSample } from '../lib/data/cifar10';
import { evaluate, Evaluation, formatConfusion, formatEvaluation, predictFeatures, predictTTA, SPLIT_LABELS } from '../lib/evaluate';
import { terminateFeaturePool } from '../lib/features';
import { assembleModel, gitCommit, headConfigOf, MODEL_DIR, predictPixels, saveModel } from '../lib/model';
import { featuresFor, makeSplits, trainEndToEnd } from '../lib/pipeline';
import { formatTable, updateRun } from '../lib/runs';
import { DEFAULT_TRAIN, SEED_SWEEP, subsetFeatures, sweep, trainHead, TrainConfig } from '../lib/train';
import { AUG_VIEW_OPTIONS } from '../lib/augment';
import * as path from 'path';

const OPTIONS = {
  'train-limit': { type: 'string', env: 'TRAIN_LIMIT', help: 'stratified cap on training images (default all 45,000)' },
  'val-limit': { type: 'string', env: 'VAL_LIMIT', help: 'stratified cap on validation images (default all 5,000)' },
  'test-limit': { type: 'string', env: 'TEST_LIMIT', help: 'use test images 0..N-1 only (default all 10,000)' },
  backbones: { type: 'string', env: 'BACKBONES', help: 'comma list, features concatenated (default mobilenet_v1_0.75,mobilenet_v2)' },
  resolution: { type: 'string', env: 'RESOLUTION', help: 'backbone input size in px (default 160)' },
  views: { type: 'string', env: 'TRAIN_VIEWS', help: 'cached training views sampled per epoch (default plain; plain,flip adds ~11 min cold)' },
  tta: { type: 'string', env: 'TTA', help: 'average plain+flip predictions at evaluation: 1/0 (default 1)' },
  epochs: { type: 'string', env: 'EPOCHS', help: `final training epochs (default ${DEFAULT_TRAIN.epochs})` },
  'sweep-epochs': { type: 'string', env: 'SWEEP_EPOCHS', help: 'epochs per sweep run (default 5; 0 skips the sweep)' },
  'sweep-train': { type: 'string', env: 'SWEEP_TRAIN', help: 'stratified subset of the training features each sweep run uses (default 10000; 0 = all)' },
  units: { type: 'string', env: 'UNITS', help: `hidden units of the head (default ${DEFAULT_TRAIN.units})` },
  'batch-size': { type: 'string', env: 'BATCH_SIZE', help: `mini-batch size (default ${DEFAULT_TRAIN.batchSize})` },
  lr: { type: 'string', env: 'LR', help: 'final learning rate (default: the sweep winner)' },
  dropout: { type: 'string', env: 'DROPOUT', help: 'final dropout (default: the sweep winner)' },
  workers: { type: 'string', env: 'WORKERS', help: 'feature-extraction worker threads (default: CPU cores)' },
  'end-to-end': { type: 'string', env: 'END_TO_END', help: 'also compare cached views vs end-to-end augmentation on N training images (default 0 = skip)' },
  'e2e-epochs': { type: 'string', env: 'E2E_EPOCHS', help: 'epochs of the end-to-end comparison (default 5)' },
  out: { type: 'string', env: 'MODEL_DIR', help: `where to save the model (default ${path.relative(process.cwd(), MODEL_DIR) || MODEL_DIR})` },
  seed: { type: 'string', env: 'SEED', help: 'seed for split, init and sampling (default 1)' },
  help: { type: 'boolean', env: '', help: 'show this help' },
} as const;

type Opt = keyof typeof OPTIONS;

function readOptions(): { get: (k: Opt) => string | undefined; help: boolean } {
  const { values } = parseArgs({
    options: Object.fromEntries(Object.entries(OPTIONS).map(([k, v]) => [k, { type: v.type }])) as any,
    allowPositionals: false,
  });
  const get = (k: Opt) => {
    const v = (values as Record<string, unknown>)[k];
    if (typeof v === 'string') return v;
    const env = OPTIONS[k].env;
    return env && process.env[env] !== undefined && process.env[env] !== '' ? process.env[env] : undefined;
  };
  return { get, help: Boolean((values as any).help) };
}

function num(name: Opt, raw: string | undefined, fallback: number, check: (x: number) => boolean = (x) => x >= 0): number {
  if (raw === undefined) return fallback;
  const x = Number(raw);
  if (!Number.isFinite(x) || !check(x)) throw new Error(`--${name}=${raw}: expected ${check.toString().includes('Integer') ? 'an integer' : 'a number'} in range`);
  return x;
}
const int = (x: number) => Number.isInteger(x) && x >= 0;

const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(2)}%` : '-');

async function main(): Promise<void> {
  const opt = readOptions();
  if (opt.help) {
    console.log('npm start -- [options]   (each also settable by env var)\n');
    for (const [k, v] of Object.entries(OPTIONS)) console.log(`  --${k.padEnd(14)} ${v.env ? `[${v.env}] ` : ''}${v.help}`);
    return;
  }
  const tStart = Date.now();
  const timings: [string, number][] = [];
  const timed = async <T>(what: string, f: () => Promise<T> | T): Promise<T> => {
    const t0 = Date.now();
    const r = await f();
    timings.push([what, (Date.now() - t0) / 1000]);
    return r;
  };
  const backbones = (opt.get('backbones') ?? 'mobilenet_v1_0.75,mobilenet_v2').split(',').map((s) => s.trim()) as BackboneName[];
  for (const b of backbones) if (!(b in BACKBONES)) throw new Error(`--backbones: unknown backbone "${b}" (expected ${Object.keys(BACKBONES).join(', ')})`);
  const resolution = num('resolution', opt.get('resolution'), 160, (x) => Number.isInteger(x) && x >= 32);
  const trainViews = (opt.get('views') ?? 'plain').split(',').map((s) => s.trim());
  const tta = (opt.get('tta') ?? '1') !== '0';
  const seed = num('seed', opt.get('seed'), 1, int);
  const workers = opt.get('workers') !== undefined ? num('workers', opt.get('workers'), 0, int) : undefined;
  const sweepEpochs = num('sweep-epochs', opt.get('sweep-epochs'), 5, int);
  const sweepTrainN = num('sweep-train', opt.get('sweep-train'), 10000, int);
  const base: Partial<TrainConfig> = {
    epochs: num('epochs', opt.get('epochs'), DEFAULT_TRAIN.epochs, (x) => Number.isInteger(x) && x > 0),
    units: num('units', opt.get('units'), DEFAULT_TRAIN.units, (x) => Number.isInteger(x) && x > 0),
    batchSize: num('batch-size', opt.get('batch-size'), DEFAULT_TRAIN.batchSize, (x) => Number.isInteger(x) && x > 1),
    seed,
  };
  const e2eN = num('end-to-end', opt.get('end-to-end'), 0, int);
  const outDir = path.resolve(opt.get('out') ?? MODEL_DIR);

  const backend = await initBackend();
  const data = await timed('load CIFAR-10', () => loadCifar10());
  const splits = makeSplits(data, {
    trainLimit: num('train-limit', opt.get('train-limit'), 0, int),
    valLimit: num('val-limit', opt.get('val-limit'), 0, int),
    testLimit: num('test-limit', opt.get('test-limit'), 0, int),
    seed: 42,
  });
  console.log(
    `data: train ${splits.train.n}, validation ${splits.val.n} (from the training set), test ${splits.testFull.n} ` +
      `(exact 0-999: ${splits.testExact.n}); backbones ${backbones.join('+')} @ ${resolution}px; train views ${trainViews.join('+')}; TTA ${tta ? 'on' : 'off'}`,
  );

  const fo = { backbones, resolution, workers };
  const evalViews = tta ? ['plain', 'flip'] : ['plain'];
  const train = await timed(`features train (${trainViews.join('+')})`, () => featuresFor(splits.train, trainViews, fo));
  const val = await timed(`features validation (${evalViews.join('+')})`, () => featuresFor(splits.val, evalViews, fo));
  const testFull = await timed(`features test (${evalViews.join('+')})`, () => featuresFor(splits.testFull, evalViews, fo));
  const runData = { backbones, resolution, trainViews, tta };

  // The seed's sweep: 4 learning rates x 2 dropout rates, one table, all in the run log.
  let lr = opt.get('lr') !== undefined ? num('lr', opt.get('lr'), 0, (x) => x > 0) : DEFAULT_TRAIN.lr;
  let dropout = opt.get('dropout') !== undefined ? num('dropout', opt.get('dropout'), 0, (x) => x >= 0 && x < 1) : DEFAULT_TRAIN.dropout;
  let sweepTableText = '';
  if (sweepEpochs > 0) {
    // Ranking 8 settings needs neither all the data nor the full schedule: a stratified subset keeps the warm
    // run within its budget; the final training below uses everything.
    const sweepTrain = sweepTrainN && sweepTrainN < train.n
      ? subsetFeatures(train, stratifiedSample(train.labels, Array.from({ length: train.n }, (_, i) => i), sweepTrainN, seed))
      : train;
    const s = await timed(`sweep 4x2 (${sweepTrain.n} images, ${sweepEpochs} epochs each)`, () =>
      sweep(sweepTrain, val, SEED_SWEEP, { ...base, epochs: sweepEpochs }, { run: { data: { ...runData, sweepTrain: sweepTrain.n } }, backend: backend.name }),
    );
    s.best.head.dispose();
    sweepTableText = s.table;
    console.log(`\nsweep (validation accuracy @ best epoch; group ${s.group}):\n${s.table}\n`);
    if (opt.get('lr') === undefined) lr = s.best.config.lr;
    if (opt.get('dropout') === undefined) dropout = s.best.config.dropout;
  }

  const final = await timed(`final training (${base.epochs} epochs)`, () =>
    trainHead(train, val, { ...base, lr, dropout }, { label: `final lr=${lr} drop=${dropout}`, run: { kind: 'train', data: runData, slug: 'final' }, backend: backend.name }),
  );
  if (final.message) console.log(final.message);

  // Evaluation on every labelled split; TTA averages plain + flipped predictions.
  const evals = await timed('evaluation', () => {
    const results: { label: string; plain: Evaluation; tta?: Evaluation }[] = [];
    const exactIdx = Array.from({ length: splits.testExact.n }, (_, i) => i); // test 0-999 are the first rows of testFull
    const sub = (f: Float32Array, rows: number[], k: number) => {
      const out = new Float32Array(rows.length * k);
      rows.forEach((r, i) => out.set(f.subarray(r * k, (r + 1) * k), i * k));
      return out;
    };
    const one = (label: string, views: Float32Array[], n: number, dim: number, labels: Uint8Array, indices: Int32Array, rows?: number[]) => {
      let p = predictFeatures(final.head, views[0], n, dim);
      let pt = tta && views.length > 1 ? predictTTA(final.head, views, n, dim) : undefined;
      if (rows) {
        p = sub(p, rows, 10);
        pt = pt && sub(pt, rows, 10);
      }
      const opts = { split: label, classNames: splits.classNames, indices };
      results.push({ label, plain: evaluate(p, labels, opts), tta: pt && evaluate(pt, labels, { ...opts, split: `${label} + TTA` }) });
    };
    one(SPLIT_LABELS.validation, val.views, val.n, val.dim, splits.val.labels, splits.val.indices);
    const exactLabel = splits.testExact.n === 1000 ? SPLIT_LABELS.exactTest : `test 0-${splits.testExact.n - 1} (exact)`;
    one(exactLabel, testFull.views, testFull.n, testFull.dim, splits.testExact.labels, splits.testExact.indices, exactIdx);
    one(
      splits.testFull.n === 10000 ? SPLIT_LABELS.fullTest : `test 0-${splits.testFull.n - 1} (partly JPEG-rebuilt)`,
      testFull.views, testFull.n, testFull.dim, splits.testFull.labels, splits.testFull.indices,
    );
    return results;
  });
  const headline = (i: number) => (evals[i].tta ?? evals[i].plain).accuracy;

  // Assemble pixels -> resize -> backbone(s) -> head, check it against head(features), save.
  const saved = await timed('assemble + check + save model', async () => {
    const model = await assembleModel({ backbones, resolution, head: final.head });
    const k = Math.min(16, splits.testExact.n);
    const viaModel = predictPixels(model, splits.testExact.images.subarray(0, k * 3072), k);
    const viaHead = predictFeatures(final.head, testFull.views[0].subarray(0, k * testFull.dim), k, testFull.dim);
    let diff = 0;
    for (let i = 0; i < viaModel.length; i++) diff = Math.max(diff, Math.abs(viaModel[i] - viaHead[i]));
    const metrics: Record<string, number> = {};
    for (const e of evals) {
      metrics[e.label] = e.plain.accuracy;
      if (e.tta) metrics[`${e.label} + TTA`] = e.tta.accuracy;
    }
    await saveModel(
      model,
      {
        backbones,
        resolution,
        classNames: splits.classNames,
        head: headConfigOf(final.head),
        metrics,
        date: new Date().toISOString(),
        gitCommit: gitCommit(),
        runId: final.runId,
        training: { ...final.config, bestEpoch: final.bestEpoch, trainViews, tta },
        note: 'Reported accuracies use TTA (plain + flip averaged) where marked; the saved model predicts the plain view.',
      },
      outDir,
    );
    model.dispose();
    return { diff, metrics };
  });
  if (final.runId) {
    // testAccuracy = the headline test figure (test 0-999, with TTA when on); every labelled figure is in metrics.
    updateRun(final.runId, { testAccuracy: headline(1), metrics: saved.metrics });
  }

  let e2eText = '';
  if (e2eN > 0) e2eText = await timed(`end-to-end comparison (${e2eN} images)`, () => compareEndToEnd(e2eN));

  // ---- summary
  console.log('\n================ summary ================');
  console.log(`backend: ${backend.summary}`);
  console.log(`model: ${backbones.join(' + ')} @ ${resolution}px -> head(units ${final.config.units}, dropout ${dropout}, lr ${lr}); best epoch ${final.bestEpoch}/${final.history.length}; run ${final.runId}`);
  console.log(`saved to ${outDir} (end-to-end model vs head on cached features: max |dp| = ${saved.diff.toExponential(2)})\n`);
  console.log(
    formatTable(
      ['split', 'images', 'accuracy', ...(tta ? ['accuracy + TTA'] : [])],
      evals.map((e) => [e.label, String(e.plain.n), pct(e.plain.accuracy), ...(e.tta ? [pct(e.tta.accuracy)] : [])]),
    ),
  );
  const exact = evals[1].tta ?? evals[1].plain;
  console.log(`\nper class on ${exact.split}:\n${formatEvaluation(exact)}`);
  console.log(`\nconfusion matrix (${exact.split}):\n${formatConfusion(exact, splits.classNames)}`);
  if (sweepTableText) console.log(`\nsweep:\n${sweepTableText}`);
  if (e2eText) console.log(`\n${e2eText}`);
  timings.push(['total', (Date.now() - tStart) / 1000]);
  console.log(`\ntimings:\n${formatTable(['step', 'seconds'], timings.map(([k, s]) => [k, s.toFixed(1)]))}`);
  const target = headline(0) >= 0.91 && headline(1) >= 0.91;
  console.log(`\ntarget (>= 91% validation and test 0-999): ${target ? 'MET' : 'not met'} — validation ${pct(headline(0))}, test 0-999 ${pct(headline(1))}`);
  await terminateFeaturePool();

  // Cached augmented views vs the seed's end-to-end augmentation, on a subset (accuracy and time).
  async function compareEndToEnd(n: number): Promise<string> {
    const small = makeSplits(data, { trainLimit: n, valLimit: Math.min(1000, splits.val.n), seed: 42 });
    const e2eEpochs = num('e2e-epochs', opt.get('e2e-epochs'), 5, (x) => Number.isInteger(x) && x > 0);
    const cfg = { ...base, lr, dropout, epochs: e2eEpochs, patience: 0 };
    const vSmall = await featuresFor(small.val, ['plain'], fo);
    const t0 = Date.now();
    const cachedTrain = await featuresFor(small.train, trainViews, fo);
    const cached = await trainHead(cachedTrain, vSmall, cfg, { label: 'cached views', run: { data: { ...runData, compare: 'cached' } } });
    const cachedSec = (Date.now() - t0) / 1000;
    const e2e = await trainEndToEnd(small.train, vSmall, cfg, { ...fo, augment: AUG_VIEW_OPTIONS, seed });
    cached.head.dispose();
    e2e.head.dispose();
    return `cached views vs end-to-end (${n} training images, ${small.val.n} validation, ${e2eEpochs} epochs):\n` +
      formatTable(['regime', 'val accuracy', 'seconds'], [
        [`cached ${trainViews.join('+')} (features from cache)`, pct(cached.bestValAcc), cachedSec.toFixed(1)],
        ['end-to-end (augment + backbone every epoch)', pct(e2e.bestValAcc), e2e.seconds.toFixed(1)],
      ]);
  }
}

main().catch(async (err) => {
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  await terminateFeaturePool().catch(() => {});
  process.exit(1);
});
