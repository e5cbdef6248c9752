// Figure builders returning plain plotly figure JSON ({data, layout}), plus `show` / `liveFigure`, the display
// adapter: inline plots in tslab (the figure JSON as application/vnd.plotly.v1+json, with an HTML fallback), a JSON
// file or nothing elsewhere. Keeping figures as data lets the report re-render exactly what the notebook showed.
import * as path from 'path';
import { runtimeContext } from '../settings/context';
import { writeFileAtomic } from '../util/atomic';
import { displayBundle, inNotebook } from '../jupyter/notebook';
import { Figure, PLOTLY_MIME, figureHtml, figureTitle } from './plotly-html';

export type { Figure } from './plotly-html';
export { imageGrid, sampleGrid, showPng, thumbnails } from './image-grid';
export type { ImageGridOptions } from './image-grid';

type Num = ArrayLike<number>;
type Label = string | number;

/** Options every builder takes. */
export interface Common {
  title?: string;
  xTitle?: string;
  yTitle?: string;
  /** Pixels (default 420). */
  height?: number;
}

/** One named series; x defaults to 1..n (epochs). */
export interface Series {
  name: string;
  y: Num;
  x?: ArrayLike<Label>;
  /** Line style, e.g. 'dash' for validation curves. */
  dash?: 'solid' | 'dash' | 'dot' | 'dashdot';
  color?: string;
}

/** A vertical line with a label, e.g. the early-stopping epoch or the suggested learning rate. */
export interface Marker {
  x: number;
  label?: string;
  color?: string;
}

const arr = <T>(a: ArrayLike<T>): T[] => Array.from(a); // typed arrays would serialise as {"0":..}

function layout(c: Common, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    ...(c.title ? { title: { text: c.title } } : {}),
    height: c.height ?? 420,
    margin: { l: 60, r: 20, t: c.title ? 50 : 20, b: 50 },
    xaxis: { title: { text: c.xTitle ?? '' }, automargin: true },
    yaxis: { title: { text: c.yTitle ?? '' }, automargin: true },
    ...extra,
  };
}

function checkSeries(builder: string, s: Series): { x: Label[]; y: number[] } {
  const y = arr(s.y);
  const x = s.x ? arr(s.x) : y.map((_, i) => i + 1);
  if (x.length !== y.length) {
    throw new Error(`${builder}: series "${s.name}" has ${x.length} x values but ${y.length} y values`);
  }
  return { x, y };
}

function toSeries(series: Series[] | Record<string, Num>): Series[] {
  return Array.isArray(series) ? series : Object.entries(series).map(([name, y]) => ({ name, y }));
}

/**
 * Markers as plotly shapes (dashed vertical lines) plus their labels (annotations) just above the plot area.
 * On a log x axis plotly takes shape positions as data values but annotation positions as log10 of them, so the
 * label is placed at log10(x) there, or it would drift away from its line.
 */
function markerShapes(markers: Marker[] = [], logX = false): Record<string, unknown> {
  for (const m of markers) {
    if (!Number.isFinite(m.x) || (logX && !(m.x > 0))) throw new Error(`marker "${m.label ?? ''}": x = ${m.x} cannot be placed on a ${logX ? 'log' : 'linear'} axis`);
  }
  return {
    shapes: markers.map((m) => ({
      type: 'line', xref: 'x', yref: 'paper', x0: m.x, x1: m.x, y0: 0, y1: 1,
      line: { color: m.color ?? '#d62728', dash: 'dash', width: 1.5 },
    })),
    annotations: markers
      .filter((m) => m.label)
      .map((m) => ({
        x: logX ? Math.log10(m.x) : m.x, xref: 'x', y: 1, yref: 'paper', yanchor: 'bottom', text: m.label, showarrow: false,
        font: { size: 11, color: m.color ?? '#d62728' },
      })),
  };
}

/** Bars: one series (a plain array) or grouped series over the same categories. */
export function bar(opts: Common & { categories: ArrayLike<Label>; values: Num | Series[]; horizontal?: boolean; showValues?: boolean; stacked?: boolean }): Figure {
  const cats = arr(opts.categories);
  const series: Series[] = Array.isArray(opts.values) && typeof opts.values[0] === 'object'
    ? (opts.values as Series[])
    : [{ name: opts.yTitle ?? 'value', y: opts.values as Num }];
  const data = series.map((s) => {
    const y = arr(s.y);
    if (y.length !== cats.length) throw new Error(`bar: series "${s.name}" has ${y.length} values for ${cats.length} categories`);
    const [a, b] = opts.horizontal ? ['y', 'x'] : ['x', 'y'];
    return {
      type: 'bar', name: s.name, [a]: cats, [b]: y, orientation: opts.horizontal ? 'h' : 'v',
      ...(s.color ? { marker: { color: s.color } } : {}),
      ...(opts.showValues ? { text: y.map((v) => (Number.isInteger(v) ? String(v) : v.toFixed(3))), textposition: 'auto' } : {}),
    };
  });
  return { data, layout: layout(opts, { barmode: opts.stacked ? 'stack' : 'group', showlegend: series.length > 1 }) };
}

