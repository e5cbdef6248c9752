// The shareable report: one self-contained HTML page per executed notebook (markdown rendered, code, text output,
// images as data URIs, plotly figures re-drawn from their JSON with plotly.js inlined once per page, each cell's
// time) and a front page that says what was run and what came out: the project, SMOKE or FULL run and its
// parameters, the headline accuracies (from the saved model's metadata.json, cross-checked against the notebooks),
// the backend, dates and commit, and the key plots reused from the notebooks. Opens offline from disk: no server,
// no network.
import * as fs from 'fs';
import * as path from 'path';
import { marked } from 'marked';
import { writeFileAtomic } from '../util/atomic';
import { Cell, Notebook, Output, joinText, readNotebook } from './nbformat';
import { PROJECT_ROOT, dataDir } from '../settings/paths';
import { envOf } from '../settings/config';
import { Figure, PLOTLY_LOADER_META, PLOTLY_MIME, escapeHtml, figureHtml, plotlyScriptTag } from '../evaluate/plotly-html';

export const DEFAULT_REPORT_IN = path.join(PROJECT_ROOT, 'out', 'notebooks');
export const DEFAULT_REPORT_OUT = path.join(PROJECT_ROOT, 'out', 'report');

/** What a terminal would show: ANSI colours removed, "\r" progress redraws collapsed to their final state. */
export function terminalText(s: string): string {
  return s
    .replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')
    .split('\n')
    .map((line) => {
      const parts = line.split('\r').filter((p) => p !== ''); // a trailing \r (CRLF) keeps what it follows
      return parts.length ? parts[parts.length - 1] : '';
    })
    .join('\n');
}

export interface PageStats {
  figures: number;
  images: number;
}

function renderMarkdown(src: string): string {
  return marked.parse(src, { async: false }) as string;
}

function renderOutput(o: Output, stats: PageStats): string {
  if (o.output_type === 'stream') {
    return `<pre class="out ${o.name}">${escapeHtml(terminalText(joinText(o.text)))}</pre>`;
  }
  if (o.output_type === 'error') {
    const tb = o.traceback.length ? o.traceback.join('\n') : `${o.ename}: ${o.evalue}`;
    return `<pre class="out error">${escapeHtml(terminalText(tb))}</pre>`;
  }
  if (o.metadata?.[PLOTLY_LOADER_META]) return ''; // the page inlines plotly.js itself
  const d = o.data;
  const text = (mime: string) => joinText(d[mime] as string | string[]);
  if (d[PLOTLY_MIME]) {
    stats.figures++;
    return `<div class="out figure">${figureHtml(d[PLOTLY_MIME] as Figure, { fallbackText: 'loading plot…' })}</div>`;
  }
  for (const mime of ['image/png', 'image/jpeg', 'image/gif']) {
    if (d[mime]) {
      stats.images++;
      return `<div class="out image"><img src="data:${mime};base64,${text(mime).replace(/\s+/g, '')}" alt="output image"></div>`;
    }
  }
  if (d['image/svg+xml']) {
    stats.images++;
    return `<div class="out image"><img src="data:image/svg+xml;base64,${Buffer.from(text('image/svg+xml')).toString('base64')}" alt="output image"></div>`;
  }
  // our own kernel's HTML (tables, summaries): trusted like the report's author trusts their notebooks
  if (d['text/html']) return `<div class="out html">${text('text/html')}</div>`;
  if (d['text/markdown']) return `<div class="out markdown">${renderMarkdown(text('text/markdown'))}</div>`;
  if (d['text/plain']) return `<pre class="out plain">${escapeHtml(terminalText(text('text/plain')))}</pre>`;
  return '';
}

function renderCell(cell: Cell, index: number, stats: PageStats): string {
  const src = joinText(cell.source);
  if (cell.cell_type === 'markdown') return `<section class="cell md">${renderMarkdown(src)}</section>`;
  if (cell.cell_type === 'raw') return `<section class="cell raw"><pre>${escapeHtml(src)}</pre></section>`;
  const count = cell.execution_count ?? ' ';
  const secs = cellSeconds(cell);
  const outputs = cell.outputs.map((o) => renderOutput(o, stats)).join('\n');
  return (
    `<section class="cell code" id="cell-${index + 1}">` +
    `<div class="prompt">In&nbsp;[${count}]${secs !== undefined ? `<br><span class="secs">${secs} s</span>` : ''}</div>` +
    `<div class="body"><pre class="src"><code>${escapeHtml(src)}</code></pre>${outputs}</div></section>`
  );
}

/** The notebook's title: its first markdown heading, else `fallback`. */
export function notebookTitle(nb: Notebook, fallback: string): string {
  for (const c of nb.cells) {
    if (c.cell_type !== 'markdown') continue;
    const m = /^#{1,6}\s+(.+)$/m.exec(joinText(c.source));
    if (m) return m[1].trim();
  }
  return fallback;
}

