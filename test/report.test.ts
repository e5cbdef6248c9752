// The report from executed notebooks: markdown rendered, figures drawn from their JSON with plotly.js inlined once
// per page, images as data URIs, the kernel's plotly loader output dropped, an index linking every page.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { bar, lineChart, imageGrid } from '../lib/evaluate/plot';
import { PLOTLY_LOADER_META, PLOTLY_MIME, figureHtml } from '../lib/evaluate/plotly-html';
import { buildReport, printedHeadline, printedParams, runScale, terminalText } from '../lib/jupyter/report';

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
    assert.match(index, /<a href="01-load.html">Loading the data<\/a><\/td><td>01-load<\/td><td>ok<\/td><td class="num">3.5<\/td><td class="num">2<\/td><td class="num">1<\/td>/);
    assert.match(index, /<a href="02-plain.html">/);
    assert.match(index, /<div class="banner smoke">SMOKE RUN: 2,000 training images/, 'a smoke run says so loudly');
    assert.match(html, /<div class="banner smoke">SMOKE RUN/, 'on every page too');
    assert.match(html, /<span class="secs">1.2 s<\/span>/, 'each cell keeps its time');
    assert.deepEqual(r.pages.map((p) => p.stats), [{ figures: 2, images: 1 }, { figures: 0, images: 0 }]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('front page: headline from metadata.json (cross-checked with the printed table), backend, commit, key plots', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'report-front-'));
  try {
    const model = path.join(dir, 'model');
    fs.mkdirSync(model);
    fs.writeFileSync(path.join(model, 'metadata.json'), JSON.stringify({
      backbones: ['mobilenet_v2'], resolution: 160, runId: 'RUN-42', date: '2024-01-02T00:00:00.000Z', gitCommit: 'abc123',
      metrics: { validation: 0.828, 'validation + TTA': 0.826, 'test 0-999 (exact)': 0.821, 'test 0-999 (exact) + TTA': 0.831 },
      training: { lr: 0.0015, dropout: 0.25, epochs: 5, bestEpoch: 2 },
    }));
    const stream = (text: string) => ({ output_type: 'stream', name: 'stdout', text });
    const fig = (title: string) => ({ output_type: 'display_data', metadata: {}, data: { [PLOTLY_MIME]: lineChart({ title, series: { a: [1, 2] }, yTitle: 'y' }), 'text/plain': 'fig' } });
    const nb = (cells: object[]) => ({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells: [{ cell_type: 'markdown', id: 'h', metadata: {}, source: '# T' }, ...cells] });
    const code = (id: string, outputs: object[]) => ({ cell_type: 'code', id, metadata: {}, execution_count: 1, source: 'x', outputs });
    // saved from JupyterLab: no runner metadata, the parameters come from what the parameters cell printed
    fs.writeFileSync(path.join(dir, '05-train.ipynb'), JSON.stringify(nb([
      code('p', [stream(`parameters: trainLimit=2000 (TRAIN_LIMIT), valLimit=0, epochs=5 (EPOCHS), models="${dir}" (MODELS_DIR)\n`), stream('tfjs backend: tensorflow (libtensorflow 2.21.0, CPU)\n')]),
      code('f', [fig('Final training: best epoch 2 of 5'), fig('Best validation accuracy')]),
      code('r', [stream('best epoch 2: validation 82.80% · run RUN-42\n')]),
    ])));
    fs.writeFileSync(path.join(dir, '06-evaluate.ipynb'), JSON.stringify(nb([
      code('l', [stream(`loaded model m1 (the current model) from ${model}: frozen, mobilenet_v2 @ 160px, 10 classes; trained 2026-12-01\n`)]),
      code('t', [stream('split               images  accuracy  with TTA\n------------------  ------  --------  --------\nvalidation          500     82.80%    82.60%\ntest 0-999 (exact)  1000    82.10%    83.10%\n'), fig('Confusion matrix — test 0-999 (exact) + TTA')]),
    ])));
    const r = buildReport([path.join(dir, '05-train.ipynb'), path.join(dir, '06-evaluate.ipynb')], path.join(dir, 'out'));
    const s = r.summary;
    assert.equal(s.scale.kind, 'smoke');
    assert.equal(s.scale.banner, 'SMOKE RUN: 2,000 training images, 5 final epochs');
    assert.deepEqual(s.headline.rows.map((x) => [x.split, x.images, x.accuracy, x.tta]), [
      ['validation', 500, 0.828, 0.826], ['test 0-999 (exact)', 1000, 0.821, 0.831], ['full test (1000-9999 JPEG-rebuilt)', undefined, undefined, undefined],
    ]);
    assert.match(s.headline.source, /model\/metadata\.json \(the saved model, run RUN-42\); image counts from 06-evaluate's output, whose accuracies agree/);
    assert.deepEqual(s.headline.warnings, []);
    assert.equal(s.backend, 'tensorflow (libtensorflow 2.21.0, CPU)');
    assert.equal(s.commit, 'abc123');
    assert.deepEqual(s.keyFigures.map((k) => [k.notebook, k.cell]), [['05-train', 3], ['05-train', 3], ['06-evaluate', 3]]);
    const index = fs.readFileSync(r.index, 'utf8');
    assert.match(index, /<h1>CIFAR-10 transfer learning in TypeScript notebooks<\/h1>/, "the project's name");
    assert.match(index, /<td>test 0-999 \(exact\)<\/td><td class="num">1,000<\/td><td class="num">82.10%<\/td><td class="num"><strong>83.10%<\/strong><\/td>/);
    assert.equal(count(index, 'window.Plotly = Plotly'), 1, 'plotly.js inlined once for the key plots');
    assert.equal(count(index, 'class="plotly-figure"'), 3);
    // a model from another run, and a printed table that disagrees: said, not hidden
    const meta = JSON.parse(fs.readFileSync(path.join(model, 'metadata.json'), 'utf8'));
    fs.writeFileSync(path.join(model, 'metadata.json'), JSON.stringify({ ...meta, runId: 'OTHER', metrics: { ...meta.metrics, validation: 0.9 } }));
    const w = buildReport([path.join(dir, '05-train.ipynb'), path.join(dir, '06-evaluate.ipynb')], path.join(dir, 'out')).summary.headline.warnings;
    assert.equal(w.length, 2);
    assert.match(w[0], /comes from run OTHER, which 05-train did not train/);
    assert.match(w[1], /06-evaluate printed validation 82.80% \/ 82.60% with TTA, but metadata.json says 90.00% \/ 82.60%/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('run scale, printed parameters and printed headline tables', () => {
  assert.equal(runScale({}).kind, 'full');
  assert.equal(runScale({ MODEL_DIR: '/x' }).kind, 'full', 'where the model goes is not a parameter of the experiment');
  assert.deepEqual(runScale({ SEED: '3' }), { kind: 'custom', banner: 'CUSTOM PARAMETERS: SEED=3', params: ['SEED=3'] });
  assert.equal(runScale({ TEST_LIMIT: '1000', EPOCHS: '15' }).banner, 'SMOKE RUN: test images 0-999 only', 'a default epoch count is no cut');
  assert.deepEqual(printedParams('parameters: backbones=mobilenet_v1_0.75,mobilenet_v2, epochs=5 (EPOCHS), out="/tmp/m" (MODEL_DIR), seed=1\n'), { EPOCHS: '5', MODEL_DIR: '/tmp/m' });
  // Today's marks: from the environment, or set in the notebook (which counts under the setting's env var name).
  assert.deepEqual(
    printedParams('parameters: trainLimit=0 (set in notebook; TRAIN_LIMIT=2000 ignored), epochs=5 (env EPOCHS), lrFindSteps=50 (set in notebook), models="/tmp/m" (env MODELS_DIR), seed=1\n  from the environment: EPOCHS=5; ...\n'),
    { TRAIN_LIMIT: '0', EPOCHS: '5', LR_FIND_STEPS: '50', MODELS_DIR: '/tmp/m' },
  );
  const t = printedHeadline('split  images  accuracy  with TTA\n-----  ------  --------  --------\nvalidation  500  82.80%  -\ntest 0-9999 (1000-9999 JPEG-rebuilt)  10000  70.00%  71.00%\n\nnext');
  assert.deepEqual([...t], [['validation', { images: 500, accuracy: 0.828 }], ['test 0-9999 (1000-9999 JPEG-rebuilt)', { images: 10000, accuracy: 0.7, tta: 0.71 }]]);
});

test('no inputs is a clear error', () => {
  assert.throws(() => buildReport([], os.tmpdir()), /no executed notebooks given \(run `npm run notebooks` first\)/);
});

test('terminalText strips ANSI and keeps the last carriage-return redraw', () => {
  assert.equal(terminalText('\x1b[1mA\x1b[0m\n1/3\r2/3\r3/3\nend\r\n'), 'A\n3/3\nend\n');
});
