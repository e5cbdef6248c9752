// Figure builders produce plain, JSON-safe plotly structures; bad input fails with a message naming the problem.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PNG } from 'pngjs';
import { bar, classCountsChart, confusionHeatmap, d3Format, heatmap, histogram, imageGrid, lineChart, liveFigure, scatter, show, table } from '../lib/evaluate/plot';
import { captionScale, wrapCaption } from '../lib/evaluate/image-grid';
import { figureHtml, scriptJson } from '../lib/evaluate/plotly-html';
import { displayBundle } from '../lib/jupyter/notebook';
import { withRuntimeContext } from '../lib/settings/context';

const roundTrip = <T>(v: T): T => JSON.parse(JSON.stringify(v));

test('bar / classCountsChart: one trace per series, typed arrays become plain arrays', () => {
  const f = classCountsChart(new Int32Array([3, 4]), ['cat', 'dog']);
  assert.deepEqual(roundTrip(f), f, 'figure survives JSON unchanged');
  assert.equal(f.data.length, 1);
  assert.deepEqual(f.data[0].x, ['cat', 'dog']);
  assert.deepEqual(f.data[0].y, [3, 4]);
  assert.deepEqual(f.data[0].text, ['3', '4']);
  const g = bar({ categories: ['a', 'b'], values: [{ name: 'val', y: [0.5, 0.6] }, { name: 'test', y: [0.4, 0.7] }], horizontal: true });
  assert.deepEqual(g.data.map((t) => [t.name, t.orientation, t.y]), [['val', 'h', ['a', 'b']], ['test', 'h', ['a', 'b']]]);
  assert.equal(g.layout.barmode, 'group');
  assert.throws(() => classCountsChart([1, 2, 3], ['a', 'b']), /classCountsChart: 3 counts for 2 class names/);
  assert.throws(() => bar({ categories: ['a'], values: [1, 2] }), /bar: series "value" has 2 values for 1 categories/);
});

test('lineChart: series from a record, x defaults to epochs 1..n, markers become shapes + labels', () => {
  const f = lineChart({ title: 'curves', series: { loss: new Float32Array([1, 0.5, 0.25]), valLoss: [1.1, 0.7, 0.6] }, markers: [{ x: 2, label: 'early stop' }] });
  assert.equal(f.data.length, 2);
  assert.deepEqual(f.data[0].x, [1, 2, 3]);
  assert.deepEqual(f.data[0].y, [1, 0.5, 0.25]);
  assert.equal((f.layout.shapes as Array<{ x0: number }>)[0].x0, 2);
  assert.equal((f.layout.annotations as Array<{ text: string }>)[0].text, 'early stop');
  assert.deepEqual(f.layout.title, { text: 'curves' }); // plotly.js 3 needs title objects
  assert.throws(() => lineChart({ series: [{ name: 's', x: [1, 2], y: [1] }] }), /series "s" has 2 x values but 1 y values/);
});

test('scatter with log x (lr finder) and histogram', () => {
  const f = scatter({ series: [{ name: 'loss', x: [1e-4, 1e-3], y: [2, 1] }], logX: true, markers: [{ x: 3e-4, label: 'steepest' }] });
  assert.equal(f.data[0].mode, 'markers');
  assert.equal((f.layout.xaxis as { type: string }).type, 'log');
  // plotly places shapes on a log axis by data value, annotations by log10 of it: label and line must meet
  assert.equal((f.layout.shapes as Array<{ x0: number }>)[0].x0, 3e-4);
  assert.ok(Math.abs((f.layout.annotations as Array<{ x: number }>)[0].x - Math.log10(3e-4)) < 1e-12, 'annotation x in log10 units');
  assert.equal((lineChart({ series: { a: [1, 2] }, markers: [{ x: 2, label: 'lin' }] }).layout.annotations as Array<{ x: number }>)[0].x, 2, 'linear axis: data value');
  assert.throws(() => scatter({ series: [{ name: 'l', x: [1], y: [1] }], logX: true, markers: [{ x: 0, label: 'zero' }] }), /marker "zero": x = 0 cannot be placed on a log axis/);
  const h = histogram({ values: [{ name: 'a', values: [1, 2] }, { name: 'b', values: new Float64Array([3]) }], bins: 5 });
  assert.deepEqual(h.data.map((t) => [t.type, t.x, t.nbinsx]), [['histogram', [1, 2], 5], ['histogram', [3], 5]]);
});

