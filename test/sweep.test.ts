// The sweep (one table, its runs grouped in the log when logged) and the LR finder.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../lib/engine/backend';
import { listRuns, readRun } from '../lib/experiment/runs';
import { lrFind, sweep } from '../lib/train/sweep';
import { initRuntimeContext } from '../lib/settings/context';
import { blobs } from './blobs';

initRuntimeContext({ ...process.env, DATA_DIR: fs.mkdtempSync(path.join(os.tmpdir(), 'sweep-test-')) });
const ready = initBackend({ log: () => {} });

test('the sweep trains every setting, keeps the best head and groups its logged runs', async () => {
  await ready;
  const train = blobs(200, 8, 5);
  const val = blobs(100, 8, 6);
  const s = await sweep(train, val, { lr: [0.001, 0.01], dropout: [0.1] }, { units: 8, epochs: 2, batchSize: 50 }, { progress: false, saveRun: true });
  assert.equal(s.results.length, 2);
  assert.equal(s.best.bestValAcc, Math.max(...s.results.map((r) => r.bestValAcc)));
  const runs = listRuns({ group: s.group });
  assert.equal(runs.length, 2);
  const r = readRun(s.results[0].runId!);
  assert.equal(r.kind, 'sweep');
  assert.equal(r.params.lr, 0.001);
  assert.equal(r.history.length, 2);
  assert.equal(r.testAccuracy, null);
  assert.ok(r.backend.length > 0);
  assert.match(s.table, /0\.001/);
  s.best.head.dispose();
  // Unlogged by default.
  const quiet = await sweep(train, val, { lr: [0.001], dropout: [0.1] }, { units: 8, epochs: 1, batchSize: 50 }, { progress: false });
  quiet.best.head.dispose();
  assert.equal(listRuns({ group: quiet.group }).length, 0);
  assert.equal(quiet.best.runId, undefined);
});

test('the LR finder', async () => {
  await ready;
  const f = await lrFind(blobs(400, 8, 7), { units: 8, batchSize: 32 }, { steps: 80, minLr: 1e-5, maxLr: 10 });
  assert.ok(f.lrs.length > 20);
  for (let i = 1; i < f.lrs.length; i++) assert.ok(f.lrs[i] > f.lrs[i - 1]);
  assert.ok(f.suggested > 1e-5 && f.suggested < 10);
});
