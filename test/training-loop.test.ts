// The training loop and its callbacks: early stopping restores the best epoch's weights, a NaN loss stops with a
// message and keeps the best weights, the run log is written only when asked, extra callbacks see every event and
// can stop the fit.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { LabeledFeatures } from '../lib/features/labeled-features';
import { headWeights } from '../lib/model/classifier';
import { listRuns, readRun, runsDir } from '../lib/experiment/runs';
import { Callback, FitState, trainHead } from '../lib/train/training-loop';
import { initRuntimeContext } from '../lib/settings/context';
import { blobs, maxAbsDiff } from './blobs';

initRuntimeContext({ ...process.env, DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'training-loop-test-')) });
const ready = initBackend({ log: () => {} });

test('early stopping restores the best epoch weights (not the last)', async () => {
  await ready;
  const train = blobs(600, 16, 1, 2.5);
  const val = blobs(200, 16, 2, 2.5);
  const snapshots = new Map<number, Float32Array[]>();
  const res = await trainHead(train, val, { units: 16, epochs: 12, batchSize: 32, lr: 0.02, schedule: 'constant', patience: 0, dropout: 0.5 }, {
    progress: false,
    onEpochEnd: (rec, weights) => {
      const ws = weights();
      snapshots.set(rec.epoch, ws.map((w) => w.dataSync().slice() as Float32Array));
      tf.dispose(ws);
    },
  });
  assert.equal(res.history.length, 12);
  const accs = res.history.map((h) => h.valAcc);
  assert.equal(res.bestValAcc, Math.max(...accs));
  assert.ok(res.bestEpoch < 12, `the noisy setup should peak before the last epoch (val accs ${accs.join(', ')})`);
  const final = headWeights(res.head).map((w) => w.dataSync());
  const best = snapshots.get(res.bestEpoch)!;
  const last = snapshots.get(12)!;
  for (let i = 0; i < final.length; i++) assert.ok(maxAbsDiff(final[i], best[i]) === 0, `weight ${i} is not the best epoch's`);
  assert.ok(final.some((w, i) => maxAbsDiff(w, last[i]) > 0), 'final weights equal the last epoch: nothing was restored');
  // The restored head really scores the best validation accuracy.
  const p = (res.head.predict(tf.tensor2d(val.views[0], [val.n, val.dim])) as tf.Tensor).argMax(1).dataSync();
  const acc = Array.from(p).filter((c, i) => c === val.labels[i]).length / val.n;
  assert.ok(Math.abs(acc - res.bestValAcc) < 1e-9, `restored head scores ${acc}, best epoch scored ${res.bestValAcc}`);
  res.head.dispose();
});

test('patience stops the run once the monitored metric has not improved for that many epochs', async () => {
  await ready;
  const train = blobs(600, 16, 1, 2.5);
  const val = blobs(200, 16, 2, 2.5);
  const res = await trainHead(train, val, { units: 16, epochs: 40, batchSize: 32, lr: 0.02, schedule: 'constant', patience: 3, dropout: 0.5 }, { progress: false });
  assert.equal(res.stopReason, 'early-stop');
  assert.equal(res.history.length, res.bestEpoch + 3);
  res.head.dispose();
});

test('a NaN loss stops the run with a one-line message and keeps the best weights so far', async () => {
  await ready;
  const train = blobs(300, 8, 3);
  const val = blobs(100, 8, 4);
  const poisoned: LabeledFeatures = { ...train, views: [train.views[0].slice()] };
  let epoch = 0;
  const messages: string[] = [];
  const reported: number[] = [];
  const res = await trainHead(train, val, { units: 8, epochs: 6, batchSize: 50, patience: 0 }, {
    progress: false,
    log: (l) => messages.push(l),
    onEpochEnd: (rec) => void reported.push(rec.epoch),
    // Poison the features from epoch 3 on: the loss becomes NaN mid-run.
    epochData: async (e) => {
      epoch = e;
      if (e >= 2) poisoned.views[0].fill(NaN);
      return e >= 2 ? poisoned : train;
    },
  });
  assert.equal(res.stopReason, 'non-finite-loss');
  assert.equal(epoch, 2);
  assert.deepEqual(reported, [1, 2], 'the broken epoch is not reported as an epoch');
  assert.equal(res.history.length, 3);
  assert.ok(res.bestEpoch >= 1 && res.bestEpoch <= 2);
  assert.match(res.message ?? '', /^stopped at epoch 3: training loss became NaN .*keeping the best weights, from epoch [12]$/);
  assert.ok(!res.message!.includes('\n'));
  assert.equal(messages.at(-1), res.message);
  const w = headWeights(res.head);
  assert.ok(w.every((t) => Array.from(t.dataSync()).every(Number.isFinite)), 'restored weights contain NaN');
  res.head.dispose();
});

