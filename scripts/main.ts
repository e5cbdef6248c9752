// `npm start`: the whole experiment, headless — load CIFAR-10 -> features (cached, multi-core) -> the seed's 4x2
// lr x dropout sweep -> final training -> evaluation (validation, test 0-999 exact, full test) -> save the
// end-to-end model to models/cifar10/ -> a summary table. Every run lands in the experiment log (data/runs/).
// The steps and their defaults live in lib/pipeline.ts, shared with the notebooks (which reproduce this run).
//
// Smoke run:  npm start -- --train-limit 2000 --val-limit 500 --test-limit 1000 --epochs 3 --sweep-epochs 2
// Options come from flags or the matching env vars (TRAIN_LIMIT, BACKBONES, ...); `npm start -- --help` lists them.
import * as path from 'path';
import { parseArgs } from 'util';
import { initBackend } from '../lib/backend';
import { loadCifar10 } from '../lib/data/cifar10';
import { formatConfusion, formatEvaluation } from '../lib/evaluate';
import { terminateFeaturePool } from '../lib/features';
import { MODEL_DIR } from '../lib/model';
import {
  compareRegimes, evaluateHead, evalViews, EXPERIMENT, ExperimentParams, experimentSplits, featureOptions, featuresFor,
  headline, metricsOf, parseBackbones, saveClassifier, sweepHeads, trainFinal,
} from '../lib/pipeline';
import { formatTable, updateRun } from '../lib/runs';
import { dataDir, userPath } from '../lib/paths';
import { requireWritable, unwritableReason } from '../lib/writable';

