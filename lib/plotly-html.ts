// HTML that draws plotly figures, shared by the notebook display adapter (lib/plot.ts) and the report
// (lib/jupyter/report.ts), so a figure looks the same live and in the shared HTML page.
import * as fs from 'fs';
import * as crypto from 'crypto';
import { escapeHtml } from './format';

export { escapeHtml };

export interface Figure {
  data: Array<Record<string, unknown>>;
  layout: Record<string, unknown>;
}

/** The MIME type plotly's own Jupyter renderer uses; we also keep the figure JSON under it for the report. */
export const PLOTLY_MIME = 'application/vnd.plotly.v1+json';

/** Output metadata marking the one display per kernel that carries plotly.js (the report drops it). */
export const PLOTLY_LOADER_META = 'plotly-loader';

let bundle: string | undefined;

/** plotly.js-dist-min as one inline-able script text (read once per process). */
export function plotlyBundle(): string {
  if (bundle === undefined) {
    const file = require.resolve('plotly.js-dist-min');
    // "</script" inside an inline script would end it early
    bundle = fs.readFileSync(file, 'utf8').replace(/<\/(script)/gi, '<\\/$1');
  }
  return bundle;
}

export function plotlyVersion(): string {
  return (require('plotly.js-dist-min/package.json') as { version: string }).version;
}

/** Escape for embedding JSON inside <script>: no "</script", no "<!--", and the JS-breaking line separators. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value)
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}


export function figureTitle(fig: Figure): string {
  const t = fig.layout.title as { text?: string } | string | undefined;
  return (typeof t === 'string' ? t : t?.text) ?? 'figure';
}

/**
 * A <div> plus a small script that draws `fig` with window.Plotly, waiting for it if the bundle's script has not
 * run yet (JupyterLab renders outputs one by one). Inside JupyterLab, if plotly.js never arrives (e.g. the loader
 * output was cleared), it fetches the bundle from the server (`npm run lab` serves the project root).
 * The div's text is what an untrusted notebook shows: JupyterLab strips scripts from untrusted outputs.
 */
export function figureHtml(fig: Figure, opts: { fallbackText?: string } = {}): string {
  const id = `plotly-${crypto.randomBytes(6).toString('hex')}`;
  const height = typeof fig.layout.height === 'number' ? fig.layout.height : 420;
  const fallback =
    opts.fallbackText ??
    `[plot: ${figureTitle(fig)} — run the cell (or trust the notebook) to draw it; the HTML report shows it too]`;
  return (
    `<div id="${id}" class="plotly-figure" style="width:100%;min-height:${height}px">${escapeHtml(fallback)}</div>\n` +
    `<script type="text/javascript">(function () {\n` +
    `  var fig = ${scriptJson(fig)};\n` +
    `  var el = document.getElementById(${JSON.stringify(id)});\n` +
    `  var t0 = Date.now();\n` +
    `  function fetchBundle() {\n` +
    `    if (window.__plotlyFetching) return; window.__plotlyFetching = true;\n` +
    `    var base = '/'; var cfg = document.getElementById('jupyter-config-data');\n` +
    `    try { base = JSON.parse(cfg.textContent).baseUrl || '/'; } catch (e) { return; }\n` +
    `    var s = document.createElement('script'); s.src = base + 'files/node_modules/plotly.js-dist-min/plotly.min.js';\n` +
    `    document.head.appendChild(s);\n` +
    `  }\n` +
    `  function draw() {\n` +
    `    el = el || document.getElementById(${JSON.stringify(id)});\n` +
    `    if (el && window.Plotly) { el.textContent = ''; window.Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false }); return; }\n` +
    `    if (Date.now() - t0 > 3000) fetchBundle();\n` +
    `    if (Date.now() - t0 < 60000) setTimeout(draw, 50);\n` +
    `  }\n` +
    `  draw();\n` +
    `})();</script>`
  );
}

/** The inline script that defines window.Plotly (once per notebook / page). */
export function plotlyScriptTag(): string {
  return `<script type="text/javascript">${plotlyBundle()}</script>`;
}