const CSS = `
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 0 auto; padding: 1rem 2rem 4rem; color: #222; }
header.meta { color: #666; font-size: 13px; border-bottom: 1px solid #ddd; margin-bottom: 1rem; padding-bottom: .5rem; }
nav a { margin-right: 1rem; }
.cell { margin: .8rem 0; }
.cell.code { display: flex; gap: .5rem; }
.prompt { flex: 0 0 4.5rem; color: #888; font: 12px monospace; text-align: right; padding-top: .4rem; }
.secs { color: #aaa; }
.body { flex: 1; min-width: 0; }
pre { margin: 0; padding: .4rem .6rem; overflow-x: auto; font: 12.5px/1.4 ui-monospace, Menlo, Consolas, monospace; white-space: pre-wrap; }
pre.src { background: #f6f8fa; border: 1px solid #e3e6ea; border-radius: 4px; }
pre.out { background: #fff; }
pre.stderr { background: #fff4f4; }
pre.error { background: #fdd; color: #900; }
.out.image img { max-width: 100%; image-rendering: pixelated; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 2px 8px; }
.banner { font-weight: 700; letter-spacing: .02em; padding: .6rem 1rem; border-radius: 4px; margin: .6rem 0 1rem; }
.banner.smoke { background: #fff3cd; border: 2px solid #e0a800; color: #7a5800; font-size: 1.15rem; }
.banner.custom { background: #e8f0fe; border: 2px solid #4a7bd0; color: #1a3d7a; }
.banner.full { background: #e6f4ea; border: 2px solid #34a853; color: #1e6b35; }
.banner small { display: block; font-weight: 400; letter-spacing: 0; font-size: .9rem; }
.warn { background: #fdecea; border-left: 4px solid #d93025; padding: .3rem .8rem; margin: .5rem 0; }
table.headline td.num, table.headline th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.headline td.num strong { font-size: 1.05rem; }
.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0 1rem; }
.facts dt { color: #666; } .facts dd { margin: 0; }
.source { color: #666; font-size: 13px; }
.keyplots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: .5rem 1rem; }
.keyplots figure { margin: 0; min-width: 0; overflow: hidden; } .keyplots figcaption { color: #666; font-size: 13px; }
`;

