// npm run browser-check [-- NAME...]   (not part of `npm test`)
//
// JupyterLab 4 with the project kernel, driven by headless Chromium, as a person would use it:
//   1. a small check notebook (a bar chart, a heatmap with a '.2%' format, a log-x plot with a marker, a live plot)
//      runs in JupyterLab; every plot is ASSERTED on what it draws (below) and screenshotted as an element;
//   2. the same notebook executed by the headless runner (never trusted) is opened in JupyterLab: its plots must
//      draw without Trust, through plotly's own renderer; and its HTML report must draw them offline from file://;
//   3. the project's notebooks (or those named: `-- 05-train`) run in JupyterLab, one by one, on copies: each plot
//      asserted and screenshotted, each notebook saved through JupyterLab and measured on disk (a notebook with its
//      plots must stay small: figures travel as JSON, plotly.js is never stored), then reopened UNTRUSTED and its
//      plots must draw again;
//   4. the report of those saved notebooks: its front page must say SMOKE/FULL, show the headline numbers and draw
//      its key plots offline;
// and, after 1, Interrupt and errors as a person meets them (interruptCheck): feature extraction of 9,000 images is
// stopped with Kernel > Interrupt Kernel from the menu bar — within 2 s the cell must end with the one line
// "InterruptedError: … interrupted after …", the kernel's CPU (from /proc) must go idle, and a following cell must
// still read a variable defined before; then a cell with a runtime error on its line 2 must show "at cell line 2,
// column …" and no frames of tslab or Node. Both are screenshotted into out/screens/.
// What each plot is checked for (inspectPlot): it drew an SVG of a real size; no text anywhere in it is an
// unrendered plotly template ("%{z.2%}"); cartesian plots have both axis titles; heatmap cells print numbers (or
// percentages where the format says so); each marker's label sits over its dashed line (bounding boxes compared).
// Screenshots go to out/browser-check/ (one per plot element, plus each notebook's page); the interrupt and error
// cells' to out/screens/browser-interrupt.png and out/screens/browser-cell-error.png.
//
// Needs: `pip install jupyterlab plotly` (plotly ships JupyterLab's renderer for application/vnd.plotly.v1+json),
// Debian's chromium (/usr/bin/chromium, or CHROMIUM=path) and playwright-core (a devDependency; else
// data/tools). Never downloads browsers. Smoke-size runs: set the settings' env vars (TRAIN_LIMIT=2000 ...).
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { freePorts } from '../lib/jupyter/kernel';
import { runNotebook } from '../lib/jupyter/runner';
import { buildReport } from '../lib/jupyter/report';

const OUT = path.join(PROJECT_ROOT, 'out', 'browser-check');
const SCREENS = path.join(PROJECT_ROOT, 'out', 'screens');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The largest a saved notebook with plots may be (4 plots in 05-train: figure JSON + HTML fallback). */
const MAX_SAVED_BYTES = 300_000;
/** Project notebooks run in JupyterLab, with the outputs each must show (06 needs a saved model: it loads what 05 saved). */
const PROJECT_NOTEBOOKS: [string, { plots: number; images: number; maxBytes?: number }][] = [
  ['notebooks/01-load.ipynb', { plots: 1, images: 1 }],
  ['notebooks/02-preprocess.ipynb', { plots: 1, images: 2 }],
  ['notebooks/03-build.ipynb', { plots: 0, images: 0 }],
  ['notebooks/04-augment.ipynb', { plots: 1, images: 2 }],
  ['notebooks/05-train.ipynb', { plots: 4, images: 0, maxBytes: MAX_SAVED_BYTES }],
  ['notebooks/06-evaluate.ipynb', { plots: 4, images: 2 }],
];

// typed loosely: playwright-core is an optional tool, not a project dependency (npm run typecheck must pass without it)
/* eslint-disable @typescript-eslint/no-explicit-any */
type Page = any;

function loadPlaywright(): any {
  for (const from of [PROJECT_ROOT, path.join(PROJECT_ROOT, 'data', 'tools')]) {
    try {
      return require(require.resolve('playwright-core', { paths: [from] }));
    } catch {
      // try the next place
    }
  }
  throw new Error('playwright-core not found; install it with `npm install --prefix data/tools --no-save playwright-core`');
}

function writeCheckNotebook(file: string): void {
  const code = (source: string) => ({ cell_type: 'code', metadata: {}, execution_count: null, outputs: [], source });
  const nb = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'cifar10-tslab', display_name: 'TypeScript (CIFAR-10 project)', language: 'typescript' } },
    cells: [
      { cell_type: 'markdown', metadata: {}, source: '# Browser check\nFour plots, the last one live-updated: a bar chart, a heatmap with a percent format, a log-x plot with a marker.' },
      code("import { bar, heatmap, lineChart, scatter, show } from './lib/evaluate/plot';\nshow(bar({ title: 'Bars from the project kernel', categories: ['cat', 'dog', 'ship'], values: [3, 5, 2], xTitle: 'class', yTitle: 'images' }));"),
      code("show(heatmap({ title: 'Percent heatmap', x: ['dropout 0.25', 'dropout 0.35'], y: ['lr 0.001', 'lr 0.002'], z: [[0.7420, 0.7240], [0.8040, 0.7980]], showValues: true, valueFormat: '.2%', xTitle: 'dropout', yTitle: 'learning rate' }));"),
      code("const lrs = Array.from({ length: 40 }, (_, i) => 1e-6 * 10 ** (i / 8));\nshow(scatter({ title: 'Log-x marker', series: [{ name: 'loss', x: lrs, y: lrs.map((lr) => 2 - Math.log10(lr) / 10) }], logX: true, lines: true, markers: [{ x: 3e-5, label: 'steepest: 3.0e-5' }], xTitle: 'learning rate', yTitle: 'loss' }));"),
      code("import { liveFigure } from './lib/evaluate/plot';\nconst live = liveFigure();\nconst acc: number[] = [];\nfor (let e = 1; e <= 5; e++) { acc.push(0.5 + e / 20); live.update(lineChart({ title: `Live: epoch ${e}`, series: { acc }, markers: [{ x: e, label: 'last' }], yTitle: 'accuracy' })); await new Promise((r) => setTimeout(r, 300)); }"),
    ].map((c, i) => ({ id: `check-${i}`, ...c })),
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(nb, null, 1) + '\n');
}

