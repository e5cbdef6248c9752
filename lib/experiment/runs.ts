// The experiment log: one JSON file per training run under data/runs/, written atomically, read back by
// scripts and notebooks to compare runs (parameters, per-epoch history, best epoch, accuracies, time, backend).
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../util/atomic';
import { dataDir } from '../settings/paths';
import { bestEffortWrite } from '../util/writable';
import { formatTable, percent } from '../util/format';

export { formatTable };

export interface EpochRecord {
  epoch: number; // 1-based
  lr: number;
  loss: number; // mean training loss over the epoch
  valLoss: number;
  valAcc: number;
  seconds: number; // wall time of the epoch (training + validation)
}

export interface RunRecord {
  id: string;
  kind: 'train' | 'sweep' | 'end-to-end' | 'lr-find' | 'fine-tune';
  /** Groups the runs of one sweep. */
  group?: string;
  createdAt: string;
  /** Every hyper-parameter of the run. */
  params: Record<string, unknown>;
  /** What it was trained on: backbones, resolution, views, sizes. */
  data: Record<string, unknown>;
  history: EpochRecord[];
  bestEpoch: number;
  valAccuracy: number;
  valLoss: number;
  /** Accuracy on test images 0-999 (exact) when evaluated; null for tuning runs, which never look at test. */
  testAccuracy: number | null;
  /** Any further labelled accuracies (e.g. full test, TTA). */
  metrics: Record<string, number>;
  stopReason: 'completed' | 'early-stop' | 'non-finite-loss';
  message?: string;
  wallSeconds: number;
  secondsPerEpoch: number;
  backend: string;
}

export function runsDir(): string {
  return dataDir('runs');
}

let seq = 0;
/** Sortable, unique id: time + pid + counter + a slug. */
export function newRunId(slug = 'run'): string {
  const t = new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  return `${t}-${process.pid}-${seq++}-${slug.replace(/[^a-zA-Z0-9_.-]+/g, '_')}`;
}

/** Log a run; where the log folder cannot be written, say so once and go on (the run's results are not lost). */
export function writeRun(run: RunRecord, dir: string = runsDir()): string {
  const file = path.join(dir, `${run.id}.json`);
  bestEffortWrite(`run log in ${dir}`, () => writeJsonAtomic(file, run));
  return file;
}

export function readRun(id: string, dir: string = runsDir()): RunRecord {
  const file = path.join(dir, id.endsWith('.json') ? id : `${id}.json`);
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as RunRecord;
  } catch (err) {
    throw new Error(`run ${file}: unreadable (${(err as Error).message.split('\n')[0]})`);
  }
}

/** Merge fields into a logged run (e.g. test accuracy once the final model is evaluated). */
export function updateRun(id: string, patch: Partial<RunRecord>, dir: string = runsDir()): RunRecord | undefined {
  if (!fs.existsSync(path.join(dir, `${id}.json`))) return undefined; // never logged (read-only log folder, noted then)
  const run = { ...readRun(id, dir), ...patch };
  if (patch.metrics) run.metrics = { ...readRun(id, dir).metrics, ...patch.metrics };
  writeRun(run, dir);
  return run;
}

/** All runs, oldest first; unreadable files are skipped (a crashed writer never leaves one: writes are atomic). */
export function listRuns(filter: { kind?: RunRecord['kind']; group?: string } = {}, dir: string = runsDir()): RunRecord[] {
  if (!fs.existsSync(dir)) return [];
  const runs: RunRecord[] = [];
  for (const f of fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
    try {
      const r = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8')) as RunRecord;
      if (filter.kind && r.kind !== filter.kind) continue;
      if (filter.group && r.group !== filter.group) continue;
      runs.push(r);
    } catch {
      // not a run file
    }
  }
  return runs;
}


/** A plain-text table comparing runs (monospace; also fine in a notebook <pre>). */
export function runsTable(runs: RunRecord[], columns: string[] = ['lr', 'dropout', 'units', 'epochs', 'batchSize']): string {
  const header = [...columns, 'best ep', 'val acc', 'val loss', 'test 0-999', 's/epoch', 'stop'];
  const rows = runs.map((r) => [
    ...columns.map((c) => String(r.params[c] ?? '-')),
    `${r.bestEpoch}/${r.history.length}`,
    percent(r.valAccuracy),
    isFinite(r.valLoss) ? r.valLoss.toFixed(4) : '-',
    percent(r.testAccuracy),
    r.secondsPerEpoch.toFixed(2),
    r.stopReason,
  ]);
  return formatTable(header, rows);
}