function page(title: string, body: string, withPlotly: boolean): string {
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title>` +
    `<style>${CSS}</style>${withPlotly ? plotlyScriptTag() : ''}</head>\n<body>\n${body}\n</body></html>\n`
  );
}

interface RunnerMeta { executed_at?: string; seconds?: number; status?: string; params?: Record<string, string> }
const runnerOf = (nb: Notebook): RunnerMeta | undefined => nb.metadata.runner as RunnerMeta | undefined;

/**
 * When JupyterLab's "record timing" setting is on, a saved cell carries metadata.execution with the kernel's
 * timestamps; the cell's seconds and start come from those (the runner records its own, metadata.runner.seconds).
 */
function labTiming(cell: Cell): { start: string; seconds: number } | undefined {
  const e = cell.metadata.execution as Record<string, string> | undefined;
  const start = e?.['iopub.execute_input'];
  const end = e?.['shell.execute_reply'];
  const secs = start && end ? (Date.parse(end) - Date.parse(start)) / 1000 : NaN;
  return start && Number.isFinite(secs) && secs >= 0 ? { start, seconds: Math.round(secs * 10) / 10 } : undefined;
}

function cellSeconds(cell: Cell): number | undefined {
  return (cell.metadata.runner as { seconds?: number } | undefined)?.seconds ?? labTiming(cell)?.seconds;
}

/**
 * How a notebook was run, read from the file alone: the runner's record (`npm run notebooks`), else what a notebook
 * saved from JupyterLab (or any front end) holds — execution counts and outputs. A notebook run in Lab and saved is
 * run: it is what a user shares.
 */
export interface RunState {
  /** False only when no code cell ran (a clean notebook). */
  ran: boolean;
  /** The short label of the report's notebook table and the script's listing: "ok", "error in cell 5", "not run". */
  status: string;
  /** The page header's sentence. */
  detail: string;
  /** Seconds of notebook time (the runner's, else the sum of Lab's cell timings when recorded). */
  seconds?: number;
  /** When it ran (the runner's, else the first recorded Lab cell timing). */
  executedAt?: string;
}

export function runState(nb: Notebook): RunState {
  const run = runnerOf(nb);
  if (run) {
    const params = run.params && Object.keys(run.params).length ? ` · parameters: ${Object.entries(run.params).map(([k, v]) => `${k}=${v}`).join(', ')}` : '';
    return { ran: true, status: run.status ?? '?', detail: `executed ${run.executed_at ?? '?'} in ${run.seconds ?? '?'} s · status ${run.status ?? '?'}${params}`, seconds: run.seconds, executedAt: run.executed_at };
  }
  const code = nb.cells.map((c, i) => ({ c, i })).filter((x) => x.c.cell_type === 'code' && joinText(x.c.source).trim() !== '');
  const ran = code.filter(({ c }) => c.cell_type === 'code' && (c.execution_count != null || c.outputs.length > 0));
  if (ran.length === 0) return { ran: false, status: 'not run', detail: 'not run: no code cell has an execution count or outputs' };
  const failed = ran.find(({ c }) => c.cell_type === 'code' && c.outputs.some((o) => o.output_type === 'error'));
  const status = failed ? `error in cell ${failed.i + 1}` : ran.length < code.length ? `partly run: ${ran.length} of ${code.length} cells` : 'ok';
  const timings = ran.map(({ c }) => labTiming(c)).filter((t): t is { start: string; seconds: number } => !!t);
  const seconds = timings.length ? Math.round(timings.reduce((a, t) => a + t.seconds, 0) * 10) / 10 : undefined;
  const executedAt = timings.map((t) => t.start).sort()[0];
  return {
    ran: true, status, seconds, executedAt,
    detail: `saved with outputs (run in JupyterLab or another front end, not by the runner): ${ran.length} of ${code.length} code cells ran${failed ? `, cell ${failed.i + 1} failed` : ''}` +
      `${executedAt ? ` · first cell ${executedAt}` : ''}${seconds !== undefined ? ` · ${seconds} s of recorded cell time` : ''}`,
  };
}

/** One self-contained page for an executed notebook. */
export function notebookPage(nb: Notebook, name: string, opts: { banner?: string } = {}): { html: string; title: string; stats: PageStats } {
  const stats: PageStats = { figures: 0, images: 0 };
  const cells = nb.cells.map((c, i) => renderCell(c, i, stats)).join('\n');
  const title = notebookTitle(nb, name);
  const meta = escapeHtml(runState(nb).detail);
  const body = `<nav><a href="index.html">← report front page</a></nav>\n${opts.banner ?? ''}<header class="meta">${escapeHtml(name)} · ${meta}</header>\n${cells}`;
  return { html: page(title, body, stats.figures > 0), title, stats };
}

// ---- the front page ----

/** An executed notebook as the front page reads it. */
export interface ExecutedNotebook {
  /** e.g. "05-train" */
  name: string;
  nb: Notebook;
}

/** Every plotly figure a notebook shows, in order, with the (1-based) cell it is in. */
export function notebookFigures(nb: Notebook): Array<{ figure: Figure; cell: number }> {
  const out: Array<{ figure: Figure; cell: number }> = [];
  nb.cells.forEach((c, i) => {
    if (c.cell_type !== 'code') return;
    for (const o of c.outputs) {
      if ((o.output_type === 'display_data' || o.output_type === 'execute_result') && o.data[PLOTLY_MIME]) out.push({ figure: o.data[PLOTLY_MIME] as Figure, cell: i + 1 });
    }
  });
  return out;
}

/** Everything a notebook printed (stdout and stderr), as a terminal would show it. */
export function notebookText(nb: Notebook): string {
  const parts: string[] = [];
  for (const c of nb.cells) {
    if (c.cell_type !== 'code') continue;
    for (const o of c.outputs) if (o.output_type === 'stream') parts.push(terminalText(joinText(o.text)));
  }
  return parts.join('');
}

const TTA = ' + TTA';

export interface HeadlineRow {
  split: string;
  images?: number;
  accuracy?: number;
  tta?: number;
  /** Why the row has no numbers. */
  missing?: string;
}

export interface RunScale {
  kind: 'smoke' | 'custom' | 'full';
  /** The one loud line, e.g. "SMOKE RUN: 2,000 training images, 500 validation images, test images 0-999 only". */
  banner: string;
  /** Every parameter the notebooks ran with, e.g. "TRAIN_LIMIT=2000". */
  params: string[];
}

export interface RunSummary {
  project: { title: string; name: string; description?: string };
  scale: RunScale;
  headline: { rows: HeadlineRow[]; source: string; warnings: string[]; /** A folder dataset's name (absent: CIFAR-10). */ dataset?: string };
  backend?: string;
  /** First and last notebook execution times, and the notebooks' total seconds. */
  executed: { first?: string; last?: string; seconds: number; /** Some notebook ran outside the runner (saved from Lab). */ savedFromLab?: boolean };
  commit?: string;
  commitSource?: string;
  model?: { dir: string; date?: string; runId?: string; backbones?: string[]; resolution?: number; training?: Record<string, unknown> };
  keyFigures: Array<{ notebook: string; cell: number; figure: Figure }>;
}

const fmtInt = (n: number) => n.toLocaleString('en-US');
const pct = (x: number | undefined) => (x === undefined ? '–' : `${(100 * x).toFixed(2)}%`);

function readJson(file: string): any {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** The project's name and one-line title: README's first heading and package.json's name and description. */
function projectInfo(root: string): RunSummary['project'] {
  const pkg = readJson(path.join(root, 'package.json')) ?? {};
  let title = pkg.name ?? path.basename(root);
  try {
    const m = /^#\s+(.+)$/m.exec(fs.readFileSync(path.join(root, 'README.md'), 'utf8'));
    if (m) title = m[1].trim();
  } catch {
    // no README: the package name will do
  }
  return { title, name: pkg.name ?? path.basename(root), description: pkg.description };
}

/** Parameters that shrink the experiment, with how to say what they did (the rest are listed as KEY=value). */
const SHRINKING: Record<string, { full: string; say: (v: number) => string; smoke: (v: number, dflt: number) => boolean }> = {
  TRAIN_LIMIT: { full: 'all 45,000 training images', say: (v) => `${fmtInt(v)} training images`, smoke: (v) => v > 0 },
  VAL_LIMIT: { full: 'all 5,000 validation images', say: (v) => `${fmtInt(v)} validation images`, smoke: (v) => v > 0 },
  TEST_LIMIT: { full: 'all 10,000 test images', say: (v) => `test images 0-${fmtInt(v - 1)} only`, smoke: (v) => v > 0 },
  SWEEP_EPOCHS: { full: '', say: (v) => `${v} sweep epochs`, smoke: (v, d) => v < d },
  SWEEP_IMAGES: { full: '', say: (v) => `${fmtInt(v)} images per sweep run`, smoke: (v, d) => v > 0 && v < d },
  EPOCHS: { full: '', say: (v) => `${v} final epochs`, smoke: (v, d) => v < d },
  COMPARE_IMAGES: { full: '', say: (v) => `regime comparison on ${fmtInt(v)} images`, smoke: (v, d) => v < d },
  COMPARE_EPOCHS: { full: '', say: (v) => `${v} comparison epochs`, smoke: (v, d) => v < d },
};

/** Defaults of the shrinking parameters: the experiment's settings (lib/settings/config.ts) and notebook 4's own two. */
function defaultsOf(): Record<string, number> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { SETTINGS, envOf } = require('../settings/config') as typeof import('../settings/config');
  const d: Record<string, number> = { COMPARE_IMAGES: 2000, COMPARE_EPOCHS: 5 };
  for (const [k, spec] of Object.entries(SETTINGS)) if (typeof (spec as { default: unknown }).default === 'number') d[envOf(k)] = (spec as { default: number }).default;
  return d;
}

/** SMOKE (the data or the schedule cut down), CUSTOM (other parameters set) or FULL, from the runner's recorded parameters. */
export function runScale(params: Record<string, string>): RunScale {
  const defaults = defaultsOf();
  const list = Object.entries(params).map(([k, v]) => `${k}=${v}`);
  const cuts: string[] = [];
  for (const [k, s] of Object.entries(SHRINKING)) {
    if (params[k] === undefined) continue;
    const v = Number(params[k]);
    if (Number.isFinite(v) && s.smoke(v, defaults[k] ?? Infinity)) cuts.push(s.say(v));
  }
  if (cuts.length) return { kind: 'smoke', banner: `SMOKE RUN: ${cuts.join(', ')}`, params: list };
  const others = Object.keys(params).filter((k) => !['MODEL_DIR', 'MODELS_DIR', 'MODEL', 'DATA_DIR', 'CIFAR10_DIR', 'BACKBONES_DIR', 'TFJS_BACKEND'].includes(k));
  if (others.length) return { kind: 'custom', banner: `CUSTOM PARAMETERS: ${others.map((k) => `${k}=${params[k]}`).join(', ')}`, params: list };
  return { kind: 'full', banner: 'FULL RUN: default parameters (all 45,000 training, 5,000 validation and 10,000 test images)', params: list };
}

/**
 * Rows of a table a notebook printed with formatTable(['split', 'images', 'accuracy', 'accuracy + TTA'], ...):
 * split label -> images, accuracy and TTA accuracy.
 */
export function printedHeadline(text: string): Map<string, { images: number; accuracy: number; tta?: number }> {
  const rows = new Map<string, { images: number; accuracy: number; tta?: number }>();
  const lines = text.split('\n');
  // The header as lib/experiment/summary.ts accuracyTable prints it ("accuracy + TTA"; no TTA column when TTA is off),
  // or as notebooks printed it before ("with TTA").
  const h = lines.findIndex((l) => /^split\s+images\s+accuracy(\s+(with TTA|accuracy \+ TTA))?\s*$/.test(l));
  if (h < 0) return rows;
  for (const line of lines.slice(h + 2)) {
    const m = /^(.+?)\s{2,}(\d+)\s+([\d.]+)%(?:\s+(?:([\d.]+)%|-))?\s*$/.exec(line);
    if (!m) break;
    rows.set(m[1], { images: Number(m[2]), accuracy: Number(m[3]) / 100, ...(m[4] ? { tta: Number(m[4]) / 100 } : {}) });
  }
  return rows;
}

/**
 * The values a parameters cell printed that are not the notebook's defaults (lib/settings/params.ts), by env var name:
 * "parameters: trainLimit=2000 (env TRAIN_LIMIT), epochs=5 (set in notebook), ..." -> { TRAIN_LIMIT: '2000',
 * EPOCHS: '5' }. A value set in the notebook counts like one from the environment: either way the run was not the
 * default one. Notebooks printed before the marks were spelled out say "(TRAIN_LIMIT)"; that still reads.
 */
export function printedParams(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (!line.startsWith('parameters: ')) continue;
    for (const item of line.slice('parameters: '.length).split(/, (?=\w+=)/)) {
      const m = /^(\w+)=(.*) \((?:env )?([A-Z][A-Z0-9_]*)\)$/.exec(item) ?? /^(\w+)=(.*) \(set in notebook(?:; [^)]*)?\)$/.exec(item);
      if (!m) continue;
      let v = m[2];
      if (v.startsWith('"')) {
        try {
          v = JSON.parse(v);
        } catch {
          // keep it quoted
        }
      }
      out[m[3] ?? envOf(m[1])] = v;
    }
  }
  return out;
}

function gitHead(root: string): string | undefined {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const { execFileSync } = require('child_process') as typeof import('child_process');
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain'], { cwd: root, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    return dirty ? `${head}+dirty` : head;
  } catch {
    return undefined;
  }
}

export interface SummaryOptions {
  /** Where the saved model is (default: the model notebook 6 loaded, else the one notebook 5 saved, else fallbackModelDir). */
  modelDir?: string;
  /** The model folder when the notebooks name none (scripts/report.ts passes the current model's). */
  fallbackModelDir?: string;
  /** The experiment log (default: <DATA_DIR>/runs). */
  runsDir?: string;
  /** The project folder (README.md, package.json, git). */
  root?: string;
}

/** Key plots for the front page, by figure title, in this order: learning curves, the sweep, the confusion matrix. */
const KEY_FIGURES = [/^Final training/, /^Best validation accuracy/, /^Confusion matrix/];

/** What the front page says, from the executed notebooks, the saved model's metadata.json and the run log. */
export function runSummary(notebooks: ExecutedNotebook[], opts: SummaryOptions = {}): RunSummary {
  const root = opts.root ?? PROJECT_ROOT;
  const find = (re: RegExp) => notebooks.find((n) => re.test(n.name));
  const train = find(/train/);
  const evaluate = find(/evaluat/);
  const params: Record<string, string> = {};
  // What the runner recorded, else what the parameters cell printed (a notebook saved from JupyterLab has no runner
  // metadata, but still says "parameters: trainLimit=2000 (TRAIN_LIMIT), ...").
  for (const n of notebooks) Object.assign(params, printedParams(notebookText(n.nb)), runnerOf(n.nb)?.params ?? {});
  const warnings: string[] = [];

  // The model: the one notebook 6 says it loaded, else the one notebook 5 says it saved, else the given folder (the
  // current model of MODELS_DIR, resolved by scripts/report.ts).
  const trainText = train ? notebookText(train.nb) : '';
  const evalText = evaluate ? notebookText(evaluate.nb) : '';
  const recorded = /^loaded model \S+ \([^)]*\) from (.+?): /m.exec(evalText)?.[1] ?? /^model saved to (.+?) \(/m.exec(trainText)?.[1];
  const modelDir = opts.modelDir ?? (recorded ? path.resolve(root, recorded) : opts.fallbackModelDir ?? path.join(root, 'models'));
  const meta = readJson(path.join(modelDir, 'metadata.json')) as { metrics?: Record<string, number>; dataset?: { kind?: string; name?: string }; runId?: string; date?: string; gitCommit?: string | null; backbones?: string[]; resolution?: number; training?: Record<string, unknown> } | undefined;
  const printed = printedHeadline(evalText).size ? printedHeadline(evalText) : printedHeadline(trainText);
  const printedBy = printedHeadline(evalText).size ? evaluate?.name : train?.name;

  let source: string;
  const metrics = new Map<string, { accuracy?: number; tta?: number }>();
  if (meta?.metrics) {
    for (const [k, v] of Object.entries(meta.metrics)) {
      const split = k.endsWith(TTA) ? k.slice(0, -TTA.length) : k;
      const row = metrics.get(split) ?? {};
      if (k.endsWith(TTA)) row.tta = v;
      else row.accuracy = v;
      metrics.set(split, row);
    }
    source = `${path.join(shownPath(root, modelDir), 'metadata.json')} (the saved model${meta.runId ? `, run ${meta.runId}` : ''})`;
    if (train && meta.runId && !trainText.includes(meta.runId)) {
      warnings.push(`The saved model in ${modelDir} comes from run ${meta.runId}, which ${train.name} did not train (its output does not name it): the table may not belong to these notebooks.`);
    }
    for (const [split, p] of printed) {
      const m = metrics.get(split);
      const off = (a?: number, b?: number) => a !== undefined && b !== undefined && Math.abs(a - b) > 0.00006;
      if (m && (off(m.accuracy, p.accuracy) || off(m.tta, p.tta))) {
        warnings.push(`${printedBy} printed ${split} ${pct(p.accuracy)} / ${pct(p.tta)} with TTA, but metadata.json says ${pct(m.accuracy)} / ${pct(m.tta)}.`);
      }
    }
    if (printed.size) source += `; image counts from ${printedBy}'s output, whose accuracies ${warnings.length ? 'differ (see above)' : 'agree'}`;
  } else {
    for (const [split, p] of printed) metrics.set(split, { accuracy: p.accuracy, tta: p.tta });
    source = printed.size ? `the table ${printedBy} printed (no metadata.json in ${modelDir})` : `nowhere: no metadata.json in ${modelDir} and no accuracy table in the notebooks' output`;
    if (!printed.size) warnings.push(`No headline numbers: ${source}.`);
  }
  const rows: HeadlineRow[] = [...metrics].map(([split, m]) => ({ split, images: printed.get(split)?.images, accuracy: m.accuracy, tta: m.tta }));
  const has = (re: RegExp) => rows.some((r) => re.test(r.split));
  if (!has(/^validation/)) rows.unshift({ split: 'validation', missing: 'not measured' });
  // A folder's test split is one row, "test"; CIFAR-10's are the exact images 0-999 and the (partly rebuilt) rest.
  const folderName = meta?.dataset?.kind === 'folder' ? meta.dataset.name ?? 'a folder' : undefined;
  if (folderName !== undefined) {
    if (!has(/^test/)) rows.push({ split: 'test', missing: 'not measured' });
  } else if (!has(/^test 0-999/)) rows.push({ split: 'test 0-999 (exact)', missing: 'not measured' });
  if (folderName === undefined && !rows.some((r) => /^test 0-(?!999 )/.test(r.split) || /full test/.test(r.split))) {
    const limit = Number(params.TEST_LIMIT);
    rows.push({ split: 'full test (1000-9999 JPEG-rebuilt)', missing: limit > 0 && limit <= 1000 ? `not measured: TEST_LIMIT=${limit} stops at test image ${limit - 1}` : 'not measured' });
  }

  // Backend: the line the notebooks printed (what actually ran), else the run log's name for it.
  const allText = notebooks.map((n) => notebookText(n.nb)).join('\n');
  let backend = /^tfjs backend: (.+)$/m.exec(trainText)?.[1] ?? /^tfjs backend: (.+)$/m.exec(allText)?.[1];
  const run = meta?.runId ? readJson(path.join(opts.runsDir ?? dataDir('runs'), `${meta.runId}.json`)) : undefined;
  if (!backend && run?.backend) backend = `${run.backend} (from the run log)`;

  const states = notebooks.map((n) => runState(n.nb));
  const times = states.map((r) => r.executedAt).filter((t): t is string => !!t).sort();
  const seconds = states.reduce((a, r) => a + (r.seconds ?? 0), 0);
  const savedFromLab = notebooks.some((n, i) => !runnerOf(n.nb) && states[i].ran);
  const keyFigures: RunSummary['keyFigures'] = [];
  for (const re of KEY_FIGURES) {
    for (const n of notebooks) {
      const f = notebookFigures(n.nb).filter((x) => re.test(figureTitleOf(x.figure))).pop(); // the last state of a live figure
      if (f) {
        keyFigures.push({ notebook: n.name, cell: f.cell, figure: f.figure });
        break;
      }
    }
  }
  const commit = meta?.gitCommit ?? undefined;
  return {
    project: projectInfo(root),
    scale: runScale(params),
    headline: { rows, source, warnings, ...(folderName !== undefined ? { dataset: folderName } : {}) },
    backend,
    executed: { first: times[0], last: times[times.length - 1], seconds: Math.round(seconds * 10) / 10, savedFromLab },
    commit: commit ?? gitHead(root),
    commitSource: commit ? 'the saved model' : 'the working tree at report time',
    model: meta ? { dir: shownPath(root, modelDir), date: meta.date, runId: meta.runId, backbones: meta.backbones, resolution: meta.resolution, training: meta.training } : undefined,
    keyFigures,
  };
}

