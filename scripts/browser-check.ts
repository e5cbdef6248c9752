// Browser check (not part of `npm test`): JupyterLab 4 with the project kernel, driven by headless Chromium, runs a
// small notebook and must show rendered plotly plots; then the HTML report of the same notebook (executed by the
// headless runner) must render them offline from file://. Screenshots go to out/browser-check/.
//
// Needs: `pip install jupyterlab`, Debian's chromium (/usr/bin/chromium, or CHROMIUM=path) and playwright-core
// (resolved from the project, else from data/tools: `npm install --prefix data/tools --no-save playwright-core`).
// Never downloads browsers.
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/paths';
import { freePorts } from '../lib/jupyter/kernel';
import { runNotebook } from '../lib/jupyter/runner';
import { buildReport } from '../lib/jupyter/report';

const OUT = path.join(PROJECT_ROOT, 'out', 'browser-check');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** Project notebooks run in JupyterLab, with the outputs each must show (06 needs a saved model: run 05 or npm start first). */
const PROJECT_NOTEBOOKS: [string, { plots: number; images: number }][] = [
  ['notebooks/01-load.ipynb', { plots: 1, images: 1 }],
  ['notebooks/02-preprocess.ipynb', { plots: 1, images: 2 }],
  ['notebooks/03-build.ipynb', { plots: 0, images: 0 }],
  ['notebooks/04-augment.ipynb', { plots: 1, images: 2 }],
  ['notebooks/05-train.ipynb', { plots: 4, images: 0 }],
  ['notebooks/06-evaluate.ipynb', { plots: 4, images: 2 }],
];

// typed loosely: playwright-core is an optional tool, not a project dependency (npm run typecheck must pass without it)
// eslint-disable-next-line @typescript-eslint/no-explicit-any
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
      { cell_type: 'markdown', metadata: {}, source: '# Browser check\nThree plots (the last one live-updated), plotly.js loaded once.' },
      code("import { bar, lineChart, show } from './lib/plot';\nshow(bar({ title: 'Bars from the project kernel', categories: ['cat', 'dog', 'ship'], values: [3, 5, 2] }));"),
      code("show(lineChart({ title: 'Learning curves', series: { loss: [1, 0.6, 0.4, 0.35], valLoss: [1.1, 0.8, 0.7, 0.72] }, markers: [{ x: 3, label: 'early stop' }] }));"),
      code("import { liveFigure } from './lib/plot';\nconst live = liveFigure();\nconst acc: number[] = [];\nfor (let e = 1; e <= 5; e++) { acc.push(0.5 + e / 20); live.update(lineChart({ title: `Live: epoch ${e}`, series: { acc } })); await new Promise((r) => setTimeout(r, 300)); }"),
    ].map((c, i) => ({ id: `check-${i}`, ...c })),
  };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(nb, null, 1));
}