test('heatmap / confusionHeatmap: labels, reversed y, normalised rows', () => {
  const f = confusionHeatmap([[3, 1], [0, 4]], ['cat', 'dog'], { normalize: true });
  const t = f.data[0];
  assert.equal(t.type, 'heatmap');
  assert.deepEqual(t.z, [[0.75, 0.25], [0, 1]]);
  assert.deepEqual(t.x, ['cat', 'dog']);
  assert.equal((f.layout.yaxis as { autorange: string }).autorange, 'reversed');
  assert.equal(t.texttemplate, '%{z:.2f}');
  assert.throws(() => heatmap({ z: [[1, 2]], x: ['a'], y: ['r'] }), /heatmap: row 0 has 2 values for 1 x labels/);
  // the d3 format with or without plotly's colon: '.2%' once printed the literal "%{z.2%}" in every cell
  for (const valueFormat of ['.2%', ':.2%']) {
    const h = heatmap({ z: [[0.5]], x: ['a'], y: ['b'], showValues: true, valueFormat });
    assert.equal(h.data[0].texttemplate, '%{z:.2%}', valueFormat);
    assert.equal(h.data[0].hovertemplate, '%{y} → %{x}: %{z:.2%}<extra></extra>');
  }
  assert.equal(heatmap({ z: [[1]], x: ['a'], y: ['b'], showValues: true }).data[0].texttemplate, '%{z}');
  assert.equal(confusionHeatmap([[1]], ['a']).data[0].texttemplate, '%{z}', 'counts print as they are');
  assert.deepEqual(['.2%', ',d', '.3f', '+.1e', '~s', '$,.2f'].map(d3Format), ['.2%', ',d', '.3f', '+.1e', '~s', '$,.2f']);
  assert.throws(() => heatmap({ z: [[1]], x: ['a'], y: ['b'], valueFormat: '%{z}' }), /"%\{z\}" is not a d3-format spec/);
});

test('table: columns from rows; mismatched row is an error', () => {
  const f = table({ header: ['lr', 'acc'], rows: [[0.001, 0.812345], [0.01, 1]] });
  assert.deepEqual((f.data[0].cells as { values: unknown[][] }).values, [['0.0010', '0.0100'], ['0.8123', 1]]);
  assert.throws(() => table({ header: ['a', 'b'], rows: [[1]] }), /table: row 0 has 1 cells for 2 columns/);
});

test('outside a notebook: show() is silent without PLOT_DIR and writes the figure JSON with it', () => {
  const fig = bar({ title: 'Per class', categories: ['a'], values: [1] });
  assert.equal(withRuntimeContext({ plotDir: undefined }, () => show(fig)), undefined);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'plots-'));
  try {
    const file = withRuntimeContext({ plotDir: dir }, () => show(fig))!;
    assert.equal(path.basename(file), 'per-class.json');
    assert.deepEqual(JSON.parse(fs.readFileSync(file, 'utf8')), fig);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const live = liveFigure();
  live.update(fig);
  assert.equal(live.figure, fig);
  assert.equal(displayBundle({ 'image/png': 'AA==' }), false, 'outside a notebook nothing is displayed');
});

test('figureHtml embeds the figure safely inside a script', () => {
  const fig = bar({ title: '</script><b>x</b>', categories: ['a'], values: [1] });
  const html = figureHtml(fig);
  assert.equal(html.match(/<\/script>/g)?.length, 1, 'only the closing tag of our own script');
  assert.ok(html.includes(scriptJson(fig)));
  assert.deepEqual(JSON.parse(scriptJson(fig)), fig);
  assert.match(html, /&lt;\/script&gt;&lt;b&gt;x/, 'fallback text is escaped');
  assert.match(html, /plotly renderer \(pip install plotly\) or trust the notebook/, 'an untrusted notebook without the renderer says how to see the plot');
  assert.doesNotMatch(html, /window\.Plotly = Plotly/, 'plotly.js itself is never part of a figure');
});