/** `p` relative to the project when inside it, else absolute. */
function shownPath(root: string, p: string): string {
  const rel = path.relative(root, p);
  return rel.startsWith('..') || path.isAbsolute(rel) ? p : rel || '.';
}

function figureTitleOf(fig: Figure): string {
  const t = fig.layout?.title as { text?: string } | string | undefined;
  return (typeof t === 'string' ? t : t?.text) ?? '';
}

function bannerHtml(scale: RunScale): string {
  const note = scale.kind === 'smoke' ? 'A quick check that everything runs: these numbers are NOT the project\'s results.' : scale.kind === 'full' ? '' : '';
  return `<div class="banner ${scale.kind}">${escapeHtml(scale.banner)}${note ? `<small>${escapeHtml(note)}</small>` : ''}</div>\n`;
}

/** When and how the notebooks ran: the runner's record, Lab's recorded cell timings, or only that outputs were saved. */
function executedFact(e: RunSummary['executed']): string {
  const when = e.first ? `${e.first}${e.last && e.last !== e.first ? ` to ${e.last}` : ''} (${e.seconds} s of notebook time)` : undefined;
  const how = e.savedFromLab ? 'run in JupyterLab (or another front end) and saved with outputs' : undefined;
  return when && how ? `${when}; ${how}` : when ?? (how ? `${how}; no timings recorded` : 'not by the runner');
}