/** Cells of the interrupt check: set-up, a long extraction, a cell reading the set-up's variable, a runtime error on line 2. */
const INTERRUPT_CELLS = [
  "import { initBackend } from './lib/engine/backend';\nimport { loadCifar10 } from './lib/data/cifar10';\nimport { extractFeatures } from './lib/features/features';\nconst backend = await initBackend();\nconst data = await loadCifar10();\nconst keep = `${data.train.n} training images`;",
  `const n = 9000;\nconst f = await extractFeatures({ images: data.train.images.subarray(0, n * 3072), n: n }, { backbone: 'mobilenet_v2', resolution: 160, cacheDir: ${JSON.stringify(path.join(OUT, 'interrupt-cache'))} });`,
  'console.log(`still here: ${keep}`);',
  'const none: any = undefined;\nconsole.log(none.images.length);',
];

function writeInterruptNotebook(file: string): void {
  const nb = {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'cifar10-tslab', display_name: 'TypeScript (CIFAR-10 project)', language: 'typescript' } },
    cells: [
      { id: 'interrupt-md', cell_type: 'markdown', metadata: {}, source: '# Interrupt check\nThe extraction below is interrupted from the Kernel menu; the kernel must stop computing and keep its variables.' },
      ...INTERRUPT_CELLS.map((source, i) => ({ id: `interrupt-${i}`, cell_type: 'code', metadata: {}, execution_count: null, outputs: [], source })),
    ],
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(nb, null, 1) + '\n');
}

/** CPU seconds (user + system) process `pid` has used, from /proc/<pid>/stat. */
function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100 Hz)
}

/** The pid of the kernel JupyterLab started for kernel `id`: the process whose argv names its connection file. */
function kernelPid(id: string): number | undefined {
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.endsWith('launch.js')) && argv.some((a) => a.includes(`kernel-${id}.json`))) return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** Text of code cell `i`'s outputs (of the current notebook), and whether the cell has finished (has its count). */
async function cellState(page: Page, i: number): Promise<{ text: string; stderr: string; done: boolean; busy: boolean }> {
  return page.evaluate((k: number) => {
    const w = (globalThis as any).jupyterapp.shell.currentWidget;
    const cell = [...w.content.widgets].filter((c: any) => c.model.type === 'code')[k];
    const outs = [...cell.node.querySelectorAll('.jp-OutputArea-output')];
    return {
      text: outs.map((e: any) => e.innerText ?? '').join('\n'),
      stderr: outs.filter((e: any) => e.getAttribute('data-mime-type') === 'application/vnd.jupyter.stderr').map((e: any) => e.innerText ?? '').join('\n'),
      done: cell.model.executionCount !== null && !/\*/.test(cell.node.querySelector('.jp-InputPrompt')?.textContent ?? ''),
      busy: w.sessionContext.session.kernel.status !== 'idle',
    };
  }, i);
}

/** Runs code cell `i` as a person does: click into it, Shift+Enter. */
async function runCell(page: Page, i: number): Promise<void> {
  await page.locator(`${PANEL} .jp-CodeCell`).nth(i).locator('.jp-InputArea-editor').click();
  await page.keyboard.press('Shift+Enter');
}

/** Waits until code cell `i` has finished and the kernel is idle; false on timeout. */
async function cellFinished(page: Page, i: number, timeoutMs: number): Promise<boolean> {
  const t0 = Date.now();
  await page.waitForTimeout(300);
  while (Date.now() - t0 < timeoutMs) {
    const s = await cellState(page, i);
    if (s.done && !s.busy) return true;
    await page.waitForTimeout(200);
  }
  return false;
}

/**
 * Interrupt as a person does it, and a runtime error: see the header. Problems are added to `problems`.
 */