test('the run log is written only with saveRun: params, history, best epoch, backend', async () => {
  await ready;
  const train = blobs(200, 8, 5);
  const val = blobs(100, 8, 6);
  const cfg = { units: 8, epochs: 2, batchSize: 50 };
  const count = () => (fs.existsSync(runsDir()) ? fs.readdirSync(runsDir()).length : 0);
  const n0 = count();
  const quiet = await trainHead(train, val, cfg, { progress: false });
  quiet.head.dispose();
  assert.equal(count(), n0, 'a library call without saveRun wrote to the run log');
  assert.equal(quiet.runId, undefined);
  const res = await trainHead(train, val, cfg, { progress: false, saveRun: true, backend: 'test-backend', run: { group: 'g1', slug: 'logged', data: { note: 'x' } } });
  res.head.dispose();
  assert.equal(count(), n0 + 1);
  const r = readRun(res.runId!);
  assert.match(r.id, /-logged$/);
  assert.equal(r.kind, 'train');
  assert.equal(r.group, 'g1');
  assert.equal(r.params.units, 8);
  assert.deepEqual(r.data, { nTrain: 200, nVal: 100, dim: 8, trainViews: 1, note: 'x' });
  assert.deepEqual(r.history, res.history);
  assert.equal(r.bestEpoch, res.bestEpoch);
  assert.equal(r.valAccuracy, res.bestValAcc);
  assert.equal(r.testAccuracy, null);
  assert.equal(r.backend, 'test-backend');
  assert.deepEqual(listRuns({ group: 'g1' }).map((x) => x.id), [res.runId]);
  // Per-epoch data (end-to-end mode) is logged as such.
  const e2e = await trainHead(train, val, cfg, { progress: false, saveRun: true, epochData: async () => train });
  e2e.head.dispose();
  assert.equal(readRun(e2e.runId!).kind, 'end-to-end');
});

test('extra callbacks see every event in order and can stop the fit', async () => {
  await ready;
  const train = blobs(200, 8, 5);
  const val = blobs(100, 8, 6);
  const events: string[] = [];
  const spy: Callback = {
    beforeFit: () => void events.push('beforeFit'),
    afterValidate: (s) => void events.push(`afterValidate ${s.rec.epoch}`),
    afterEpoch: (s: FitState) => {
      events.push(`afterEpoch ${s.rec.epoch}`);
      if (s.rec.epoch === 2) s.stop('early-stop', 'enough');
    },
    afterFit: (s) => void events.push(`afterFit ${s.stopReason}`),
  };
  const res = await trainHead(train, val, { units: 8, epochs: 5, batchSize: 50, patience: 0 }, { progress: false, callbacks: [spy] });
  res.head.dispose();
  assert.deepEqual(events, ['beforeFit', 'afterValidate 1', 'afterEpoch 1', 'afterValidate 2', 'afterEpoch 2', 'afterFit early-stop']);
  assert.equal(res.history.length, 2);
  assert.equal(res.stopReason, 'early-stop');
  assert.equal(res.message, 'enough');
});

test('bnAffine: false keeps BN scale/offset at 1/0 and still trains', async () => {
  await ready;
  const train = blobs(500, 16, 8, 0.6);
  const val = blobs(200, 16, 9, 0.6);
  const res = await trainHead(train, val, { units: 16, epochs: 10, lr: 0.01, batchSize: 50, bnAffine: false, patience: 0 }, { progress: false });
  const [gamma, beta] = headWeights(res.head);
  assert.ok(Array.from(gamma.dataSync()).every((v) => v === 1));
  assert.ok(Array.from(beta.dataSync()).every((v) => v === 0));
  assert.ok(res.bestValAcc > 0.8, `val accuracy ${res.bestValAcc}`);
  res.head.dispose();
});