/** Images per class. */
export function classCountsChart(counts: Num, classNames: string[], opts: Common = {}): Figure {
  if (counts.length !== classNames.length) throw new Error(`classCountsChart: ${counts.length} counts for ${classNames.length} class names`);
  return bar({ title: 'Images per class', xTitle: 'class', yTitle: 'images', ...opts, categories: classNames, values: counts, showValues: true });
}

/** Histogram of raw values (plotly bins them), one trace per series. */
export function histogram(opts: Common & { values: Num | Array<{ name: string; values: Num }>; bins?: number }): Figure {
  const groups = Array.isArray(opts.values) && typeof opts.values[0] === 'object'
    ? (opts.values as Array<{ name: string; values: Num }>)
    : [{ name: 'values', values: opts.values as Num }];
  const data = groups.map((g) => ({ type: 'histogram', name: g.name, x: arr(g.values), opacity: groups.length > 1 ? 0.6 : 1, ...(opts.bins ? { nbinsx: opts.bins } : {}) }));
  return { data, layout: layout({ yTitle: 'count', ...opts }, { barmode: 'overlay', showlegend: groups.length > 1 }) };
}

/** Lines, e.g. learning curves: `lineChart({ series: { loss, valLoss }, markers: [{ x: best, label: 'early stop' }] })`. */
export function lineChart(opts: Common & { series: Series[] | Record<string, Num>; markers?: Marker[]; logX?: boolean; logY?: boolean; points?: boolean }): Figure {
  const data = toSeries(opts.series).map((s) => {
    const { x, y } = checkSeries('lineChart', s);
    return { type: 'scatter', mode: opts.points ? 'lines+markers' : 'lines', name: s.name, x, y, line: { dash: s.dash ?? 'solid', ...(s.color ? { color: s.color } : {}) } };
  });
  const l = layout({ xTitle: 'epoch', ...opts }, markerShapes(opts.markers, opts.logX));
  const series = toSeries(opts.series);
  if (series.every((s) => !s.x)) {
    // x = epochs 1..n: whole-number ticks only
    const n = Math.max(...series.map((s) => s.y.length), 1);
    Object.assign(l.xaxis as Record<string, unknown>, { tick0: 1, dtick: Math.max(1, Math.ceil(n / 10)) });
  }
  if (opts.logX) (l.xaxis as Record<string, unknown>).type = 'log';
  if (opts.logY) (l.yaxis as Record<string, unknown>).type = 'log';
  return { data, layout: l };
}

/** Points (lines optional), e.g. the learning-rate finder: loss over lr with `logX` and a marker at the pick. */
export function scatter(opts: Common & { series: Series[]; markers?: Marker[]; logX?: boolean; logY?: boolean; lines?: boolean }): Figure {
  const fig = lineChart({ ...opts, xTitle: opts.xTitle ?? '' });
  for (const t of fig.data) t.mode = opts.lines ? 'lines+markers' : 'markers';
  return fig;
}

/** Ten distinct colours (matplotlib's tab10), one per CIFAR-10 class. */
export const CLASS_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/**
 * A 2-D embedding (e.g. UMAP of features) coloured by class: one trace per class, so the legend names the colours
 * and clicking a class hides it; `hover[i]` is point i's hover text (e.g. class and image index). `xy` holds
 * x0, y0, x1, y1, ... The axes carry no ticks: embedding coordinates have no units.
 */