const E = EXPERIMENT;
const OPTIONS = {
  'train-limit': { type: 'string', env: 'TRAIN_LIMIT', help: 'stratified cap on training images (default all 45,000)' },
  'val-limit': { type: 'string', env: 'VAL_LIMIT', help: 'stratified cap on validation images (default all 5,000)' },
  'test-limit': { type: 'string', env: 'TEST_LIMIT', help: 'use test images 0..N-1 only (default all 10,000)' },
  backbones: { type: 'string', env: 'BACKBONES', help: `comma list, features concatenated (default ${E.backbones})` },
  resolution: { type: 'string', env: 'RESOLUTION', help: `backbone input size in px (default ${E.resolution})` },
  views: { type: 'string', env: 'TRAIN_VIEWS', help: `cached training views sampled per epoch (default ${E.views}; plain,flip adds ~11 min cold)` },
  tta: { type: 'string', env: 'TTA', help: 'average plain+flip predictions at evaluation: 1/0 (default 1)' },
  epochs: { type: 'string', env: 'EPOCHS', help: `final training epochs (default ${E.epochs})` },
  'sweep-epochs': { type: 'string', env: 'SWEEP_EPOCHS', help: `epochs per sweep run (default ${E.sweepEpochs}; 0 skips the sweep)` },
  'sweep-train': { type: 'string', env: 'SWEEP_TRAIN', help: `stratified subset of the training features each sweep run uses (default ${E.sweepImages}; 0 = all)` },
  units: { type: 'string', env: 'UNITS', help: `hidden units of the head (default ${E.units})` },
  'batch-size': { type: 'string', env: 'BATCH_SIZE', help: `mini-batch size (default ${E.batchSize})` },
  lr: { type: 'string', env: 'LR', help: 'final learning rate (default: the sweep winner)' },
  dropout: { type: 'string', env: 'DROPOUT', help: 'final dropout (default: the sweep winner)' },
  workers: { type: 'string', env: 'WORKERS', help: 'feature-extraction worker threads (default: CPU cores)' },
  'end-to-end': { type: 'string', env: 'END_TO_END', help: 'also compare cached views vs end-to-end augmentation on N training images (default 0 = skip)' },
  'e2e-epochs': { type: 'string', env: 'E2E_EPOCHS', help: 'epochs of the end-to-end comparison (default 5)' },
  out: { type: 'string', env: 'MODEL_DIR', help: `where to save the model (default ${path.relative(process.cwd(), MODEL_DIR) || MODEL_DIR})` },
  seed: { type: 'string', env: 'SEED', help: `seed for init and sampling (default ${E.seed}; the validation split is fixed)` },
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
  const positive = (x: number) => Number.isInteger(x) && x > 0;
  const p: ExperimentParams = {
    ...E,
    trainLimit: num('train-limit', opt.get('train-limit'), E.trainLimit, int),
    valLimit: num('val-limit', opt.get('val-limit'), E.valLimit, int),
    testLimit: num('test-limit', opt.get('test-limit'), E.testLimit, int),
    backbones: opt.get('backbones') ?? E.backbones,
    resolution: num('resolution', opt.get('resolution'), E.resolution, (x) => Number.isInteger(x) && x >= 32),
    views: opt.get('views') ?? E.views,
    tta: (opt.get('tta') ?? '1') !== '0',
    seed: num('seed', opt.get('seed'), E.seed, int),
    sweepEpochs: num('sweep-epochs', opt.get('sweep-epochs'), E.sweepEpochs, int),
    sweepImages: num('sweep-train', opt.get('sweep-train'), E.sweepImages, int),
    epochs: num('epochs', opt.get('epochs'), E.epochs, positive),
    units: num('units', opt.get('units'), E.units, positive),
    batchSize: num('batch-size', opt.get('batch-size'), E.batchSize, (x) => Number.isInteger(x) && x > 1),
  };
  const backbones = parseBackbones(p.backbones);
  const workers = opt.get('workers') !== undefined ? num('workers', opt.get('workers'), 0, int) : undefined;
  const e2eN = num('end-to-end', opt.get('end-to-end'), 0, int);
  const outDir = opt.get('out') !== undefined ? userPath(opt.get('out')!) : MODEL_DIR;
  // Where results go is checked before any work: a read-only model folder must not cost a finished training.
  requireWritable(outDir, process.argv.some((x) => x.startsWith('--out')) ? '--out' : 'MODEL_DIR');
  if (unwritableReason(dataDir())) {
    console.log(`note: DATA_DIR ${dataDir()} is not writable: its feature cache is read, but new features and the run log are not saved`);
  }

  const backend = await initBackend();
  const data = await timed('load CIFAR-10', () => loadCifar10());
  const splits = experimentSplits(data, p);
  console.log(
    `data: train ${splits.train.n}, validation ${splits.val.n} (from the training set), test ${splits.testFull.n} ` +
      `(exact 0-999: ${splits.testExact.n}); backbones ${backbones.join('+')} @ ${p.resolution}px; train views ${p.views}; TTA ${p.tta ? 'on' : 'off'}`,
  );

  const fo = { ...featureOptions(p), workers };
  const ev = evalViews(p.tta);
  const train = await timed(`features train (${p.views})`, () => featuresFor(splits.train, p.views.split(','), fo));
  const val = await timed(`features validation (${ev.join('+')})`, () => featuresFor(splits.val, ev, fo));
  const testFull = await timed(`features test (${ev.join('+')})`, () => featuresFor(splits.testFull, ev, fo));

  // The seed's sweep: 4 learning rates x 2 dropout rates, one table, all in the run log.
  let lr = opt.get('lr') !== undefined ? num('lr', opt.get('lr'), 0, (x) => x > 0) : NaN;
  let dropout = opt.get('dropout') !== undefined ? num('dropout', opt.get('dropout'), 0, (x) => x >= 0 && x < 1) : NaN;
  let sweepTableText = '';
  if (p.sweepEpochs > 0) {
    const s = await timed(`sweep 4x2 (${Math.min(p.sweepImages || train.n, train.n)} images, ${p.sweepEpochs} epochs each)`, () =>
      sweepHeads(train, val, p, { backend: backend.name }),
    );
    s.best.head.dispose();
    sweepTableText = s.table;
    console.log(`\nsweep on ${s.images} images (validation accuracy @ best epoch; group ${s.group}):\n${s.table}\n`);
    if (Number.isNaN(lr)) lr = s.best.config.lr;
    if (Number.isNaN(dropout)) dropout = s.best.config.dropout;
  }
  if (Number.isNaN(lr) || Number.isNaN(dropout)) throw new Error('--sweep-epochs 0 skips the sweep, so give --lr and --dropout');

  const final = await timed(`final training (${p.epochs} epochs)`, () => trainFinal(train, val, p, lr, dropout, { backend: backend.name }));
  if (final.message) console.log(final.message);

  // Evaluation on every labelled split; TTA averages plain + flipped predictions.
  const evals = await timed('evaluation', () => evaluateHead(final.head, val, testFull, splits));

  // Assemble pixels -> resize -> backbone(s) -> head, check it against head(features), save.
  const saved = await timed('assemble + check + save model', () =>
    saveClassifier({ head: final.head, params: p, splits, test: testFull, evals, training: { ...final.config, bestEpoch: final.bestEpoch }, runId: final.runId, dir: outDir }),
  );
  if (final.runId) updateRun(final.runId, { testAccuracy: headline(evals[1]), metrics: metricsOf(evals) });

  let e2eText = '';
  if (e2eN > 0) {
    const e2eEpochs = num('e2e-epochs', opt.get('e2e-epochs'), 5, positive);
    const c = await timed(`end-to-end comparison (${e2eN} images)`, () => compareRegimes(data, p, { images: e2eN, epochs: e2eEpochs, config: { lr, dropout } }));
    e2eText = `cached views vs end-to-end (${c.images} training images, ${c.epochs} epochs):\n` +
      formatTable(['regime', 'val accuracy', 'seconds'], c.rows.map((r) => [r.regime, pct(r.valAccuracy), r.seconds.toFixed(1)]));
  }

  // ---- summary
  console.log('\n================ summary ================');
  console.log(`backend: ${backend.summary}`);
  console.log(`model: ${backbones.join(' + ')} @ ${p.resolution}px -> head(units ${final.config.units}, dropout ${dropout}, lr ${lr}); best epoch ${final.bestEpoch}/${final.history.length}; run ${final.runId}`);
  console.log(`saved to ${saved.dir} (end-to-end model vs head on cached features: max |dp| = ${saved.maxDiff.toExponential(2)})\n`);
  console.log(
    formatTable(
      ['split', 'images', 'accuracy', ...(p.tta ? ['accuracy + TTA'] : [])],
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
  const met = headline(evals[0]) >= 0.91 && headline(evals[1]) >= 0.91;
  console.log(`\ntarget (>= 91% validation and test 0-999): ${met ? 'MET' : 'not met'} — validation ${pct(headline(evals[0]))}, test 0-999 ${pct(headline(evals[1]))}`);
  await terminateFeaturePool();
}

main().catch(async (err) => {
  // Set before awaiting anything: idle worker threads are unref'd, so the event loop can drain during the cleanup
  // below and end the process on its own — with this code, never with 0.
  process.exitCode = 1;
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  await terminateFeaturePool().catch(() => {});
  process.exit(1);
});
