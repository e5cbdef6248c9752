// `npm start`: the whole experiment, headless — load CIFAR-10 -> features (cached, multi-core) -> the seed's 4x2
// lr x dropout sweep -> final training -> evaluation (validation, test 0-999 exact, full test) -> save the
// end-to-end model to models/cifar10/ -> a summary table. Every run lands in the experiment log (data/runs/).
// The steps and their defaults live in lib/pipeline.ts, shared with the notebooks (which reproduce this run).
//
// Smoke run:  npm start -- --train-limit 2000 --val-limit 500 --test-limit 1000 --epochs 3 --sweep-epochs 2
// Options come from flags or the matching env vars (TRAIN_LIMIT, BACKBONES, ...); `npm start -- --help` lists them.
import { BackendChoice, initBackend } from '../lib/backend';
import { fineTuneBackendError, resolveFineTuneConfig } from '../lib/finetune';
import { resolveTrunkPrecision } from '../lib/train-graph';
import { fineTuneKey } from '../lib/finetune-cache';
import { DEFAULT_TRAIN } from '../lib/head-trainer';
import { chooseRegime, choiceFile, cutsFor, fineTune, fineTuneDataFor, regimeName, rememberChoice, rememberedChoice } from '../lib/regimes';
import { loadCifar10 } from '../lib/data/cifar10';
import { formatConfusion, formatEvaluation } from '../lib/evaluate';
import { terminateFeaturePool } from '../lib/features';
import { MODEL_DIR } from '../lib/model';
import { InterruptedError } from '../lib/cancel';
import { ExperimentConfig, helpText, resolveConfig } from '../lib/config';
import {
  compareRegimes, evaluateHead, Evaluations, evalViews, experimentSplits, FeatureOptions, featureOptions, featuresFor, headline, metricsOf,
  runData, saveClassifier, Splits, sweepHeads, trainFinal,
} from '../lib/pipeline';
import { formatTable, percent } from '../lib/format';
import { updateRun } from '../lib/runs';
import { dataDir, userPath } from '../lib/paths';
import { requireWritable, unwritableReason } from '../lib/writable';