function frontPage(s: RunSummary, pages: ReportResult['pages'], generated: Date): { html: string; figures: number } {
  const e = escapeHtml;
  const rows = s.headline.rows
    .map((r) => r.missing
      ? `<tr><td>${e(r.split)}</td><td class="num">–</td><td colspan="2"><em>${e(r.missing)}</em></td></tr>`
      : `<tr><td>${e(r.split)}</td><td class="num">${r.images !== undefined ? fmtInt(r.images) : '?'}</td><td class="num">${pct(r.accuracy)}</td><td class="num"><strong>${pct(r.tta)}</strong></td></tr>`)
    .join('\n');
  const m = s.model;
  const trained = m?.training as { lr?: number; dropout?: number; epochs?: number; bestEpoch?: number } | undefined;
  const facts: Array<[string, string]> = [
    ['run', `${s.scale.kind === 'smoke' ? 'SMOKE' : s.scale.kind === 'custom' ? 'custom parameters' : 'full, default parameters'}${s.scale.params.length ? ` · ${s.scale.params.join(', ')}` : ''}`],
    ['backend', s.backend ?? 'not printed by the notebooks'],
    ['executed', executedFact(s.executed)],
    ['commit', s.commit ? `${s.commit} (${s.commitSource})` : 'unknown'],
  ];
  if (m) {
    facts.push(['model', `${m.dir}: ${(m.backbones ?? []).join(' + ')}${m.resolution ? ` @ ${m.resolution} px` : ''}${trained ? ` · lr ${trained.lr}, dropout ${trained.dropout}, best epoch ${trained.bestEpoch} of ${trained.epochs}` : ''} · saved ${m.date ?? '?'}${m.runId ? ` · run ${m.runId}` : ''}`]);
  }
  facts.push(['report', `generated ${generated.toISOString()}`]);
  const list = pages
    .map((p) => `<tr><td><a href="${e(path.basename(p.file))}">${e(p.title)}</a></td><td>${e(path.basename(p.file, '.html'))}</td><td>${e(p.status)}</td><td class="num">${p.seconds ?? '–'}</td><td class="num">${p.stats.figures}</td><td class="num">${p.stats.images}</td></tr>`)
    .join('\n');
  const plots = s.keyFigures
    .map((k) => `<figure>${figureHtml({ ...k.figure, layout: { ...k.figure.layout, height: 440, legend: { orientation: 'h', y: -0.25 } } }, { fallbackText: 'loading plot…' })}<figcaption>from <a href="${e(k.notebook)}.html#cell-${k.cell}">${e(k.notebook)}, cell ${k.cell}</a></figcaption></figure>`)
    .join('\n');
  const body =
    `<h1>${e(s.project.title)}</h1>\n<p class="source">${e(s.project.name)}${s.project.description ? ` — ${e(s.project.description)}` : ''}</p>\n` +
    bannerHtml(s.scale) +
    s.headline.warnings.map((w) => `<p class="warn">${e(w)}</p>`).join('\n') +
    `<h2>Headline</h2>\n<table class="headline"><tr><th>split</th><th class="num">images</th><th class="num">accuracy</th><th class="num">with TTA</th></tr>\n${rows}\n</table>\n` +
    `<p class="source">Source: ${e(s.headline.source)}. TTA = the prediction averaged over the image and its mirror image. ` +
    (s.headline.dataset !== undefined
      ? `Dataset: the folder ${e(s.headline.dataset)}; the model was selected on validation.</p>\n`
      : `Only test images 0-999 are exact in the offline copy; the model was selected on validation.</p>\n`) +
    `<dl class="facts">${facts.map(([k, v]) => `<dt>${e(k)}</dt><dd>${e(v)}</dd>`).join('')}</dl>\n` +
    (plots ? `<h2>Key plots</h2>\n<div class="keyplots">\n${plots}\n</div>\n` : '') +
    `<h2>Notebooks</h2>\n<table class="notebooks"><tr><th>notebook</th><th>file</th><th>status</th><th class="num">seconds</th><th class="num">plots</th><th class="num">images</th></tr>\n${list}\n</table>\n` +
    `<p class="source">Each notebook page shows its cells with the seconds each took.</p>`;
  return { html: page(`${s.project.title} — report`, body, s.keyFigures.length > 0), figures: s.keyFigures.length };
}