async function interruptCheck(browser: any, port: number, token: string, rel: (f: string) => string, problems: string[]): Promise<void> {
  const file = path.join(OUT, 'interrupt.ipynb');
  writeInterruptNotebook(file);
  fs.rmSync(path.join(OUT, 'interrupt-cache'), { recursive: true, force: true }); // nothing cached: the extraction computes
  fs.mkdirSync(SCREENS, { recursive: true });
  const page = await openNotebook(browser, port, token, rel(file), 'interrupt');
  const kernelId: string = await page.evaluate(() => (globalThis as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.id);
  const pid = kernelPid(kernelId);
  if (!pid) {
    problems.push(`interrupt: no process found for kernel ${kernelId}`);
    await page.close();
    return;
  }
  console.log(`interrupt check: ${rel(file)}, kernel pid ${pid}`);
  try {
    await runCell(page, 0);
    if (!(await cellFinished(page, 0, 120_000)) || /^\s*\w*Error: /m.test((await cellState(page, 0)).stderr)) {
      problems.push(`interrupt: the set-up cell failed: ${(await cellState(page, 0)).text.slice(0, 300)}`);
      return;
    }
    // The extraction: wait until it has done some images, check it computes, then Kernel > Interrupt Kernel.
    await runCell(page, 1);
    const started = Date.now();
    // The progress line reads "features mobilenet_v2 160px plain: 1234/9000 img (13%) …".
    const PROGRESS = /: ([\d,]+)\/9,?000 img/;
    let progress = '';
    let running = false;
    while (!running && Date.now() - started < 120_000) {
      progress = (await cellState(page, 1)).text;
      const m = PROGRESS.exec(progress);
      running = !!m && Number(m[1].replace(/,/g, '')) >= 500;
      if (!running) await page.waitForTimeout(200);
    }
    if (!running || (await cellState(page, 1)).done) {
      problems.push(`interrupt: the extraction did not show 500 images done while running within 120 s: ${JSON.stringify(progress.slice(0, 300))}`);
      return;
    }
    const busyCpu0 = cpuSeconds(pid);
    await page.waitForTimeout(1000);
    const busyCpu = cpuSeconds(pid) - busyCpu0;
    if (busyCpu < 0.5) problems.push(`interrupt: the kernel used only ${busyCpu.toFixed(2)} CPU s in 1 s of extraction: the idle check below proves nothing`);
    await page.locator('.lm-MenuBar-itemLabel', { hasText: /^Kernel$/ }).click();
    const item = page.locator('.lm-Menu-item:not(.lm-mod-disabled) .lm-Menu-itemLabel', { hasText: /^Interrupt Kernel$/ });
    await item.waitFor({ timeout: 5000 });
    const before = (await cellState(page, 1)).text;
    const t0 = Date.now();
    await item.click();
    let ended = -1;
    let state = await cellState(page, 1);
    while (Date.now() - t0 < 10_000) {
      state = await cellState(page, 1);
      if (state.done && !state.busy && /InterruptedError/.test(state.stderr)) {
        ended = Date.now() - t0;
        break;
      }
      await page.waitForTimeout(50);
    }
    const line = state.stderr.trim();
    const ok = /^InterruptedError: features mobilenet_v2 160px plain interrupted after [\d,]+ \/ 9,000 images; [\d,]+ cached$/.test(line);
    console.log(`  interrupted at "${(PROGRESS.exec(before) ?? [''])[0].slice(2)}" (${busyCpu.toFixed(2)} CPU s per s before); the cell ended ${ended < 0 ? 'NOT within 10 s' : `${ended} ms`} after the click: ${JSON.stringify(line)}`);
    if (ended < 0 || ended > 2000) problems.push(`interrupt: the cell ${ended < 0 ? 'did not end within 10 s' : `ended ${ended} ms`} after Kernel > Interrupt Kernel (limit 2000 ms)`);
    if (!ok) problems.push(`interrupt: the cell's error output is not the one line "InterruptedError: … interrupted after …": ${JSON.stringify(line.slice(0, 400))}`);
    const idle0 = cpuSeconds(pid);
    await page.waitForTimeout(1500);
    const idle = cpuSeconds(pid) - idle0;
    console.log(`  kernel CPU after the interrupt: ${idle.toFixed(2)} s in 1.5 s`);
    if (idle >= 0.3) problems.push(`interrupt: the kernel kept computing: ${idle.toFixed(2)} CPU s in 1.5 s after the interrupt`);
    await page.screenshot({ path: path.join(SCREENS, 'browser-interrupt.png') });
    // The kernel's state survived: the next cell reads the set-up's variable (same kernel, no restart).
    await runCell(page, 2);
    const survived = (await cellFinished(page, 2, 30_000)) && (await cellState(page, 2)).text.trim();
    const sameKernel = kernelPid(kernelId) === pid;
    console.log(`  next cell: ${JSON.stringify(survived)}${sameKernel ? ' (same kernel process)' : ' (KERNEL PROCESS CHANGED)'}`);
    if (!survived || !/^still here: \d+ training images$/.test(survived) || !sameKernel) problems.push(`interrupt: the kernel's state did not survive: the next cell printed ${JSON.stringify(survived)}${sameKernel ? '' : ', and the kernel process changed'}`);

    // A runtime error on line 2 of a cell: JupyterLab shows that line, not compiled code or tslab's frames.
    await runCell(page, 3);
    await cellFinished(page, 3, 30_000);
    const err = (await cellState(page, 3)).stderr.trim();
    console.log(`  runtime error cell shows: ${JSON.stringify(err)}`);
    const want = "TypeError: Cannot read properties of undefined (reading 'images')\n    at cell line 2, column 18";
    if (err.replace(/\s+$/gm, '') !== want) problems.push(`cell error: JupyterLab shows ${JSON.stringify(err.slice(0, 400))}, expected ${JSON.stringify(want)}`);
    const errCell = page.locator(`${PANEL} .jp-CodeCell`).nth(3);
    await errCell.scrollIntoViewIfNeeded();
    await errCell.screenshot({ path: path.join(SCREENS, 'browser-cell-error.png') });
    console.log(`  → ${path.relative(process.cwd(), path.join(SCREENS, 'browser-interrupt.png'))}, ${path.relative(process.cwd(), path.join(SCREENS, 'browser-cell-error.png'))}`);
  } finally {
    await page.close();
  }
}

function plotlyRendererInstalled(): boolean {
  const r = spawnSync('jupyter', ['labextension', 'list'], { encoding: 'utf8' });
  return /jupyterlab-plotly\s+v\S+\s+\S*enabled/.test(`${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, ''));
}

async function startLab(port: number, token: string): Promise<ChildProcess> {
  const probe = spawnSync('jupyter', ['lab', '--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) throw new Error('JupyterLab not found: `pip install jupyterlab plotly`');
  const state = path.join(OUT, 'lab-state'); // workspaces and settings of this check only, not the user's
  fs.rmSync(state, { recursive: true, force: true });
  // No news / update toasts over the plots in the screenshots.
  const notify = path.join(state, 'settings', '@jupyterlab', 'apputils-extension', 'notification.jupyterlab-settings');
  fs.mkdirSync(path.dirname(notify), { recursive: true });
  fs.writeFileSync(notify, JSON.stringify({ fetchNews: 'false', checkForUpdates: false, doNotDisturbMode: true }));
  const lab = spawn(
    'jupyter',
    [
      'lab', '--no-browser', `--port=${port}`, '--ip=127.0.0.1', `--ServerApp.token=${token}`, `--ServerApp.root_dir=${PROJECT_ROOT}`,
      '--LabApp.expose_app_in_browser=True', '--allow-root',
      `--LabApp.workspaces_dir=${path.join(state, 'workspaces')}`, `--LabApp.user_settings_dir=${path.join(state, 'settings')}`,
      '--NotebookNotary.db_file=:memory:', // trust decided by this run alone: a copy nobody signed is untrusted
    ],
    {
      cwd: PROJECT_ROOT,
      env: {
        ...process.env,
        JUPYTER_PATH: path.join(PROJECT_ROOT, 'jupyter'),
        // the project's server config, as `npm run lab` uses it (drops the renderer's PNG snapshots on save)
        JUPYTER_CONFIG_PATH: [path.join(PROJECT_ROOT, 'jupyter', 'config'), process.env.JUPYTER_CONFIG_PATH].filter(Boolean).join(path.delimiter),
        MODELS_DIR: path.join(OUT, 'models'), // 05 saves here, 06 loads: the project's models are untouched
      },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    },
  );
  let log = '';
  lab.stderr!.on('data', (b) => (log += b));
  lab.stdout!.on('data', (b) => (log += b));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`http://127.0.0.1:${port}/api/status?token=${token}`);
      if (r.ok) return lab;
    } catch {
      // not up yet
    }
    if (lab.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  process.kill(-lab.pid!, 'SIGTERM');
  throw new Error(`JupyterLab did not start:\n${log.slice(-2000)}`);
}

/** What one rendered plotly plot shows, measured in the page. */
interface PlotFacts {
  title: string;
  kind: 'cartesian' | 'table' | 'other';
  width: number;
  height: number;
  xTitle: string;
  yTitle: string;
  /** Text of every heatmap cell. */
  cells: string[];
  /** Every text element of the SVG that still holds a plotly template ("%{...}"). */
  templates: string[];
  /** Dashed vertical lines (markers): their x in page pixels. */
  lines: number[];
  /** Annotations (marker labels): text and horizontal extent in page pixels. */
  labels: { text: string; left: number; right: number }[];
  /** Who drew it: 'plotly' = JupyterLab's plotly renderer (the figure JSON), 'html' = the HTML fallback's script, '' = a page of its own (the report). */
  renderer: string;
}

/** Runs in the page: the facts of the plot element `el`. */
function plotFacts(el: any): PlotFacts {
  const texts = (sel: string) => [...el.querySelectorAll(sel)].map((e: any) => (e.textContent ?? '').trim());
  const box = el.getBoundingClientRect();
  const dashed = [...el.querySelectorAll('.shapelayer path')].filter((p: any) => {
    const d = p.style.strokeDasharray || p.getAttribute('stroke-dasharray') || '';
    return d && d !== 'none' && d !== '0';
  });
  const lines = dashed
    .map((p: any) => p.getBoundingClientRect())
    .filter((r: any) => r.width < 3 && r.height > 20)
    .map((r: any) => r.left + r.width / 2);
  const labels = [...el.querySelectorAll('.annotation')].map((a: any) => {
    const r = (a.querySelector('.annotation-text') ?? a).getBoundingClientRect();
    return { text: (a.textContent ?? '').trim(), left: r.left, right: r.right };
  });
  return {
    title: texts('.gtitle')[0] ?? '',
    kind: el.querySelector('.cartesianlayer .xy') ? 'cartesian' : el.querySelector('.table') ? 'table' : 'other',
    width: box.width,
    height: box.height,
    xTitle: texts('.xtitle')[0] ?? '',
    yTitle: texts('.ytitle')[0] ?? '',
    cells: texts('.heatmap-label text'),
    templates: [...el.querySelectorAll('text')].map((e: any) => e.textContent ?? '').filter((t: string) => t.includes('%{')),
    lines,
    labels,
    renderer: el.closest('.jp-RenderedPlotly') ? 'plotly' : el.closest('.jp-RenderedHTMLCommon') ? 'html' : '',
  };
}

/** Problems with one plot; `where` names it in messages. */
function checkPlot(f: PlotFacts, where: string): string[] {
  const p: string[] = [];
  const name = `${where} "${f.title || 'untitled'}"`;
  if (!(f.width > 200 && f.height > 150)) p.push(`${name}: drew ${Math.round(f.width)}x${Math.round(f.height)} px`);
  if (f.templates.length) p.push(`${name}: shows the unrendered template ${JSON.stringify(f.templates[0])} (${f.templates.length} texts)`);
  if (f.kind === 'cartesian') {
    if (!f.xTitle) p.push(`${name}: no x-axis title`);
    if (!f.yTitle) p.push(`${name}: no y-axis title`);
  }
  for (const c of f.cells) {
    if (!/^-?\d[\d,]*(\.\d+)?%?$/.test(c)) {
      p.push(`${name}: heatmap cell text ${JSON.stringify(c)} is not a number`);
      break;
    }
  }
  for (const l of f.labels) {
    const mid = (l.left + l.right) / 2;
    const near = f.lines.length ? f.lines.reduce((a, b) => (Math.abs(b - mid) < Math.abs(a - mid) ? b : a)) : undefined;
    if (near === undefined) p.push(`${name}: label "${l.text}" has no dashed line`);
    else if (near < l.left - 12 || near > l.right + 12) {
      p.push(`${name}: label "${l.text}" spans x ${Math.round(l.left)}-${Math.round(l.right)} px, its dashed line is at ${Math.round(near)} px`);
    }
  }
  return p;
}

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 50) || 'plot';

/**
 * Every plotly plot under `scope` (a CSS selector of the notebook panel or the report body): scrolled into view,
 * measured, checked and screenshotted as an element into OUT/<prefix>-<k>-<title>.png.
 */
async function inspectPlots(page: Page, scope: string, prefix: string, problems: string[], log = true): Promise<PlotFacts[]> {
  const plots = page.locator(`${scope} .js-plotly-plot`);
  const n = await plots.count();
  const facts: PlotFacts[] = [];
  for (let i = 0; i < n; i++) {
    const plot = plots.nth(i);
    await plot.scrollIntoViewIfNeeded();
    await page.waitForTimeout(300);
    const f: PlotFacts = await plot.evaluate(plotFacts);
    facts.push(f);
    const bad = checkPlot(f, prefix);
    problems.push(...bad);
    const shot = path.join(OUT, `${prefix}-plot${i + 1}-${slug(f.title)}.png`);
    await plot.screenshot({ path: shot });
    if (log) {
      const what = [f.renderer && `drawn by the ${f.renderer === 'plotly' ? "plotly renderer (figure JSON)" : 'HTML fallback'}`, f.cells.length && `cells ${f.cells.slice(0, 3).join(' ')}…`, f.labels.length && `labels ${f.labels.map((l) => `"${l.text}"`).join(' ')} over their lines`].filter(Boolean).join(', ');
      console.log(`  plot ${i + 1} "${f.title}": ${Math.round(f.width)}x${Math.round(f.height)} px, axes "${f.xTitle}" / "${f.yTitle}"${what ? `, ${what}` : ''}${bad.length ? ' — PROBLEM' : ''} → ${path.relative(process.cwd(), shot)}`);
    }
  }
  return facts;
}

/** Opens `rel` (relative to the project root) in a fresh JupyterLab workspace; resolves when its kernel is idle. */
async function openNotebook(browser: any, port: number, token: string, rel: string, workspace: string): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
  await page.goto(`http://127.0.0.1:${port}/lab/workspaces/${workspace}/tree/${rel}?reset&token=${token}`);
  await page.waitForFunction(() => (globalThis as any).jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle', null, { timeout: 90_000 });
  await page.waitForFunction(() => (globalThis as any).jupyterapp.shell.currentWidget.context.isReady, null, { timeout: 30_000 });
  return page;
}

const PANEL = '.jp-NotebookPanel:not(.lm-mod-hidden)';

/** Runs every cell; resolves true when the kernel is idle and every code cell ran, false on a failed cell or timeout. */
async function runAll(page: Page, timeoutMs: number): Promise<boolean> {
  await page.evaluate(() => (globalThis as any).jupyterapp.commands.execute('notebook:run-all-cells'));
  await page.waitForTimeout(1000);
  return page
    .waitForFunction(() => {
      const w = (globalThis as any).jupyterapp.shell.currentWidget;
      const cells = [...w.content.widgets].filter((c: any) => c.model.type === 'code');
      const failed = [...w.node.querySelectorAll('.jp-OutputArea-output')].some((e: any) => /^\s*\w*Error: /m.test(e.textContent ?? ''));
      return w.sessionContext.session.kernel.status === 'idle' && (failed || cells.every((c: any) => c.model.executionCount));
    }, null, { timeout: timeoutMs, polling: 1000 })
    .then(() => true, () => false);
}

/** Saves the current notebook through JupyterLab (File > Save) and returns its size on disk. */
async function saveNotebook(page: Page, file: string): Promise<number> {
  const before = fs.existsSync(file) ? fs.statSync(file).mtimeMs : 0;
  await page.evaluate(() => (globalThis as any).jupyterapp.commands.execute('docmanager:save'));
  await page.waitForFunction(() => !(globalThis as any).jupyterapp.shell.currentWidget.context.model.dirty, null, { timeout: 30_000 });
  for (let i = 0; i < 50 && fs.statSync(file).mtimeMs === before; i++) await new Promise((r) => setTimeout(r, 100));
  return fs.statSync(file).size;
}

/** Whether JupyterLab treats the current notebook's outputs as trusted (any code cell). */
async function trusted(page: Page): Promise<boolean> {
  return page.evaluate(() => [...(globalThis as any).jupyterapp.shell.currentWidget.content.widgets].some((c: any) => c.model.type === 'code' && c.model.trusted));
}

/** Counts and the first error inside the current notebook panel. */
async function panelStats(page: Page): Promise<{ plots: number; images: number; errors: number; firstError: string; fallbacks: number }> {
  return page.evaluate(() => {
    const node = (globalThis as any).jupyterapp.shell.currentWidget.node;
    const errors = [...node.querySelectorAll('.jp-OutputArea-output')].map((e: any) => e.textContent ?? '').filter((t: string) => /^\s*\w*Error: /m.test(t));
    return {
      plots: node.querySelectorAll('.jp-OutputArea .js-plotly-plot').length,
      images: node.querySelectorAll('.jp-OutputArea .jp-RenderedImage img').length,
      errors: errors.length,
      firstError: (errors[0] ?? '').split('\n').find((l: string) => /Error: /.test(l)) ?? '',
      fallbacks: [...node.querySelectorAll('.jp-OutputArea-output')].filter((e: any) => /^\[plot: /.test((e.textContent ?? '').trim())).length,
    };
  });
}

/**
 * JupyterLab's plotly renderer stores a PNG snapshot of each plot it drew in the output, and a reopened notebook
 * shows that snapshot until the mouse comes over it: hover each, as a person would, so the live plot is drawn.
 * Returns how many snapshots were shown.
 */
async function hoverSnapshots(page: Page): Promise<number> {
  const snaps = page.locator(`${PANEL} .jp-RenderedPlotly img.plot-img`);
  const n = await snaps.count();
  let shown = 0;
  for (let i = 0; i < n; i++) {
    const img = snaps.nth(i);
    if (!(await img.isVisible())) continue;
    shown++;
    await img.scrollIntoViewIfNeeded().catch(() => undefined);
    // force: the live plot replaces the snapshot under the pointer, which is the point
    await img.hover({ force: true, timeout: 5000 }).catch(() => undefined);
    await page.waitForTimeout(300);
  }
  return shown;
}

/** Wait until the current panel shows at least `n` drawn plots (or the timeout passes). */
async function waitForPlots(page: Page, n: number, timeoutMs: number): Promise<void> {
  await page
    .waitForFunction((k: number) => (globalThis as any).jupyterapp.shell.currentWidget.node.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= k, n, { timeout: timeoutMs })
    .catch(() => undefined);
}

/** A copy of a saved notebook that nobody signed (so JupyterLab opens it untrusted): same outputs, one metadata key more. */
function unsignedCopy(saved: string, copy: string): void {
  const nb = JSON.parse(fs.readFileSync(saved, 'utf8'));
  nb.metadata.browser_check = { reopened_from: path.basename(saved) };
  fs.writeFileSync(copy, JSON.stringify(nb, null, 1) + '\n');
}

async function main(): Promise<void> {
  const only = process.argv.slice(2).filter((a) => !a.startsWith('-'));
  const { chromium } = loadPlaywright();
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM)`);
  const problems: string[] = [];
  if (!plotlyRendererInstalled()) problems.push("JupyterLab's plotly renderer is not installed (`pip install plotly`): plots need Trust and the HTML fallback");
  fs.mkdirSync(OUT, { recursive: true });
  for (const f of fs.readdirSync(OUT)) if (f.endsWith('.png')) fs.rmSync(path.join(OUT, f)); // screenshots of this run only
  const nbFile = path.join(OUT, 'check.ipynb');
  writeCheckNotebook(nbFile);
  const token = crypto.randomBytes(16).toString('hex');
  const port = (await freePorts(1))[0];
  const lab = await startLab(port, token);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const rel = (f: string) => path.relative(PROJECT_ROOT, f).split(path.sep).join('/');
  const sizes: string[] = [];
  try {
    // 1. the check notebook, run in JupyterLab
    const page = await openNotebook(browser, port, token, rel(nbFile), 'check');
    const kernelName = await page.evaluate(() => (globalThis as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.name);
    console.log(`JupyterLab up, ${rel(nbFile)} open with kernel ${kernelName}`);
    if (kernelName !== 'cifar10-tslab') problems.push(`kernel is ${kernelName}, expected cifar10-tslab`);
    await runAll(page, 120_000);
    await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('.gtitle')].some((e: any) => e.textContent === 'Live: epoch 5'), null, { timeout: 30_000 }).catch(() => undefined);
    await waitForPlots(page, 4, 30_000);
    const checkFacts = await inspectPlots(page, PANEL, 'check', problems);
    if (checkFacts.length !== 4) problems.push(`check notebook: ${checkFacts.length} plots drawn, expected 4`);
    if (!checkFacts.some((f) => f.title === 'Live: epoch 5')) problems.push(`check notebook: the live plot stopped at "${checkFacts[3]?.title}", expected "Live: epoch 5" (updates not redrawn)`);
    const hm = checkFacts.find((f) => f.title === 'Percent heatmap');
    if (!hm || hm.cells.join(' ') !== '74.20% 72.40% 80.40% 79.80%') problems.push(`check notebook: the '.2%' heatmap prints ${JSON.stringify(hm?.cells ?? [])}, expected ["74.20%","72.40%","80.40%","79.80%"]`);
    const lr = checkFacts.find((f) => f.title === 'Log-x marker');
    if (!lr || lr.labels.length !== 1 || lr.lines.length !== 1) problems.push(`check notebook: the log-x plot shows ${lr?.labels.length ?? 0} marker labels and ${lr?.lines.length ?? 0} dashed lines, expected 1 and 1`);
    const viaJson = checkFacts.filter((f) => f.renderer === 'plotly').length;
    if (viaJson !== checkFacts.length) problems.push(`check notebook: ${viaJson} of ${checkFacts.length} plots drawn by plotly's renderer (the rest by the HTML fallback)`);
    await page.screenshot({ path: path.join(OUT, 'check-page.png') });
    await page.close();

    // 1b. Interrupt from the Kernel menu during feature extraction; a runtime error at its cell line
    await interruptCheck(browser, port, token, rel, problems);

    // 2. the same notebook executed headlessly (unsigned): opened in JupyterLab without Trust, and as a report
    const executed = path.join(OUT, 'executed', 'check.ipynb');
    await runNotebook(nbFile, { outFile: executed, timeoutSec: 120 });
    const ep = await openNotebook(browser, port, token, rel(executed), 'check-executed');
    await waitForPlots(ep, 4, 30_000);
    const isTrusted = await trusted(ep);
    const ef = await inspectPlots(ep, PANEL, 'executed-untrusted', problems, false);
    console.log(`runner-executed check notebook opened in JupyterLab (${isTrusted ? 'TRUSTED' : 'untrusted'}): ${ef.length} plots drawn, ${(fs.statSync(executed).size / 1000).toFixed(0)} KB on disk`);
    if (isTrusted) problems.push('the runner-executed notebook opened as trusted: the no-Trust check proves nothing');
    if (ef.length !== 4) problems.push(`runner-executed check notebook without Trust: ${ef.length} plots drawn, expected 4`);
    await ep.screenshot({ path: path.join(OUT, 'executed-untrusted-page.png') });
    await ep.close();
    const report = buildReport([executed], path.join(OUT, 'report-check'));
    const rp = await browser.newPage({ viewport: { width: 1100, height: 1100 } });
    await rp.route(/^(?!file:)/, (route: any) => route.abort()); // offline: any network request would fail
    await rp.goto(`file://${report.pages[0].file}`);
    await rp.waitForFunction(() => (globalThis as any).document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4, null, { timeout: 60_000 }).catch(() => undefined);
    const rf = await inspectPlots(rp, 'body', 'report-check', problems, false);
    console.log(`report of the check notebook, offline: ${rf.length} plots drawn`);
    if (rf.length !== 4) problems.push(`report shows ${rf.length} plots, expected 4`);
    await rp.close();

    // 3. the project's notebooks, run cell by cell in JupyterLab with the project kernel (smoke-size parameters come
    // from the settings' env vars JupyterLab was started with), saved, measured, reopened untrusted
    const saved: string[] = [];
    for (const [source, want] of PROJECT_NOTEBOOKS) {
      const name = path.basename(source, '.ipynb');
      if (only.length && !only.some((o) => name.includes(o))) continue;
      // A copy, so JupyterLab's autosave never writes outputs into the project's notebooks.
      const copy = path.join(OUT, 'notebooks', `${name}.ipynb`);
      fs.mkdirSync(path.dirname(copy), { recursive: true });
      fs.copyFileSync(path.join(PROJECT_ROOT, source), copy);
      console.log(`JupyterLab ${rel(copy)}:`);
      const p = await openNotebook(browser, port, token, rel(copy), `check-${name}`);
      const finished = await runAll(p, 600_000);
      await waitForPlots(p, want.plots, 30_000);
      await p.waitForTimeout(1000);
      const got = await panelStats(p);
      if (!finished) problems.push(`${name}: did not finish within 600 s`);
      if (got.firstError) problems.push(`${name}: ${got.firstError.trim()}`);
      const facts = await inspectPlots(p, PANEL, name, problems);
      console.log(`  ${got.plots} plots, ${got.images} images rendered, ${got.errors} error outputs`);
      if (got.plots < want.plots || got.images < want.images || got.errors) {
        problems.push(`${name}: ${got.plots} plots / ${got.images} images / ${got.errors} errors, expected >= ${want.plots} plots, >= ${want.images} images, no errors`);
      }
      if (name === '05-train') {
        const heat = facts.find((f) => /^Best validation accuracy/.test(f.title));
        if (!heat || heat.cells.length !== 8 || !heat.cells.every((c) => /^\d{1,3}\.\d{2}%$/.test(c))) {
          problems.push(`05-train: the sweep heatmap's cells read ${JSON.stringify(heat?.cells ?? [])}, expected 8 percentages like "80.40%"`);
        }
        const finder = facts.find((f) => /^Learning-rate finder/.test(f.title));
        if (!finder || !finder.labels.some((l) => /^steepest/.test(l.text))) problems.push('05-train: the learning-rate finder shows no "steepest" label');
      }
      await p.screenshot({ path: path.join(OUT, `${name}-page.png`) });
      // Saved through JupyterLab, as a person would: the file must stay small.
      const bytes = await saveNotebook(p, copy);
      saved.push(copy);
      await p.close();
      const limit = want.maxBytes ?? Infinity;
      sizes.push(`${name} ${(bytes / 1000).toFixed(0)} KB (${facts.length} plots)`);
      if (bytes > limit) problems.push(`${name}: saved from JupyterLab it is ${(bytes / 1000).toFixed(0)} KB, more than ${limit / 1000} KB`);
      if (facts.length) {
        // Reopened untrusted (an unsigned copy): the plots must draw again, with no Trust and no kernel run.
        const reopened = path.join(OUT, 'notebooks', `${name}-reopened.ipynb`);
        unsignedCopy(copy, reopened);
        const rp2 = await openNotebook(browser, port, token, rel(reopened), `check-${name}-reopened`);
        await rp2.waitForTimeout(2000);
        await rp2.locator(`${PANEL} .jp-RenderedPlotly`).first().scrollIntoViewIfNeeded().catch(() => undefined);
        await rp2.screenshot({ path: path.join(OUT, `${name}-reopened-page.png`) }); // as reopened: before any mouse-over
        const snapshots = await hoverSnapshots(rp2);
        await waitForPlots(rp2, facts.length, 30_000);
        const t = await trusted(rp2);
        const again = await inspectPlots(rp2, PANEL, `${name}-reopened`, problems, false);
        const fallbacks = (await panelStats(rp2)).fallbacks;
        console.log(`  saved from JupyterLab: ${(bytes / 1000).toFixed(0)} KB; reopened ${t ? 'TRUSTED' : 'untrusted'}: ${snapshots} snapshots shown, ${again.length} of ${facts.length} plots drawn${fallbacks ? `, ${fallbacks} placeholders` : ''} → ${path.relative(process.cwd(), path.join(OUT, `${name}-reopened-page.png`))}`);
        if (t) problems.push(`${name}: the reopened copy is trusted: the no-Trust check proves nothing`);
        if (again.length !== facts.length) problems.push(`${name}: reopened without Trust, ${again.length} of ${facts.length} plots draw${fallbacks ? ` (${fallbacks} show the "[plot: …]" placeholder)` : ''}`);
        await rp2.close();
      }
    }

    // 4. the report of the notebooks JupyterLab ran and saved: the front page and its key plots, offline
    if (saved.length) {
      const r = buildReport(saved, path.join(OUT, 'report'));
      // Saved from JupyterLab (no runner metadata), each must read as run, from its execution counts and outputs.
      console.log(`report of the saved notebooks: ${r.pages.map((p) => `${path.basename(p.file, '.html')} ${p.status}`).join(', ')}`);
      for (const p of r.pages) if (p.status !== 'ok') problems.push(`report: ${path.basename(p.file)} saved from JupyterLab reads "${p.status}", expected ok`);
      const ip = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
      await ip.route(/^(?!file:)/, (route: any) => route.abort());
      await ip.goto(`file://${r.index}`);
      await ip.waitForFunction((k: number) => (globalThis as any).document.querySelectorAll('.js-plotly-plot .main-svg').length >= k, r.summary.keyFigures.length, { timeout: 60_000 }).catch(() => undefined);
      const front = await ip.evaluate(() => ({
        banner: (globalThis as any).document.querySelector('.banner')?.textContent ?? '',
        cells: [...(globalThis as any).document.querySelectorAll('table.headline td.num')].map((e: any) => e.textContent),
      }));
      const kf = await inspectPlots(ip, '.keyplots', 'report-index', problems, false);
      const smoke = !!(process.env.TRAIN_LIMIT && process.env.TRAIN_LIMIT !== '0');
      console.log(`report front page: "${front.banner.slice(0, 90)}…", ${front.cells.filter((c: string) => /%$/.test(c)).length} accuracies, ${kf.length} key plots`);
      if (smoke && !/^SMOKE RUN/.test(front.banner)) problems.push(`report front page: TRAIN_LIMIT=${process.env.TRAIN_LIMIT} but the banner says "${front.banner.slice(0, 60)}"`);
      if (kf.length !== r.summary.keyFigures.length) problems.push(`report front page: ${kf.length} of ${r.summary.keyFigures.length} key plots drawn`);
      if (saved.some((f) => /05-train/.test(f)) && !front.cells.some((c: string) => /^\d+\.\d\d%$/.test(c))) problems.push('report front page: no headline accuracies');
      await ip.screenshot({ path: path.join(OUT, 'report-index.png'), fullPage: true });
      await ip.close();
    }
  } finally {
    await browser.close();
    process.kill(-lab.pid!, 'SIGTERM'); // jupyter shuts its kernels down on SIGTERM
    await new Promise((r) => lab.once('exit', r));
  }
  if (sizes.length) console.log(`saved from JupyterLab: ${sizes.join(', ')}`);
  if (problems.length) throw new Error(`${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  console.log(`browser check passed (screenshots in ${path.relative(process.cwd(), OUT)}/)`);
}

main().catch((err) => {
  console.error(`browser-check: ${(err as Error).message}`);
  process.exit(1);
});
