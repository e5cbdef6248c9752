// The shareable report: one self-contained HTML page per executed notebook (markdown rendered, code, text output,
// images as data URIs, plotly figures re-drawn from their JSON with plotly.js inlined once per page) and an index.
// Opens offline from disk: no server, no network.
import * as fs from 'fs';
import * as path from 'path';
import { marked } from 'marked';
import { writeFileAtomic } from '../atomic';
import { Cell, Notebook, Output, joinText, readNotebook } from './nbformat';
import { PROJECT_ROOT } from '../paths';
import { Figure, PLOTLY_LOADER_META, PLOTLY_MIME, escapeHtml, figureHtml, plotlyScriptTag } from '../plotly-html';

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
  const secs = (cell.metadata.runner as { seconds?: number } | undefined)?.seconds;
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
`;

function page(title: string, body: string, withPlotly: boolean): string {
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title>` +
    `<style>${CSS}</style>${withPlotly ? plotlyScriptTag() : ''}</head>\n<body>\n${body}\n</body></html>\n`
  );
}

/** One self-contained page for an executed notebook. */
export function notebookPage(nb: Notebook, name: string): { html: string; title: string; stats: PageStats } {
  const stats: PageStats = { figures: 0, images: 0 };
  const cells = nb.cells.map((c, i) => renderCell(c, i, stats)).join('\n');
  const title = notebookTitle(nb, name);
  const run = nb.metadata.runner as { executed_at?: string; seconds?: number; status?: string; params?: Record<string, string> } | undefined;
  const params = run?.params && Object.keys(run.params).length ? ` · parameters: ${Object.entries(run.params).map(([k, v]) => `${k}=${v}`).join(', ')}` : '';
  const meta = run
    ? `executed ${escapeHtml(run.executed_at ?? '?')} in ${run.seconds ?? '?'} s · status ${escapeHtml(run.status ?? '?')}${escapeHtml(params)}`
    : 'not executed by the runner';
  const body = `<nav><a href="index.html">← all notebooks</a></nav>\n<header class="meta">${escapeHtml(name)} · ${meta}</header>\n${cells}`;
  return { html: page(title, body, stats.figures > 0), title, stats };
}

export interface ReportResult {
  index: string;
  pages: Array<{ file: string; title: string; stats: PageStats; status: string }>;
}

/** Write <outDir>/<notebook>.html for each executed notebook and <outDir>/index.html. */
export function buildReport(files: string[], outDir: string = DEFAULT_REPORT_OUT): ReportResult {
  if (files.length === 0) throw new Error('report: no executed notebooks given (run `npm run notebooks` first)');
  const pages: ReportResult['pages'] = [];
  for (const f of files) {
    const nb = readNotebook(f);
    const name = path.basename(f, '.ipynb');
    const { html, title, stats } = notebookPage(nb, path.basename(f));
    const file = path.join(outDir, `${name}.html`);
    writeFileAtomic(file, html);
    pages.push({ file, title, stats, status: (nb.metadata.runner as { status?: string } | undefined)?.status ?? 'not run' });
  }
  const items = pages
    .map((p) => `<li><a href="${escapeHtml(path.basename(p.file))}">${escapeHtml(p.title)}</a> <small>(${escapeHtml(path.basename(p.file, '.html'))} · ${p.status} · ${p.stats.figures} plots, ${p.stats.images} images)</small></li>`)
    .join('\n');
  const index = path.join(outDir, 'index.html');
  writeFileAtomic(index, page('Notebook report', `<h1>Notebook report</h1>\n<p class="meta">Generated ${new Date().toISOString()}</p>\n<ol>\n${items}\n</ol>`, false));
  return { index, pages };
}

/** The executed notebooks in `dir` (name order). */
export function executedNotebooks(dir: string = DEFAULT_REPORT_IN): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir).filter((f) => f.endsWith('.ipynb')).sort().map((f) => path.join(dir, f));
}