export interface ReportResult {
  index: string;
  pages: Array<{ file: string; title: string; stats: PageStats; status: string; seconds?: number }>;
  summary: RunSummary;
}

/** Write <outDir>/<notebook>.html for each executed notebook and the front page <outDir>/index.html. */
export function buildReport(files: string[], outDir: string = DEFAULT_REPORT_OUT, opts: SummaryOptions & { now?: Date } = {}): ReportResult {
  if (files.length === 0) throw new Error('report: no executed notebooks given (run `npm run notebooks` first)');
  const notebooks: ExecutedNotebook[] = files.map((f) => ({ name: path.basename(f, '.ipynb'), nb: readNotebook(f) }));
  const summary = runSummary(notebooks, opts);
  const banner = summary.scale.kind === 'full' ? '' : bannerHtml(summary.scale);
  const pages: ReportResult['pages'] = [];
  for (const { name, nb } of notebooks) {
    const { html, title, stats } = notebookPage(nb, `${name}.ipynb`, { banner });
    const file = path.join(outDir, `${name}.html`);
    writeFileAtomic(file, html);
    const state = runState(nb);
    pages.push({ file, title, stats, status: state.status, seconds: state.seconds });
  }
  const index = path.join(outDir, 'index.html');
  writeFileAtomic(index, frontPage(summary, pages, opts.now ?? new Date()).html);
  return { index, pages, summary };
}

