// Issue 24, item 7: the environment of the kernel. A JupyterLab kernel reads CIFAR10_DIR, BACKBONES_DIR and the
// smoke settings once, when it starts; before, nothing in a notebook said which values came from there, and changing
// one meant restarting the kernel with new env vars. Now the parameters cell marks each value's source ("env NAME",
// "set in notebook", unmarked = default), adds a line with the environment's values, the data folders and how to
// change them, and `params(defaults, { set: {...} })` sets values from inside the notebook, the data folders included.
import { test, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { EXPERIMENT } from '../lib/experiment/pipeline';
import { readNotebook, joinText, CodeCell } from '../lib/jupyter/nbformat';
import { printedParams, runScale } from '../lib/jupyter/report';
import { params } from '../lib/settings/params';
import { runtimeContext, setRuntimeContext } from '../lib/settings/context';
import { PROJECT_ROOT } from '../lib/settings/paths';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-params-'));
after(() => fs.rmSync(work, { recursive: true, force: true }));

function printed(fn: () => void): string[] {
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(...String(s).split('\n'));
  try {
    fn();
  } finally {
    console.log = log;
  }
  return lines;
}

test('each value says where it came from: the environment, the notebook, or (unmarked) the default', () => {
  let p!: ReturnType<typeof params<{ trainLimit: number; epochs: number; resolution: number; lrFindSteps: number }>>;
  const lines = printed(() => {
    p = params({ trainLimit: 0, epochs: 15, resolution: 160, lrFindSteps: 200 }, { env: { TRAIN_LIMIT: '2000', EPOCHS: '5' }, set: { epochs: 3, lrFindSteps: 50 } });
  });
  assert.deepEqual({ ...p }, { trainLimit: 2000, epochs: 3, resolution: 160, lrFindSteps: 50 }, 'set wins over the environment, which wins over the default');
  assert.equal(lines[0], 'parameters: trainLimit=2000 (env TRAIN_LIMIT), epochs=3 (set in notebook; EPOCHS=5 ignored), resolution=160, lrFindSteps=50 (set in notebook)');
  assert.match(lines[1], /^ {2}from the environment: TRAIN_LIMIT=2000; set in the notebook: epochs, lrFindSteps; 1 default\. Env vars are read when the kernel starts: to change a value without restarting it, pass params\(\.\.\., \{ set: \{ name: value \} \}\)\.$/);
  // The report reads the first line back: every value that is not the default, by its env var.
  assert.deepEqual(printedParams(lines.join('\n')), { TRAIN_LIMIT: '2000', EPOCHS: '3', LR_FIND_STEPS: '50' });
  assert.equal(runScale(printedParams(lines.join('\n'))).banner, 'SMOKE RUN: 2,000 training images, 3 final epochs');
});

test('a value set in the notebook is checked like an env var, and only a parameter (or a data folder) can be set', () => {
  const quiet = (set: Record<string, unknown>, defaults: Record<string, any> = { ...EXPERIMENT, lrFindSteps: 200 }) =>
    () => params(defaults, { env: {}, quiet: true, set: set as never });
  assert.throws(quiet({ trainLimit: 2.5 }), /^Error: params: set trainLimit=2\.5: expected a whole number >= 0$/);
  assert.throws(quiet({ backbones: ['resnet'] }), /^Error: params: set backbones=\["resnet"\]: expected a comma list of (mobilenet_v1_0\.75|mobilenet_v2), /);
  assert.throws(quiet({ lrFindSteps: '50' }), /^Error: params: set lrFindSteps="50": expected a number like its default 200$/);
  assert.throws(quiet({ trainLimt: 2000 }), /^Error: params: set trainLimt: not a parameter of this notebook \(its parameters: dataset, fit, valFraction, testFraction, trainLimit, .*; or dataDir, cifar10Dir, backbonesDir, backend\)$/);
  assert.throws(quiet({ epochs: null }), /^Error: params: set epochs=null: expected a value/);
  assert.equal(params({ ...EXPERIMENT }, { env: {}, quiet: true, set: { lr: null, trainableBlocks: [0, 2] } }).trainableBlocks?.join(','), '0,2');
  // A bad env var is still a one-line error even when the notebook sets that value.
  assert.throws(() => params({ trainLimit: 0 }, { env: { TRAIN_LIMIT: '2k' }, quiet: true, set: { trainLimit: 10 } }), /^Error: TRAIN_LIMIT="2k": expected a whole number/);
});

test('the data folders set in the notebook are the runtime context every later cell uses, and are printed', () => {
  const cifar = fs.mkdtempSync(path.join(work, 'cifar-'));
  const backbones = fs.mkdtempSync(path.join(work, 'backbones-'));
  const saved = { CIFAR10_DIR: process.env.CIFAR10_DIR, BACKBONES_DIR: process.env.BACKBONES_DIR };
  process.env.CIFAR10_DIR = cifar;
  delete process.env.BACKBONES_DIR;
  try {
    // Notebook 01's parameters (no folder among them): the folders line says where each comes from.
    const lines = printed(() => params({ valSize: 5000, samplesPerClass: 10 }, { set: { backbonesDir: backbones } }));
    assert.equal(runtimeContext().backbonesDir, backbones);
    assert.equal(runtimeContext().cifar10Dir, cifar);
    assert.match(lines[1], new RegExp(`; folders: CIFAR10_DIR=${cifar} \\(env CIFAR10_DIR\\), BACKBONES_DIR=${backbones} \\(set in notebook\\), DATA_DIR=\\S+ \\(default\\)\\.`));
  } finally {
    for (const [k, v] of Object.entries(saved)) v === undefined ? delete process.env[k] : (process.env[k] = v);
    setRuntimeContext(undefined);
  }
});

test('in the project kernel, as a Lab user runs it: set wins over the kernel\'s environment and moves the data folders', () => {
  const backbones = fs.mkdtempSync(path.join(work, 'nb-backbones-'));
  const nb = {
    nbformat: 4, nbformat_minor: 5, metadata: {},
    cells: [
      { cell_type: 'code', id: 'p', metadata: {}, execution_count: null, outputs: [], source:
        "import { params } from './lib/settings/params';\nimport { EXPERIMENT } from './lib/experiment/pipeline';\n" +
        `const P = params({ ...EXPERIMENT, lrFindSteps: 200 }, { set: { trainLimit: 2000, backbonesDir: ${JSON.stringify(backbones)} } });` },
      { cell_type: 'code', id: 'c', metadata: {}, execution_count: null, outputs: [], source:
        "import { runtimeContext } from './lib/settings/context';\nconsole.log(`trainLimit ${P.trainLimit}, backbones from ${runtimeContext().backbonesDir}`);" },
    ],
  };
  const file = path.join(work, 'set.ipynb');
  fs.writeFileSync(file, JSON.stringify(nb));
  // The kernel starts with TRAIN_LIMIT=500, as `npm run lab` started from a smoke shell would.
  const r = spawnSync(process.execPath, ['--require', 'ts-node/register/transpile-only', path.join(PROJECT_ROOT, 'scripts', 'notebooks.ts'), file, '--out', path.join(work, 'out'), '-p', 'TRAIN_LIMIT=500', '--timeout', '120'], {
    cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 180_000,
  });
  assert.equal(r.status, 0, r.stderr.slice(-600));
  const cells = readNotebook(path.join(work, 'out', 'set.ipynb')).cells.filter((c): c is CodeCell => c.cell_type === 'code');
  const text = (c: CodeCell) => c.outputs.map((o) => (o.output_type === 'stream' ? joinText(o.text) : '')).join('');
  const [line1, line2] = text(cells[0]).split('\n');
  assert.match(line1, /^parameters: dataset="cifar10", fit="cover", valFraction=0\.15, testFraction=0\.15, trainLimit=2000 \(set in notebook; TRAIN_LIMIT=500 ignored\), valLimit=0, /);
  assert.match(line2, /^ {2}from the environment: (?!.*TRAIN_LIMIT).*; set in the notebook: trainLimit, backbonesDir; \d+ defaults\. Env vars are read when the kernel starts/);
  assert.equal(text(cells[1]).trim(), `trainLimit 2000, backbones from ${backbones}`);
  assert.equal(printedParams(text(cells[0])).TRAIN_LIMIT, '2000', 'the report reads what the notebook ran with');
});