const USAGE = 'npm start -- [options]   (each also settable by its env var; flags win)';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText(USAGE));
    return;
  }
  // Every value parsed and validated here, before any data is loaded: a bad one costs a second, not minutes.
  const { config: p, sources } = resolveConfig(argv);
  if (p.sweepEpochs === 0 && (p.lr === null || p.dropout === null)) {
    throw new Error('--sweep-epochs 0 skips the sweep, so give --lr and --dropout (or LR and DROPOUT)');
  }
  const tStart = Date.now();
  const timings: [string, number][] = [];
  const timed = async <T>(what: string, f: () => Promise<T> | T): Promise<T> => {
    const t0 = Date.now();
    const r = await f();
    timings.push([what, (Date.now() - t0) / 1000]);
    return r;
  };
  const backbones = p.backbones;
  const outDir = p.out !== null ? userPath(p.out) : MODEL_DIR;
  // Where results go is checked before any work: a read-only model folder must not cost a finished training.
  requireWritable(outDir, sources.out ?? 'MODEL_DIR');
  if (unwritableReason(dataDir())) {
    console.log(`note: DATA_DIR ${dataDir()} is not writable: its feature cache is read, but new features and the run log are not saved`);
  }

  const backend = await initBackend();
  // A regime the backend cannot run, or blocks that do not match the backbones, stop here: before any data.
  if (p.trainableBlocks) {
    if (p.trainableBlocks.length !== backbones.length) {
      throw new Error(`${sources.trainableBlocks}=${p.trainableBlocks.join(',')}: expected ${backbones.length} numbers, one per backbone (${backbones.join(',')})`);
    }
    const why = p.trainableBlocks.some((k) => k > 0) ? fineTuneBackendError(backend.name) : null;
    if (why) throw new Error(why);
    await cutsFor(backbones, p.trainableBlocks); // a block count beyond the backbone's says so now
  }
  const data = await timed('load CIFAR-10', () => loadCifar10());
  const splits = experimentSplits(data, p);
  // A limit beyond the data is obeyed as "all", and said.
  const caps: [number, number, string][] = [[p.trainLimit, splits.train.n, 'train-limit'], [p.valLimit, splits.val.n, 'val-limit'], [p.testLimit, splits.testFull.n, 'test-limit']];
  for (const [limit, n, flag] of caps) if (limit > n) console.log(`note: --${flag} ${limit} is more than the ${n} images there are: using all ${n}`);
  console.log(
    `data: train ${splits.train.n}, validation ${splits.val.n} (from the training set), test ${splits.testFull.n} ` +
      `(exact 0-999: ${splits.testExact.n}); backbones ${backbones.join('+')} @ ${p.resolution}px; train views ${sources.views ? p.views.join(',') : `${FINE_TUNE_VIEWS.join(',')} fine-tuning, ${p.views.join(',')} frozen`}; TTA ${p.tta ? 'on' : 'off'}`,
  );

  const fo = featureOptions(p);
  const ev = evalViews(p.tta);

  // The regime: the blocks given, or the best candidate whose estimate (measured now) fits the time budget.
  let blocks = p.trainableBlocks;
  const ftViews = sources.views ? p.views : FINE_TUNE_VIEWS;
  if (blocks === null) {
    if (fineTuneBackendError(backend.name)) {
      blocks = backbones.map(() => 0);
      console.log(`regime: frozen (auto: fine-tuning needs the tensorflow backend; ${backend.name} is in use)`);
    } else {
      const work = { train: splits.train.n, val: splits.val.n, test: splits.testFull.n, trainViews: ftViews.length, evalViews: ev.length, epochs: p.fineTuneEpochs, batchSize: p.fineTuneBatchSize, trunkPrecision: resolveTrunkPrecision(p.trunkPrecision) };
      const key = JSON.stringify({ backbones, resolution: p.resolution, ...work, views: ftViews, budget: p.budgetMinutes, backend: backend.name });
      const earlier = rememberedChoice(key);
      if (earlier) {
        blocks = earlier.blocks;
        console.log(`regime: ${regimeName(backbones, blocks)} (auto: chosen ${earlier.at} for these settings — estimates then ${earlier.estimates}; delete ${choiceFile()} to measure again)`);
      } else {
        const spent = (Date.now() - tStart) / 1000;
        const budget = p.budgetMinutes * 60 - spent - SAVE_RESERVE_SECONDS;
        const choice = await timed('choose regime (timing probes)', () => chooseRegime(backbones, work, splits.train, fo, budget));
        blocks = choice.blocks;
        const est = choice.estimates.map((e) => `${e.name} ~${(e.seconds / 60).toFixed(1)} min (data ${(e.dataSeconds / 60).toFixed(1)} + training ${(e.trainSeconds / 60).toFixed(1)})`).join(', ');
        rememberChoice(key, { blocks, estimates: est });
        console.log(`regime: ${regimeName(backbones, blocks)} (auto: the best that fits ${p.budgetMinutes} min from a cold cache; estimates ${est})`);
      }
    }
  } else {
    console.log(`regime: ${regimeName(backbones, blocks)} (--trainable-blocks ${blocks.join(',')})`);
  }
  if (blocks.some((k) => k > 0)) {
    await fineTuneMain(p, blocks, ftViews, { backend, splits, fo, ev, timed, tStart, timings, outDir });
    return;
  }

  const train = await timed(`features train (${p.views.join(',')})`, () => featuresFor(splits.train, p.views, fo));
  const val = await timed(`features validation (${ev.join('+')})`, () => featuresFor(splits.val, ev, fo));
  const testFull = await timed(`features test (${ev.join('+')})`, () => featuresFor(splits.testFull, ev, fo));

  // The seed's sweep: 4 learning rates x 2 dropout rates, one table, all in the run log.
  let lr = p.lr ?? NaN;
  let dropout = p.dropout ?? NaN;
  let sweepTableText = '';
  if (p.sweepEpochs > 0) {
    const s = await timed(`sweep 4x2 (${Math.min(p.sweepImages || train.n, train.n)} images, ${p.sweepEpochs} epochs each)`, () =>
      sweepHeads(train, val, p, { backend: backend.name, saveRun: true }),
    );
    s.best.head.dispose();
    sweepTableText = s.table;
    console.log(`\nsweep on ${s.images} images (validation accuracy @ best epoch; group ${s.group}):\n${s.table}\n`);
    if (Number.isNaN(lr)) lr = s.best.config.lr;
    if (Number.isNaN(dropout)) dropout = s.best.config.dropout;
  }

  const final = await timed(`final training (${p.epochs} epochs)`, () => trainFinal(train, val, p, lr, dropout, { backend: backend.name, saveRun: true }));
  if (final.message) console.log(final.message);

  // Evaluation on every labelled split; TTA averages plain + flipped predictions.
  const evals = await timed('evaluation', () => evaluateHead(final.head, val, testFull, splits));

  // Assemble pixels -> resize -> backbone(s) -> head, check it against head(features), save.
  const saved = await timed('assemble + check + save model', () =>
    saveClassifier({ head: final.head, params: p, splits, test: testFull, evals, training: { ...final.config, bestEpoch: final.bestEpoch }, runId: final.runId, dir: outDir }),
  );
  if (final.runId) updateRun(final.runId, { testAccuracy: headline(evals.testExact), metrics: metricsOf(evals) });

  let e2eText = '';
  if (p.endToEnd > 0) {
    const c = await timed(`end-to-end comparison (${p.endToEnd} images)`, () => compareRegimes(data, p, { images: p.endToEnd, epochs: p.e2eEpochs, config: { lr, dropout } }));
    e2eText = `cached views vs end-to-end (${c.images} training images, ${c.epochs} epochs):\n` +
      formatTable(['regime', 'val accuracy', 'seconds'], c.rows.map((r) => [r.regime, percent(r.valAccuracy), r.seconds.toFixed(1)]));
  }

  printSummary({
    backend: backend.summary,
    model: `${backbones.join(' + ')} @ ${p.resolution}px -> head(units ${final.config.units}, dropout ${dropout}, lr ${lr}); best epoch ${final.bestEpoch}/${final.history.length}; run ${final.runId}`,
    saved, evals, splits, tta: p.tta, timings, tStart,
    extra: [...(sweepTableText ? [`sweep:\n${sweepTableText}`] : []), ...(e2eText ? [e2eText] : [])],
  });
  await terminateFeaturePool();
}

