// HTML that draws plotly figures, shared by the notebook display adapter (lib/evaluate/plot.ts) and the report
// (lib/jupyter/report.ts), so a figure looks the same live and in the shared HTML page.
import * as fs from 'fs';
import * as crypto from 'crypto';
import { escapeHtml } from '../util/format';

export { escapeHtml };

export interface Figure {
  data: Array<Record<string, unknown>>;
  layout: Record<string, unknown>;
}

/** The MIME type plotly's own Jupyter renderer uses; we also keep the figure JSON under it for the report. */
export const PLOTLY_MIME = 'application/vnd.plotly.v1+json';

/** Output metadata that marked the display carrying plotly.js in notebooks executed before figures went out as
 * JSON; the report still drops such outputs. */
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

/** What a notebook shows for a figure where neither plotly's renderer nor a script can draw it. */
export function fallbackText(fig: Figure): string {
  return `[plot: ${figureTitle(fig)} — to see it here, install JupyterLab's plotly renderer (pip install plotly) or trust the notebook; npm run report draws it too]`;
}

/**
 * A <div> plus a small script that draws `fig` with window.Plotly. In a page that inlines plotly.js (the report) it
 * draws at once; inside JupyterLab without plotly's renderer (a trusted notebook: scripts run) it loads plotly.js
 * once from the Jupyter server (`npm run lab` serves the project root, so node_modules/plotly.js-dist-min) and waits
 * for it. The div's text is what shows where scripts do not run (an untrusted notebook strips them).
 */
export function figureHtml(fig: Figure, opts: { fallbackText?: string } = {}): string {
  const id = `plotly-${crypto.randomBytes(6).toString('hex')}`;
  const height = typeof fig.layout.height === 'number' ? fig.layout.height : 420;
  const fallback = opts.fallbackText ?? fallbackText(fig);
  return (
    `<div id="${id}" class="plotly-figure" style="width:100%;min-height:${height}px">${escapeHtml(fallback)}</div>\n` +
    `<script type="text/javascript">(function () {\n` +
    `  var fig = ${scriptJson(fig)};\n` +
    `  var t0 = Date.now();\n` +
    `  function fetchBundle() {\n` +
    `    if (window.Plotly || window.__plotlyFetching) return;\n` +
    `    var cfg = document.getElementById('jupyter-config-data'); if (!cfg) return;\n` +
    `    var base = '/'; try { base = JSON.parse(cfg.textContent).baseUrl || '/'; } catch (e) { return; }\n` +
    `    window.__plotlyFetching = true;\n` +
    `    var s = document.createElement('script'); s.src = base + 'files/node_modules/plotly.js-dist-min/plotly.min.js';\n` +
    `    document.head.appendChild(s);\n` +
    `  }\n` +
    `  function draw() {\n` +
    `    var el = document.getElementById(${JSON.stringify(id)});\n` +
    `    if (el && window.Plotly) { el.textContent = ''; window.Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false }); return; }\n` +
    `    fetchBundle();\n` +
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