export function embeddingScatter(opts: Common & { xy: Num; labels: ArrayLike<number>; classNames: string[]; hover?: string[]; markerSize?: number }): Figure {
  const n = opts.labels.length;
  if (opts.xy.length !== 2 * n) throw new Error(`embeddingScatter: ${opts.xy.length} coordinates for ${n} points (expected ${2 * n})`);
  if (opts.hover && opts.hover.length !== n) throw new Error(`embeddingScatter: ${opts.hover.length} hover texts for ${n} points`);
  const data = opts.classNames.map((name, c) => {
    const idx: number[] = [];
    for (let i = 0; i < n; i++) if (opts.labels[i] === c) idx.push(i);
    return {
      type: 'scatter', mode: 'markers', name,
      x: idx.map((i) => Number(opts.xy[2 * i].toFixed(3))), y: idx.map((i) => Number(opts.xy[2 * i + 1].toFixed(3))),
      marker: { size: opts.markerSize ?? 5, opacity: 0.75, color: CLASS_COLORS[c % CLASS_COLORS.length] },
      ...(opts.hover ? { text: idx.map((i) => opts.hover![i]), hovertemplate: '%{text}<extra></extra>' } : { hovertemplate: `${name}<extra></extra>` }),
    };
  });
  const axis = { showticklabels: false, ticks: '', zeroline: false, showgrid: false, title: { text: '' } };
  const l = layout({ height: 640, ...opts }, { legend: { itemsizing: 'constant', title: { text: 'class' } }, hovermode: 'closest' });
  l.xaxis = { ...axis, title: { text: opts.xTitle ?? '' } };
  l.yaxis = { ...axis, title: { text: opts.yTitle ?? '' }, scaleanchor: 'x' };
  return { data, layout: l };
}

/**
 * A d3-format spec (https://d3js.org/d3-format), e.g. '.2%' (percent, 2 decimals), '.3f', ',d'. Plotly's template
 * syntax puts it after a colon (`%{z:.2%}`); a leading ':' is accepted here too, so '.2%' and ':.2%' mean the same.
 * Anything else is an error: plotly would print the template itself, e.g. "%{z.2%}", in every cell.
 */