/** The goal the project measures itself against (issue: fine-tuning), said after every run. */
const TARGET = { validation: 0.94, testExact: 0.935 };
/** Seconds kept back from the budget for evaluation, assembling, checking and saving the model. */
const SAVE_RESERVE_SECONDS = 60;
/** Fine-tuning trains on plain and flipped cached activations (unless --views says otherwise). */
const FINE_TUNE_VIEWS = ['plain', 'flip'];

type Timed = <T>(what: string, f: () => Promise<T> | T) => Promise<T>;

function printSummary(o: {
  backend: string; model: string; saved: { dir: string; maxDiff: number }; evals: Evaluations; splits: Splits; tta: boolean;
  timings: [string, number][]; tStart: number; extra: string[];
}): void {
  const { evals } = o;
  console.log('\n================ summary ================');
  console.log(o.backend);
  console.log(`model: ${o.model}`);
  console.log(`saved to ${o.saved.dir} (end-to-end model vs head on cached features: max |dp| = ${o.saved.maxDiff.toExponential(2)})\n`);
  console.log(
    formatTable(
      ['split', 'images', 'accuracy', ...(o.tta ? ['accuracy + TTA'] : [])],
      evals.all.map((e) => [e.label, String(e.plain.n), percent(e.plain.accuracy), ...(e.tta ? [percent(e.tta.accuracy)] : [])]),
    ),
  );
  const exact = evals.testExact.tta ?? evals.testExact.plain;
  console.log(`\nper class on ${exact.split}:\n${formatEvaluation(exact)}`);
  console.log(`\nconfusion matrix (${exact.split}):\n${formatConfusion(exact, o.splits.classNames)}`);
  for (const e of o.extra) console.log(`\n${e}`);
  o.timings.push(['total', (Date.now() - o.tStart) / 1000]);
  console.log(`\ntimings:\n${formatTable(['step', 'seconds'], o.timings.map(([k, s]) => [k, s.toFixed(1)]))}`);
  const v = headline(evals.validation);
  const t = headline(evals.testExact);
  const met = v >= TARGET.validation && t >= TARGET.testExact;
  console.log(`\ntarget (>= ${percent(TARGET.validation)} validation, >= ${percent(TARGET.testExact)} test 0-999): ${met ? 'MET' : 'not met'} — validation ${percent(v)}, test 0-999 ${percent(t)}`);
}

