// The report from executed notebooks: markdown rendered, figures drawn from their JSON with plotly.js inlined once
// per page, images as data URIs, the kernel's plotly loader output dropped, an index linking every page.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { bar, lineChart, imageGrid } from '../lib/plot';
import { PLOTLY_LOADER_META, PLOTLY_MIME, figureHtml } from '../lib/plotly-html';
import { buildReport, terminalText } from '../lib/jupyter/report';

const count = (s: string, needle: string) => s.split(needle).length - 1;

function executed(dir: string): { withPlots: string; plain: string } {
  const png = imageGrid(new Uint8Array(2 * 4 * 4 * 3).fill(128), 2, { h: 4, w: 4 }).toString('base64');
  const figs = [bar({ title: 'Per class', categories: ['a', 'b'], values: [1, 2] }), lineChart({ title: 'Curves', series: { loss: [1, 0.5] } })];
  const display = (fig: object) => ({ output_type: 'display_data', data: { [PLOTLY_MIME]: fig, 'text/html': [figureHtml(fig as never)], 'text/plain': ['<fig>'] }, metadata: {} });
  const nb = {
    nbformat: 4, nbformat_minor: 5,
    metadata: { runner: { executed_at: '2024-01-01T00:00:00.000Z', seconds: 3.5, status: 'ok', params: { TRAIN_LIMIT: '2000' } } },
    cells: [
      { cell_type: 'markdown', id: 'm1', metadata: {}, source: ['# Loading the data\n', 'Some **bold** text.'] },
      { cell_type: 'code', id: 'c1', metadata: { runner: { seconds: 1.2 } }, execution_count: 1, source: 'show(fig)', outputs: [
        { output_type: 'display_data', data: { 'text/html': '<script>FAKE_PLOTLY_BUNDLE</script>', 'text/plain': 'loader' }, metadata: { [PLOTLY_LOADER_META]: true } },
        display(figs[0]), display(figs[1]),
      ] },
      { cell_type: 'code', id: 'c2', metadata: {}, execution_count: 2, source: 'progress <b>', outputs: [
        { output_type: 'stream', name: 'stdout', text: ['\x1b[32m10%\r50%\r100%\x1b[0m done\n'] },
        { output_type: 'display_data', data: { 'image/png': png, 'text/plain': 'png' }, metadata: {} },
      ] },
    ],
  };
  const plain = { ...nb, cells: [nb.cells[0]], metadata: {} };
  const withPlots = path.join(dir, '01-load.ipynb');
  fs.writeFileSync(withPlots, JSON.stringify(nb));
  fs.writeFileSync(path.join(dir, '02-plain.ipynb'), JSON.stringify(plain));
  return { withPlots, plain: path.join(dir, '02-plain.ipynb') };
}

test('one self-contained page per notebook plus an index', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'report-'));
  try {
    const { withPlots, plain } = executed(dir);
    const out = path.join(dir, 'report');
    const r = buildReport([withPlots, plain], out);
    const html = fs.readFileSync(path.join(out, '01-load.html'), 'utf8');
    assert.equal(count(html, 'window.Plotly = Plotly'), 1, 'plotly.js inlined exactly once');
    assert.equal(count(html, 'FAKE_PLOTLY_BUNDLE'), 0, "the kernel's loader output is dropped");
    assert.equal(count(html, 'class="plotly-figure"'), 2);
    assert.equal(count(html, 'window.Plotly.newPlot(el'), 2);
    assert.ok(html.includes('"text":"Per class"') && html.includes('"text":"Curves"'), 'figure JSON embedded');
    assert.match(html, /<img src="data:image\/png;base64,iVBOR/);
    assert.match(html, /<h1>Loading the data<\/h1>/);
    assert.match(html, /<strong>bold<\/strong>/);
    assert.match(html, /<pre class="out stdout">100% done\n<\/pre>/, 'ANSI stripped, progress redraws collapsed');
    assert.match(html, /progress &lt;b&gt;/, 'code is escaped');
    assert.match(html, /TRAIN_LIMIT=2000/);
    assert.ok(!/<script[^>]+src=|<link[^>]+href="http/.test(html), 'no external resources');
    const plainHtml = fs.readFileSync(path.join(out, '02-plain.html'), 'utf8');
    assert.equal(count(plainHtml, 'window.Plotly = Plotly'), 0, 'no bundle on pages without plots');
    const index = fs.readFileSync(r.index, 'utf8');
    assert.match(index, /<a href="01-load.html">Loading the data<\/a>.*2 plots, 1 images/);
    assert.match(index, /<a href="02-plain.html">/);
    assert.deepEqual(r.pages.map((p) => p.stats), [{ figures: 2, images: 1 }, { figures: 0, images: 0 }]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('no inputs is a clear error', () => {
  assert.throws(() => buildReport([], os.tmpdir()), /no executed notebooks given \(run `npm run notebooks` first\)/);
});

test('terminalText strips ANSI and keeps the last carriage-return redraw', () => {
  assert.equal(terminalText('\x1b[1mA\x1b[0m\n1/3\r2/3\r3/3\nend\r\n'), 'A\n3/3\nend\n');
});