export function d3Format(spec: string): string {
  const s = spec.startsWith(':') ? spec.slice(1) : spec;
  if (!/^(?:[^{}]?[<>=^])?[-+( ]?[$#]?0?\d*,?(?:\.\d+)?~?[a-zA-Z%]?$/.test(s)) {
    throw new Error(`"${spec}" is not a d3-format spec (e.g. '.2%', '.3f', ',d')`);
  }
  return s;
}

/** A heatmap with labelled axes; cell values printed when `showValues` (default: for up to 20x20 cells). */
export function heatmap(opts: Common & { z: Num[]; x: Label[]; y: Label[]; showValues?: boolean; valueFormat?: string; colorscale?: string; zmin?: number; zmax?: number }): Figure {
  const z = opts.z.map(arr);
  if (z.length !== opts.y.length) throw new Error(`heatmap: ${z.length} rows for ${opts.y.length} y labels`);
  z.forEach((row, i) => {
    if (row.length !== opts.x.length) throw new Error(`heatmap: row ${i} has ${row.length} values for ${opts.x.length} x labels`);
  });
  const show = opts.showValues ?? (z.length <= 20 && opts.x.length <= 20);
  const fmt = opts.valueFormat ? `:${d3Format(opts.valueFormat)}` : '';
  const trace: Record<string, unknown> = {
    type: 'heatmap', z, x: opts.x.map(String), y: opts.y.map(String), colorscale: opts.colorscale ?? 'Blues',
    reversescale: !opts.colorscale, // plotly's Blues runs dark to light: reversed, the largest values are the darkest
    ...(opts.zmin !== undefined ? { zmin: opts.zmin } : {}), ...(opts.zmax !== undefined ? { zmax: opts.zmax } : {}),
    hovertemplate: `%{y} → %{x}: %{z${fmt}}<extra></extra>`,
    ...(show ? { texttemplate: `%{z${fmt}}` } : {}),
    ...(fmt ? { colorbar: { tickformat: fmt.slice(1) } } : {}),
  };
  const l = layout({ height: 560, ...opts });
  (l.yaxis as Record<string, unknown>).autorange = 'reversed'; // first row on top, as matrices are read
  return { data: [trace], layout: l };
}

/** Confusion matrix: rows = true class, columns = predicted; `normalize` shows each row as fractions. */
export function confusionHeatmap(matrix: Num[], classNames: string[], opts: Common & { normalize?: boolean } = {}): Figure {
  if (matrix.length !== classNames.length) throw new Error(`confusionHeatmap: ${matrix.length} rows for ${classNames.length} classes`);
  const z = matrix.map((row) => {
    const r = arr(row);
    const sum = r.reduce((a, b) => a + b, 0);
    return opts.normalize ? r.map((v) => (sum ? v / sum : 0)) : r;
  });
  return heatmap({
    title: opts.normalize ? 'Confusion matrix (row-normalised)' : 'Confusion matrix', xTitle: 'predicted', yTitle: 'true', ...opts,
    z, x: classNames, y: classNames, valueFormat: opts.normalize ? '.2f' : undefined,
  });
}

/** A table as a figure (renders the same in the notebook and the report). */
export function table(opts: { header: string[]; rows: Label[][]; title?: string; height?: number }): Figure {
  opts.rows.forEach((r, i) => {
    if (r.length !== opts.header.length) throw new Error(`table: row ${i} has ${r.length} cells for ${opts.header.length} columns`);
  });
  const columns = opts.header.map((_, c) => opts.rows.map((r) => (typeof r[c] === 'number' && !Number.isInteger(r[c]) ? (r[c] as number).toFixed(4) : r[c])));
  return {
    data: [{ type: 'table', header: { values: opts.header, align: 'left', font: { size: 13 } }, cells: { values: columns, align: 'left', height: 24 } }],
    layout: { ...(opts.title ? { title: { text: opts.title } } : {}), height: opts.height ?? Math.min(900, 90 + 26 * (opts.rows.length + 1)), margin: { l: 10, r: 10, t: opts.title ? 50 : 10, b: 10 } },
  };
}

// ---- display adapter ----
//
// A figure goes out as ONE display_data with three alternatives: the figure JSON under plotly's MIME type (drawn by
// JupyterLab's plotly renderer, `pip install plotly`, which needs no Trust and keeps a saved notebook small), an
// HTML fallback that draws it with plotly.js fetched from the Jupyter server (trusted notebooks, no renderer), and
// a one-line text. plotly.js itself is never stored in the notebook.

function bundleOf(fig: Figure): Record<string, unknown> {
  return { [PLOTLY_MIME]: fig, 'text/html': figureHtml(fig), 'text/plain': `<plotly figure: ${figureTitle(fig)}>` };
}

let fileCounter = 0;

/**
 * Show `fig`: inline in a notebook. Elsewhere, if PLOT_DIR is set, write `<PLOT_DIR>/<name>.json` and return its
 * path; otherwise do nothing (tests and CLIs stay quiet).
 */
export function show(fig: Figure, opts: { name?: string } = {}): string | undefined {
  if (inNotebook()) {
    displayBundle(bundleOf(fig));
    return undefined;
  }
  const dir = runtimeContext().plotDir;
  if (!dir) return undefined;
  const name = opts.name ?? (figureTitle(fig).toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || `figure-${++fileCounter}`);
  const file = path.resolve(dir, `${name}.json`);
  writeFileAtomic(file, JSON.stringify(fig) + '\n');
  return file;
}

export interface LiveFigure {
  /** Redraw with `fig` (skipped if less than minIntervalMs since the last draw, unless `force`). */
  update(fig: Figure, force?: boolean): void;
  /** Draw the last skipped update, if any (call when the loop ends). */
  done(): void;
  /** The latest figure given. */
  readonly figure: Figure | undefined;
}

/** One output that is redrawn in place (tslab update_display_data), e.g. learning curves during training. */
export function liveFigure(opts: { minIntervalMs?: number } = {}): LiveFigure {
  const displayId = `live-${process.pid}-${Date.now()}-${++fileCounter}`;
  let shown = false;
  let last = 0;
  let latest: Figure | undefined;
  let pending = false;
  const draw = () => {
    if (!latest || !inNotebook()) return;
    if (shown) {
      // JupyterLab's plotly renderer draws an output once and ignores later updates of it; swapping in a placeholder
      // of the same height first makes JupyterLab build a fresh renderer for the new figure (and the page keeps its
      // layout). Every update therefore ends as the full bundle, whatever update turns out to be the last.
      const h = typeof latest.layout.height === 'number' ? latest.layout.height : 420;
      displayBundle({ 'text/html': `<div style="height:${h}px"></div>`, 'text/plain': `<plotly figure: ${figureTitle(latest)}>` }, { displayId, update: true });
    }
    displayBundle(bundleOf(latest), { displayId, update: shown });
    shown = true;
    last = Date.now();
    pending = false;
  };
  return {
    update(fig, force = false) {
      latest = fig;
      pending = true;
      if (force || !shown || Date.now() - last >= (opts.minIntervalMs ?? 0)) draw();
    },
    done() {
      if (pending) draw();
    },
    get figure() {
      return latest;
    },
  };
}