/** The fine-tuning regime: activations at the cuts (cached), trunks + head trained together, evaluated, saved. */
async function fineTuneMain(
  p: ExperimentConfig, blocks: number[], views: string[],
  c: { backend: BackendChoice; splits: Splits; fo: FeatureOptions; ev: string[]; timed: Timed; tStart: number; timings: [string, number][]; outDir: string },
): Promise<void> {
  const { splits, fo, ev, timed } = c;
  const backbones = p.backbones;
  const cuts = await cutsFor(backbones, blocks);
  const what = backbones.map((b, i) => (cuts[i] ? `${b} at ${cuts[i]}` : `${b} pooled`)).join(', ');
  console.log(`fine-tuning data: ${what}; train views ${views.join(',')}`);
  const train = await timed(`cached data train (${views.join(',')})`, () => fineTuneDataFor(splits.train, views, cuts, backbones, fo));
  const valSet = await timed(`cached data validation (${ev.join('+')})`, () => fineTuneDataFor(splits.val, ev, cuts, backbones, fo));
  const testSet = await timed(`cached data test (${ev.join('+')})`, () => fineTuneDataFor(splits.testFull, ev, cuts, backbones, fo));
  const lr = p.lr ?? DEFAULT_TRAIN.lr;
  const dropout = p.dropout ?? DEFAULT_TRAIN.dropout;
  const ftConfig = { units: p.units, seed: p.seed, lr, dropout, backboneLr: p.backboneLr, trunkPrecision: resolveTrunkPrecision(p.trunkPrecision), epochs: p.fineTuneEpochs, batchSize: p.fineTuneBatchSize };
  const ft = await timed(`fine-tuning (${p.fineTuneEpochs} epochs)`, async () =>
    fineTune(train, valSet, ftConfig, {
      backend: c.backend.name, saveRun: true, log: (l) => console.log(l), run: { data: { ...runData(p), trainViews: views, trainableBlocks: blocks } },
      cache: { root: fo.cacheDir ?? dataDir('cache'), key: await fineTuneKey({ train: splits.train, val: splits.val, backbones, cuts, resolution: p.resolution, views, config: resolveFineTuneConfig(ftConfig), backbonesDir: fo.backbonesDir }), retrain: p.retrain },
    }),
  );
  if (ft.reused) {
    const row = c.timings.find(([label]) => label.startsWith('fine-tuning ('));
    if (row) row[0] = 'fine-tuning (weights reused)';
  }
  try {
    if (ft.result.message) console.log(ft.result.message);
    const { test, evals } = await timed('evaluation', () => {
      const v = ft.features(valSet);
      const t = ft.features(testSet);
      return { test: t, evals: evaluateHead(ft.head, v, t, splits) };
    });
    const regime = { name: regimeName(backbones, blocks), trainableBlocks: blocks, cuts, backboneLr: p.backboneLr, trunkPrecision: ftConfig.trunkPrecision, epochs: p.fineTuneEpochs, trainViews: views, trainableParameters: ft.trainableParameters };
    const saved = await timed('assemble + check + save model', async () =>
      saveClassifier({
        head: ft.head, params: { ...p, views }, splits, test, evals, training: { ...ft.config, bestEpoch: ft.result.bestEpoch },
        runId: ft.result.runId, dir: c.outDir, backboneWeights: await ft.backboneWeights(), regime,
      }),
    );
    if (ft.result.runId) updateRun(ft.result.runId, { testAccuracy: headline(evals.testExact), metrics: metricsOf(evals) });
    printSummary({
      backend: c.backend.summary,
      model: `${regime.name} (${what}; ${ft.trainableParameters.toLocaleString('en')} trainable parameters) @ ${p.resolution}px -> head(units ${p.units}, dropout ${dropout}, lr ${lr}, backbone lr ${p.backboneLr}, ${ftConfig.trunkPrecision} training step); best epoch ${ft.result.bestEpoch}/${ft.result.history.length}; run ${ft.result.runId}${ft.reused ? ` (weights reused from the fine-tuned cache, trained ${ft.reused.savedAt})` : ''}`,
      saved, evals, splits, tta: p.tta, timings: c.timings, tStart: c.tStart, extra: [],
    });
  } finally {
    ft.dispose();
    ft.head.dispose();
  }
}

main().catch(async (err) => {
  // Set before awaiting anything: idle worker threads are unref'd, so the event loop can drain during the cleanup
  // below and end the process on its own — with this code, never with 0.
  // Ctrl-C stops the running step between batches (finished feature chunks stay cached): 130, as a shell expects.
  const code = err instanceof InterruptedError ? 130 : 1;
  process.exitCode = code;
  console.error(`${code === 130 ? 'interrupted' : 'error'}: ${err instanceof Error ? err.message : String(err)}`);
  await terminateFeaturePool().catch(() => {});
  process.exit(code);
});