async function startLab(port: number, token: string): Promise<ChildProcess> {
  const probe = spawnSync('jupyter', ['lab', '--version'], { encoding: 'utf8' });
  if (probe.error || probe.status !== 0) throw new Error('JupyterLab not found: `pip install jupyterlab`');
  const lab = spawn(
    'jupyter',
    ['lab', '--no-browser', `--port=${port}`, '--ip=127.0.0.1', `--ServerApp.token=${token}`, `--ServerApp.root_dir=${PROJECT_ROOT}`, '--LabApp.expose_app_in_browser=True', '--allow-root'],
    { env: { ...process.env, JUPYTER_PATH: path.join(PROJECT_ROOT, 'jupyter'), MODEL_DIR: path.join(OUT, 'model') /* 05 saves here, 06 loads: the project's model is untouched */ }, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
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
  lab.kill();
  throw new Error(`JupyterLab did not start:\n${log.slice(-2000)}`);
}

async function main(): Promise<void> {
  const { chromium } = loadPlaywright();
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found (apt-get install chromium, or set CHROMIUM)`);
  const nbFile = path.join(OUT, 'check.ipynb');
  writeCheckNotebook(nbFile);
  const token = crypto.randomBytes(16).toString('hex');
  const port = await (await freePorts(1))[0];
  const lab = await startLab(port, token);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const problems: string[] = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
    const rel = path.relative(PROJECT_ROOT, nbFile).split(path.sep).join('/');
    await page.goto(`http://127.0.0.1:${port}/lab/tree/${rel}?token=${token}`);
    await page.waitForFunction(() => (globalThis as any).jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel, null, { timeout: 90_000 });
    const kernelName = await page.evaluate(() => (globalThis as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.name);
    console.log(`JupyterLab up, notebook open with kernel ${kernelName}`);
    if (kernelName !== 'cifar10-tslab') problems.push(`kernel is ${kernelName}, expected cifar10-tslab`);
    await page.waitForFunction(() => (globalThis as any).jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle', null, { timeout: 90_000 });
    await page.evaluate(() => (globalThis as any).jupyterapp.commands.execute('notebook:run-all-cells'));
    await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 3 && [...(globalThis as any).document.querySelectorAll('.gtitle')].some((e: any) => e.textContent === 'Live: epoch 5'), null, { timeout: 120_000 });
    await page.waitForTimeout(1000);
    const stats = await page.evaluate(() => ({
      plots: (globalThis as any).document.querySelectorAll('.jp-OutputArea .js-plotly-plot').length,
      loaders: [...(globalThis as any).document.querySelectorAll('.jp-OutputArea-output')].filter((e: any) => /plotly\.js [\d.]+ loaded/.test(e.textContent ?? '')).length,
      titles: [...(globalThis as any).document.querySelectorAll('.jp-OutputArea .js-plotly-plot .gtitle')].map((e: any) => e.textContent),
    }));
    console.log(`JupyterLab: ${stats.plots} plots rendered (${stats.titles.join(', ')}), plotly.js loader outputs: ${stats.loaders}`);
    if (stats.plots !== 3) problems.push(`JupyterLab shows ${stats.plots} plots, expected 3`);
    if (stats.loaders !== 1) problems.push(`plotly.js loaded ${stats.loaders} times, expected once`);
    const shot = path.join(OUT, 'jupyterlab-plot.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${path.relative(process.cwd(), shot)}`);

    // the same notebook through the headless runner and the report, opened offline
    const executed = path.join(OUT, 'executed', 'check.ipynb');
    await runNotebook(nbFile, { outFile: executed, timeoutSec: 120 });
    const report = buildReport([executed], path.join(OUT, 'report'));
    const rp = await browser.newPage({ viewport: { width: 1100, height: 1100 } });
    await rp.route(/^(?!file:)/, (route: any) => route.abort()); // offline: any network request would fail
    await rp.goto(`file://${report.pages[0].file}`);
    await rp.waitForFunction(() => (globalThis as any).document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3, null, { timeout: 60_000 });
    const reportPlots = await rp.evaluate(() => (globalThis as any).document.querySelectorAll('.js-plotly-plot').length);
    console.log(`report: ${reportPlots} plots rendered offline`);
    if (reportPlots !== 3) problems.push(`report shows ${reportPlots} plots, expected 3`);
    const rshot = path.join(OUT, 'report-plot.png');
    await rp.screenshot({ path: rshot, fullPage: true });
    console.log(`screenshot: ${path.relative(process.cwd(), rshot)}`);

    // The project's own notebooks, run cell by cell in JupyterLab with the project kernel (smoke-size parameters
    // come from the settings' env vars JupyterLab was started with).
    for (const [source, want] of PROJECT_NOTEBOOKS) {
      // A copy, so JupyterLab's autosave never writes outputs into the project's notebooks.
      const copy = path.join(OUT, 'notebooks', path.basename(source));
      fs.mkdirSync(path.dirname(copy), { recursive: true });
      fs.copyFileSync(path.join(PROJECT_ROOT, source), copy);
      const nb = path.relative(PROJECT_ROOT, copy).split(path.sep).join('/');
      const page = await browser.newPage({ viewport: { width: 1280, height: 1100 } });
      // A fresh workspace per notebook (?reset): otherwise the restored layout keeps the previous notebook current.
      await page.goto(`http://127.0.0.1:${port}/lab/workspaces/check-${path.basename(nb, ".ipynb")}/tree/${nb}?reset&token=${token}`);
      await page.waitForFunction(() => (globalThis as any).jupyterapp?.shell?.currentWidget?.sessionContext?.session?.kernel?.status === 'idle', null, { timeout: 90_000 });
      await page.evaluate(() => (globalThis as any).jupyterapp.commands.execute('notebook:run-all-cells'));
      // Done when the kernel is idle again and every code cell ran, or a cell failed (run-all stops there).
      const finished = await page
        .waitForFunction(() => {
          const w = (globalThis as any).jupyterapp.shell.currentWidget;
          const cells = [...w.content.widgets].filter((c: any) => c.model.type === 'code');
          const failed = [...w.node.querySelectorAll('.jp-OutputArea-output')].some((e: any) => /^\s*\w*Error: /m.test(e.textContent ?? ''));
          return w.sessionContext.session.kernel.status === 'idle' && (failed || cells.every((c: any) => c.model.executionCount));
        }, null, { timeout: 600_000, polling: 1000 })
        .then(() => true, () => false);
      await page.waitForTimeout(1500);
      // Counted inside this notebook's panel only (other tabs stay in the DOM).
      const got = await page.evaluate(() => {
        const node = (globalThis as any).jupyterapp.shell.currentWidget.node;
        const errors = [...node.querySelectorAll('.jp-OutputArea-output')].map((e: any) => e.textContent ?? '').filter((t: string) => /^\s*\w*Error: /m.test(t));
        return {
          plots: node.querySelectorAll('.jp-OutputArea .js-plotly-plot').length,
          images: node.querySelectorAll('.jp-OutputArea .jp-RenderedImage img').length,
          errors: errors.length,
          firstError: (errors[0] ?? '').split('\n').find((l: string) => /Error: /.test(l)) ?? '',
        };
      });
      if (!finished) problems.push(`${nb}: did not finish within 600 s`);
      if (got.firstError) problems.push(`${nb}: ${got.firstError.trim()}`);
      console.log(`JupyterLab ${nb}: ${got.plots} plots, ${got.images} images rendered, ${got.errors} error outputs`);
      if (got.plots < want.plots || got.images < want.images || got.errors) {
        problems.push(`${nb}: ${got.plots} plots / ${got.images} images / ${got.errors} errors, expected >= ${want.plots} plots, >= ${want.images} images, no errors`);
      }
      const nbShot = path.join(OUT, `${path.basename(nb, '.ipynb')}.png`);
      await page.screenshot({ path: nbShot, fullPage: true });
      console.log(`screenshot: ${path.relative(process.cwd(), nbShot)}`);
      await page.close();
    }
  } finally {
    await browser.close();
    process.kill(-lab.pid!, 'SIGTERM'); // jupyter shuts its kernels down on SIGTERM
    await new Promise((r) => lab.once('exit', r));
  }
  if (problems.length) throw new Error(problems.join('; '));
  console.log('browser check passed');
}

main().catch((err) => {
  console.error(`browser-check: ${(err as Error).message}`);
  process.exit(1);
});
