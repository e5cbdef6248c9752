// Issue 24, item 8: the report of what a user did in JupyterLab. Before, after running the notebooks in Lab,
// `npm run report` failed ("no executed notebooks in out/notebooks; run npm run notebooks first"), `--in notebooks`
// was undocumented and labelled every notebook just run in Lab "(not run)", and the headline table notebook 06
// prints ("accuracy + TTA") was never read back. Now the report falls back to notebooks/ as saved in Lab (one line
// says which folder it used), a notebook saved with outputs counts as run, and --in is documented.
// The notebooks here are the project's six, given outputs as Lab saves them: execution counts, outputs, Lab's cell
// timings where "record timing" is on, and no runner metadata.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { lineChart } from '../lib/evaluate/plot';
import { PLOTLY_MIME } from '../lib/evaluate/plotly-html';
import { accuracyTable } from '../lib/experiment/summary';
import { CodeCell, joinText, Notebook, readNotebook, splitLines } from '../lib/jupyter/nbformat';
import { printedHeadline, reportInputs, runState } from '../lib/jupyter/report';
import { params } from '../lib/settings/params';
import { PROJECT_ROOT } from '../lib/settings/paths';

const TS_NODE = require.resolve('ts-node/register/transpile-only');
const REPORT = path.join(PROJECT_ROOT, 'scripts', 'report.ts');
const NAMES = fs.readdirSync(path.join(PROJECT_ROOT, 'notebooks')).filter((f) => f.endsWith('.ipynb')).sort();
const METRICS = { validation: 0.828, 'validation + TTA': 0.83, 'test 0-999 (exact)': 0.819, 'test 0-999 (exact) + TTA': 0.822 };
const SMOKE_ENV = { TRAIN_LIMIT: '2000', VAL_LIMIT: '500', TEST_LIMIT: '1000', EPOCHS: '5' };

let work: string;
let lab: string;
let clean: string;
let modelDir: string;

/** What the parameters cell of a notebook prints, from the real params() (as run with the smoke env vars). */
function paramsOutput(source: string): string {
  const m = /const P = params\((.*)\);/.exec(source);
  assert.ok(m, `no params(...) call in: ${source}`);
  // The notebook's defaults: the experiment's and the keys it adds; the values do not matter here, only the format.
  const { EXPERIMENT } = require('../lib/experiment/pipeline');
  const { DEFAULT_TRAIN } = require('../lib/train/head-trainer');
  const defaults = new Function('EXPERIMENT', 'DEFAULT_TRAIN', `return (${m![1]});`)(EXPERIMENT, DEFAULT_TRAIN);
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    params(defaults, { env: SMOKE_ENV });
  } finally {
    console.log = log;
  }
  return lines.join('\n') + '\n';
}