test('imageGrid: nearest upscaling, grid layout, captions', () => {
  // two 2x2 images: all red and all blue
  const imgs = new Uint8Array([...Array(4).fill([255, 0, 0]).flat(), ...Array(4).fill([0, 0, 255]).flat()]);
  const png = PNG.sync.read(imageGrid(imgs, 2, { h: 2, w: 2, cols: 2, scale: 3, gap: 1 }));
  assert.equal(png.width, 2 * 6 + 3);
  assert.equal(png.height, 6 + 2);
  const px = (x: number, y: number) => Array.from(png.data.subarray((y * png.width + x) * 4, (y * png.width + x) * 4 + 4));
  assert.deepEqual(px(1, 1), [255, 0, 0, 255]);
  assert.deepEqual(px(6, 6), [255, 0, 0, 255]);
  assert.deepEqual(px(8, 1), [0, 0, 255, 255]);
  assert.deepEqual(px(0, 0), [40, 40, 40, 255], 'gap is background');
  const captioned = PNG.sync.read(imageGrid(imgs, 2, { h: 2, w: 2, cols: 1, scale: 8, labels: ['cat', 'dog'] }));
  assert.ok(captioned.height > 2 * 16 + 3, 'caption strips add height');
  const inkRows = (p: PNG, y0: number, y1: number) => {
    const rows = new Set<number>();
    for (let y = y0; y < y1; y++) for (let x = 0; x < p.width; x++) if (p.data[(y * p.width + x) * 4] === 235) rows.add(y);
    return rows.size;
  };
  assert.ok(inkRows(captioned, 2 + 16, 2 + 16 + 20) >= 6, 'caption pixels drawn');
  // on tiles of 96 px (CIFAR at 3x) captions are drawn at 2x: 14-pixel capitals
  const big = PNG.sync.read(imageGrid(new Uint8Array(32 * 32 * 3), 1, { h: 32, w: 32, scale: 3, labels: ['HIT'] }));
  assert.equal(inkRows(big, 2 + 96, big.height), 14, 'H, I and T are 7 rows tall at 2x');
  assert.equal(captionScale(96), 2);
  assert.equal(captionScale(48), 1);
  assert.throws(() => imageGrid(new Uint8Array(10), 2, { h: 2, w: 2 }), /imageGrid: 2 images of 2x2x3 need 24 bytes, got 10/);
});

test('captions wrap at spaces, run on under empty neighbours, and are cut with an ellipsis last', () => {
  assert.deepEqual(wrapCaption('true: automobile', 10, 2), ['true:', 'automobile']);
  assert.deepEqual(wrapCaption('airplane', 10, 2), ['airplane']);
  assert.deepEqual(wrapCaption('a b c d e f', 3, 2), ['a b', 'c …']);
  assert.deepEqual(wrapCaption('automobile', 4, 1), ['aut…']);
  assert.deepEqual(wrapCaption('', 5, 2), []);
  // a row label over ten 96-px tiles is one line; the same label under a lone 32-px tile wraps onto two
  const ten = PNG.sync.read(imageGrid(new Uint8Array(10 * 32 * 32 * 3), 10, { h: 32, w: 32, scale: 3, labels: ['automobile parts', ...new Array(9).fill('')] }));
  const lone = PNG.sync.read(imageGrid(new Uint8Array(32 * 32 * 3), 1, { h: 32, w: 32, scale: 1, labels: ['automobile parts'] }));
  assert.equal(ten.height, 2 + 96 + 9 * 2 + 4 + 2, 'one caption line at 2x');
  assert.equal(lone.height, 2 + 32 + 2 * 9 + 4 + 2, 'two caption lines at 1x');
  assert.throws(() => imageGrid(new Uint8Array(10), 2, { h: 2, w: 2 }), /imageGrid: 2 images of 2x2x3 need 24 bytes, got 10/);
});
