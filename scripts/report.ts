// npm run report [-- executed.ipynb...] [--in DIR] [--out DIR]
// Turns executed notebooks into self-contained HTML pages plus a front page (what ran, the headline numbers, key
// plots) in out/report/ — readable offline, this is how results are shared. Which notebooks: the files named, else
// --in DIR, else out/notebooks/ (written by `npm run notebooks`) when any there ran, else notebooks/ as saved in
// JupyterLab; one line says which.
import { resolveModel } from '../lib/model/registry';
import { resolveConfig } from '../lib/settings/config';
import * as fs from 'fs';
import * as path from 'path';
import { parseCli, runCli } from '../lib/util/cli';
import { DEFAULT_REPORT_OUT, buildReport, reportInputs } from '../lib/jupyter/report';
import { modelsDir, PROJECT_ROOT, userPath } from '../lib/settings/paths';

const CLI = {
  usage: 'npm run report -- [executed.ipynb...] [--in DIR] [--out DIR] [--model DIR] [--screenshot PNG]',
  options: {
    in: { type: 'string', arg: 'dir', help: 'a folder of executed notebooks, e.g. ones saved from JupyterLab (default: out/notebooks when any there ran, else notebooks/ as saved in Lab)' },
    out: { type: 'string', arg: 'dir', help: 'where the HTML goes', default: 'out/report' },
    screenshot: { type: 'string', arg: 'png', help: 'also photograph the front page with headless Chromium (playwright-core and /usr/bin/chromium, or CHROMIUM=path)' },
    model: { type: 'string', arg: 'id|dir', help: 'the saved model whose metadata.json gives the headline (default: the one notebook 06 loaded, else the one 05 saved, else the current model)' },
  },
  positionals: true,
} as const;

/** The front page as Chromium draws it, offline (any request off file:// is refused), full length. */
async function screenshot(index: string, png: string): Promise<void> {
  const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
  if (!fs.existsSync(chromiumPath)) throw new Error(`--screenshot: ${chromiumPath} not found (apt-get install chromium, or set CHROMIUM)`);
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  let pw: any;
  try {
    pw = require(require.resolve('playwright-core', { paths: [PROJECT_ROOT, path.join(PROJECT_ROOT, 'data', 'tools')] }));
  } catch {
    throw new Error('--screenshot: playwright-core not found (npm install, or npm install --prefix data/tools --no-save playwright-core)');
  }
  const browser = await pw.chromium.launch({ executablePath: chromiumPath, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1200, height: 1000 } });
    await page.route(/^(?!file:)/, (route: { abort: () => Promise<void> }) => route.abort());
    await page.goto(`file://${index}`);
    const plots = await page.evaluate(() => (globalThis as any).document.querySelectorAll('.plotly-figure').length); // eslint-disable-line @typescript-eslint/no-explicit-any
    await page.waitForFunction((n: number) => (globalThis as any).document.querySelectorAll('.js-plotly-plot .main-svg').length >= n, plots, { timeout: 60_000 }); // eslint-disable-line @typescript-eslint/no-explicit-any
    fs.mkdirSync(path.dirname(png), { recursive: true });
    await page.screenshot({ path: png, fullPage: true });
  } finally {
    await browser.close();
  }
}

/** The current saved model's folder (MODELS_DIR/current.json), when there is one. */
function currentModelDir(): string | undefined {
  const { config } = resolveConfig([], process.env, ['models', 'model']);
  try {
    return resolveModel(modelsDir(config.models), config.model, userPath('.')).dir;
  } catch {
    return undefined; // the report says the headline has no model behind it
  }
}

async function main(): Promise<void> {
  const { values, positionals } = parseCli(CLI);
  const outDir = values.out && values.out !== 'out/report' ? userPath(values.out) : DEFAULT_REPORT_OUT;
  const files = positionals.map((a) => {
    if (!fs.existsSync(userPath(a))) throw new Error(`${a}: no such notebook`);
    return userPath(a);
  });
  let inputs = files;
  if (!files.length) {
    const chosen = reportInputs({ inDir: values.in ? userPath(values.in) : undefined });
    console.log(chosen.line);
    inputs = chosen.files;
  }
  const t0 = Date.now();
  const r = buildReport(inputs, outDir, {
    modelDir: values.model ? resolveModel(modelsDir(resolveConfig([], process.env, ['models']).config.models), values.model, userPath('.')).dir : undefined,
    fallbackModelDir: currentModelDir(),
  });
  for (const p of r.pages) {
    const mb = (fs.statSync(p.file).size / 1e6).toFixed(1);
    console.log(`${path.relative(process.cwd(), p.file)}  ${p.stats.figures} plots, ${p.stats.images} images, ${mb} MB  (${p.status})`);
  }
  console.log(`index: ${path.relative(process.cwd(), r.index)}  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  console.log(`  ${r.summary.scale.banner}`);
  console.log(`  headline from ${r.summary.headline.source}`);
  for (const w of r.summary.headline.warnings) console.log(`  warning: ${w}`);
  if (values.screenshot) {
    const png = userPath(values.screenshot);
    await screenshot(r.index, png);
    console.log(`screenshot of the front page: ${path.relative(process.cwd(), png)}`);
  }
}

runCli(main);