/** The outputs a cell of `name` would show, by what its source does (only the lines the report reads are real). */
function outputsFor(name: string, source: string, id: string): CodeCell['outputs'] {
  const stream = (text: string) => ({ output_type: 'stream' as const, name: 'stdout' as const, text: splitLines(text) });
  if (/\bparams\(/.test(source)) return [stream(paramsOutput(source))];
  const table = () => {
    // The table as notebooks 05 and 06 print it: lib/experiment/summary.ts accuracyTable itself, on these accuracies.
    const e = (label: string, n: number, acc: number, tta: number) => ({ label, plain: { n, accuracy: acc }, tta: { n, accuracy: tta } });
    const evals = { all: [e('validation', 500, METRICS.validation, METRICS['validation + TTA']), e('test 0-999 (exact)', 1000, METRICS['test 0-999 (exact)'], METRICS['test 0-999 (exact) + TTA'])] };
    return accuracyTable(evals as never, true) + '\n';
  };
  if (name.startsWith('05') && /openExperiment\(/.test(source)) return [stream('tfjs backend: tensorflow (libtensorflow 2.21.0, CPU, oneDNN, 2 threads)\n')];
  if (name.startsWith('05') && /await train\(/.test(source)) {
    const fig = lineChart({ title: 'Final training: best epoch 2 of 5', series: { 'validation accuracy': [0.7, 0.83] }, xTitle: 'epoch', yTitle: 'accuracy' });
    return [{ output_type: 'display_data', metadata: {}, data: { [PLOTLY_MIME]: fig, 'text/plain': ['figure'] } }, stream('best epoch 2 of 5 · 330,762 trainable parameters · run RUN-LAB\n')];
  }
  if (name.startsWith('05') && /await save\(/.test(source)) {
    return [stream(`model saved to ${modelDir} (validation 83.00%); it is now the current model\n${table()}\nsaved as ${id} (assembled model vs head on cached features: max difference 6.6e-7)\n`)];
  }
  if (name.startsWith('06') && /loadSavedModel\(P\)/.test(source)) {
    return [stream(`loaded model ${id} (the current model) from ${modelDir}: frozen, mobilenet_v2 @ 160px, 10 classes, validation 83.00% when saved; trained 2026-12-05T00:00:00.000Z, run RUN-LAB\n`)];
  }
  if (name.startsWith('06') && /accuracyTable\(/.test(source)) return [stream(table())];
  return []; // many cells show nothing: an execution count is all Lab saves for them
}

/** `nb` as JupyterLab saves it after Run All: counts, outputs, and (when `timing`) each cell's execution timestamps. */
function labSaved(name: string, nb: Notebook, timing: boolean, id: string, startedAt: string): Notebook {
  let count = 0;
  let t = Date.parse(startedAt);
  for (const c of nb.cells) {
    if (c.cell_type !== 'code') continue;
    c.execution_count = ++count;
    c.outputs = outputsFor(name, joinText(c.source), id);
    if (timing) {
      const start = new Date(t).toISOString();
      t += 1500;
      c.metadata.execution = { 'iopub.status.busy': start, 'iopub.execute_input': start, 'shell.execute_reply': new Date(t).toISOString(), 'iopub.status.idle': new Date(t).toISOString() };
    }
  }
  assert.equal(nb.metadata.runner, undefined, 'a notebook saved from Lab has no runner metadata');
  return nb;
}

before(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-report-'));
  const id = '20261205T100000-frozen';
  modelDir = path.join(work, 'models', id);
  fs.mkdirSync(modelDir, { recursive: true });
  fs.writeFileSync(path.join(work, 'models', 'current.json'), JSON.stringify({ id, since: '2026-12-05T10:00:00.000Z', reason: 'test' }));
  fs.writeFileSync(path.join(modelDir, 'metadata.json'), JSON.stringify({
    backbones: ['mobilenet_v2'], resolution: 160, classNames: [], head: { inputDim: 1280, units: 256 }, runId: 'RUN-LAB', date: '2026-12-05T10:10:00.000Z', gitCommit: 'abc123', metrics: METRICS,
  }));
  lab = path.join(work, 'lab');
  clean = path.join(work, 'clean');
  fs.mkdirSync(lab);
  fs.mkdirSync(clean);
  NAMES.forEach((name, i) => {
    const src = path.join(PROJECT_ROOT, 'notebooks', name);
    fs.copyFileSync(src, path.join(clean, name));
    // Half with Lab's "record timing" on, half without: both must read as run.
    fs.writeFileSync(path.join(lab, name), JSON.stringify(labSaved(name, readNotebook(src), i % 2 === 0, id, `2026-12-05T1${i}:00:00.000Z`), null, 1));
  });
});

after(() => fs.rmSync(work, { recursive: true, force: true }));

function report(args: string[]) {
  const r = spawnSync(process.execPath, ['-r', TS_NODE, REPORT, ...args], {
    cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, INIT_CWD: undefined, MODELS_DIR: path.join(work, 'models'), MODEL: undefined },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('npm run report --in <notebooks saved from Lab>: every page, none "(not run)", the headline read', () => {
  const out = path.join(work, 'report');
  const r = report(['--in', lab, '--out', out]);
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.equal(lines[0], `notebooks: 6 of 6 notebooks with outputs in ${lab} (--in)`);
  for (const name of NAMES) {
    const html = path.join(out, name.replace(/\.ipynb$/, '.html'));
    assert.ok(fs.existsSync(html), `${html} written`);
    assert.match(fs.readFileSync(html, 'utf8'), /saved with outputs \(run in JupyterLab or another front end, not by the runner\): (\d+) of \1 code cells ran/);
    assert.match(r.stdout, new RegExp(`${name.replace(/\.ipynb$/, '\\.html')} .*\\(ok\\)$`, 'm'));
  }
  assert.doesNotMatch(r.stdout, /not run/);
  // The headline: from the model notebook 06 says it loaded, cross-checked against the table it printed.
  assert.match(r.stdout, /headline from .*20261205T100000-frozen\/metadata\.json \(the saved model, run RUN-LAB\); image counts from 06-evaluate's output, whose accuracies agree$/m);
  assert.doesNotMatch(r.stdout, /warning:/);
  assert.match(r.stdout, /^ {2}SMOKE RUN: 2,000 training images/m, 'the smoke settings the parameters cells printed are read');
  const index = fs.readFileSync(path.join(out, 'index.html'), 'utf8');
  const rows = index.match(/<td>[^<]*<\/td><td class="num">[^<]*<\/td><td class="num">[^<]*<\/td><td class="num"><strong>[^<]*/g) ?? [];
  assert.deepEqual(rows.map((r) => r.replace(/<[^>]+>/g, ' ').trim().split(/\s+/).join(' ')), ['validation 500 82.80% 83.00%', 'test 0-999 (exact) 1,000 81.90% 82.20%']);
  const executed = /<dt>executed<\/dt><dd>([^<]*)/.exec(index)?.[1];
  // Notebooks 01, 03 and 05 were saved with Lab's cell timings (1.5 s per code cell), the others without.
  const codeCells = ['01-load', '03-build', '05-train'].map((n) => readNotebook(path.join(PROJECT_ROOT, 'notebooks', `${n}.ipynb`)).cells.filter((c) => c.cell_type === 'code').length);
  const seconds = 1.5 * codeCells.reduce((a, b) => a + b, 0);
  assert.equal(executed, `2026-12-05T10:00:00.000Z to 2026-12-05T14:00:00.000Z (${seconds} s of notebook time); run in JupyterLab (or another front end) and saved with outputs`);
  const statuses = [...index.matchAll(/<td>(\d\d-[\w-]+)<\/td><td>([^<]*)<\/td>/g)].map((m) => `${m[1]}: ${m[2]}`);
  assert.deepEqual(statuses, NAMES.map((n) => `${n.replace('.ipynb', '')}: ok`));
  // Lab's recorded cell timings show as each cell's seconds.
  assert.match(fs.readFileSync(path.join(out, '01-load.html'), 'utf8'), /<span class="secs">1.5 s<\/span>/);
});

test('--in a folder of notebooks nobody ran: exit 1, one line naming it', () => {
  const r = report(['--in', clean, '--out', path.join(work, 'report-clean')]);
  assert.equal(r.status, 1);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.deepEqual(errors, [`error: no executed notebooks in ${clean} (6 notebooks, none with outputs or execution counts): run them in JupyterLab and save, or \`npm run notebooks\``]);
});

test('without --in: out/notebooks when any there ran, else notebooks/ as saved in Lab, else one line naming both', () => {
  const empty = fs.mkdtempSync(path.join(work, 'out-notebooks-'));
  const shown = (p: string) => path.relative(work, p);
  const fromLab = reportInputs({ defaultIn: empty, labDir: lab, shown });
  assert.deepEqual(fromLab.files, NAMES.map((n) => path.join(lab, n)));
  assert.equal(fromLab.line, `notebooks: 6 of 6 notebooks with outputs in lab, as saved in JupyterLab (${shown(empty)} has no executed notebooks)`);
  // The runner's copies win when any of them ran.
  fs.copyFileSync(path.join(lab, NAMES[0]), path.join(empty, NAMES[0]));
  const fromRunner = reportInputs({ defaultIn: empty, labDir: lab, shown });
  assert.deepEqual(fromRunner.files, [path.join(empty, NAMES[0])]);
  assert.match(fromRunner.line, /^notebooks: 1 of 1 notebooks with outputs in out-notebooks-\w+ \(executed by `npm run notebooks`\)$/);
  assert.throws(() => reportInputs({ defaultIn: path.join(work, 'none'), labDir: clean, shown }),
    /^Error: no executed notebooks in none or clean: run `npm run notebooks`, or run the notebooks in JupyterLab and save them \(or name a folder with --in\)$/);
});

test('how a saved notebook ran is read from its cells: ok, partly run, an error, not run', () => {
  const nb = readNotebook(path.join(lab, NAMES[1]));
  assert.deepEqual([runState(nb).ran, runState(nb).status], [true, 'ok']);
  const code = nb.cells.filter((c): c is CodeCell => c.cell_type === 'code');
  const partly = structuredClone(nb);
  const pc = partly.cells.filter((c): c is CodeCell => c.cell_type === 'code');
  for (const c of pc.slice(2)) Object.assign(c, { execution_count: null, outputs: [] });
  assert.equal(runState(partly).status, `partly run: 2 of ${code.length} cells`);
  const failed = structuredClone(nb);
  const fc = failed.cells.filter((c): c is CodeCell => c.cell_type === 'code');
  fc[1].outputs.push({ output_type: 'error', ename: 'Error', evalue: 'boom', traceback: [] });
  assert.equal(runState(failed).status, `error in cell ${failed.cells.indexOf(fc[1]) + 1}`);
  assert.deepEqual(runState(readNotebook(path.join(clean, NAMES[1]))), { ran: false, status: 'not run', detail: 'not run: no code cell has an execution count or outputs' });
});

test('the accuracy table notebook 06 prints is read back, with and without its TTA column', () => {
  const e = (label: string, n: number, acc: number, tta?: number) => ({ label, plain: { n, accuracy: acc }, ...(tta !== undefined ? { tta: { n, accuracy: tta } } : {}) });
  const withTta = accuracyTable({ all: [e('validation', 500, 0.828, 0.83)] } as never, true);
  assert.deepEqual([...printedHeadline(withTta)], [['validation', { images: 500, accuracy: 0.828, tta: 0.83 }]]);
  const plain = accuracyTable({ all: [e('validation', 500, 0.828), e('test 0-999 (exact)', 1000, 0.5)] } as never, false);
  assert.deepEqual([...printedHeadline(plain)], [['validation', { images: 500, accuracy: 0.828 }], ['test 0-999 (exact)', { images: 1000, accuracy: 0.5 }]]);
});