/** The notebooks in `dir` (name order). */
export function executedNotebooks(dir: string = DEFAULT_REPORT_IN): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f.endsWith('.ipynb')).sort().map((f) => path.join(dir, f));
}

/** The notebooks as a user saves them from JupyterLab: the project's own notebooks/. */
export const LAB_NOTEBOOKS_DIR = path.join(PROJECT_ROOT, 'notebooks');

/** Notebooks in `dir` that ran (see runState); a file that is not a notebook counts as not run here, and fails later. */
function ranIn(dir: string): { all: string[]; ran: string[] } {
  const all = executedNotebooks(dir);
  const ran = all.filter((f) => {
    try {
      return runState(readNotebook(f)).ran;
    } catch {
      return false;
    }
  });
  return { all, ran };
}

/**
 * Which notebooks the report is made of, and one line saying so. `--in DIR` is used as given. Without it: the
 * runner's copies in out/notebooks when any ran, else the project's notebooks/ as saved in JupyterLab (the report of
 * what a user did in Lab) when any of those ran. Every notebook of the chosen folder is reported, unrun ones as
 * "not run". Throws one line naming the folders looked in when none has a notebook that ran.
 */
export function reportInputs(opts: { inDir?: string; defaultIn?: string; labDir?: string; shown?: (p: string) => string } = {}): { files: string[]; line: string } {
  const shown = opts.shown ?? ((p: string) => {
    const rel = path.relative(process.cwd(), p);
    return rel.startsWith('..') || path.isAbsolute(rel) ? p : rel || '.';
  });
  const describe = (dir: string, r: { all: string[]; ran: string[] }) => `${r.all.length ? `${r.ran.length} of ${r.all.length} notebooks` : 'no notebooks'} with outputs in ${shown(dir)}`;
  if (opts.inDir) {
    const r = ranIn(opts.inDir);
    if (!r.ran.length) throw new Error(`no executed notebooks in ${shown(opts.inDir)} (${r.all.length ? `${r.all.length} notebooks, none with outputs or execution counts` : 'no .ipynb files'}): run them in JupyterLab and save, or \`npm run notebooks\``);
    return { files: r.all, line: `notebooks: ${describe(opts.inDir, r)} (--in)` };
  }
  const out = opts.defaultIn ?? DEFAULT_REPORT_IN;
  const lab = opts.labDir ?? LAB_NOTEBOOKS_DIR;
  const r = ranIn(out);
  if (r.ran.length) return { files: r.all, line: `notebooks: ${describe(out, r)} (executed by \`npm run notebooks\`)` };
  const l = ranIn(lab);
  if (l.ran.length) return { files: l.all, line: `notebooks: ${describe(lab, l)}, as saved in JupyterLab (${shown(out)} has no executed notebooks)` };
  throw new Error(`no executed notebooks in ${shown(out)} or ${shown(lab)}: run \`npm run notebooks\`, or run the notebooks in JupyterLab and save them (or name a folder with --in)`);
}
