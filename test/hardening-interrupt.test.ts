// Issue 24, item 5: an interrupt at notebook scale keeps what was computed. Before, features were cached only in
// whole 2,048-image chunks, so interrupting notebook 02's extraction of 2,000 images at 67% said "0 cached" and the
// re-run computed all 2,000 again; and the progress bar was drawn 100% full beside "67% — interrupted". Now the
// finished rows of an unfinished chunk are written as a partial chunk file (same format, own content hash, atomic)
// and the bar shows the real fraction. Checked through the project kernel, as JupyterLab runs a cell.
import { test, before, after, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { JupyterMessage, Kernel, loadKernelSpec } from '../lib/jupyter/kernel';
import { PROJECT_ROOT } from '../lib/settings/paths';
import * as crypto from 'crypto';
import { initBackend } from '../lib/engine/backend';
import { BACKBONES, backboneFingerprint } from '../lib/features/backbones';
import { cacheFolder, extractFeatures, ExtractOptions, imageKeys } from '../lib/features/features';
import { InterruptedError } from '../lib/util/cancel';
import { progress } from '../lib/util/progress';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const N = 2000;
let kernel: Kernel;
let cache: string;

interface CellRun { status: string; text: string; html: string[] }

/** Run a cell, collecting its text and every progress HTML it drew; interrupt once `when(html)` says so. */
async function run(code: string, when?: (lastHtml: string) => boolean): Promise<CellRun> {
  let text = '';
  const html: string[] = [];
  let interrupted = false;
  const onIopub = (m: JupyterMessage) => {
    const c = m.content as { text?: string; ename?: string; evalue?: string; traceback?: string[]; data?: Record<string, string> };
    if (m.header.msg_type === 'stream') text += c.text;
    if (m.header.msg_type === 'error') text += (c.traceback ?? [`${c.ename}: ${c.evalue}`]).join('\n');
    if ((m.header.msg_type === 'display_data' || m.header.msg_type === 'update_display_data') && c.data?.['text/html']) {
      html.push(c.data['text/html']);
      if (when && !interrupted && when(c.data['text/html'])) {
        interrupted = true;
        kernel.interrupt();
      }
    }
  };
  const reply = (await kernel.execute(code, { timeoutMs: 300_000, onIopub })) as { status: string };
  // tslab aborts requests that arrive within 200 ms of a failed cell (its stop-on-error window).
  if (reply.status !== 'ok') await new Promise((res) => setTimeout(res, 300));
  return { status: reply.status, text, html };
}

/** The percentage a progress display's bar is drawn at, and the percentage its text says. */
const barValue = (html: string) => Number(/<progress value="([\d.]+)"/.exec(html)?.[1]);
const textPct = (html: string) => Number(/\((\d+)%\)/.exec(html)?.[1]);

after(() => kernel?.shutdown());

test('an interrupted 2,000-image extraction keeps every finished image; the re-run computes only the rest, bit-identical', async (t) => {
  const backbones = await writeFakeBackbone();
  cache = fs.mkdtempSync(path.join(os.tmpdir(), 'interrupt-partial-'));
  kernel = await Kernel.start({ spec: loadKernelSpec(), cwd: PROJECT_ROOT, env: { ...process.env, BACKBONES_DIR: backbones } });
  const setup = await run(`
import { extractFeatures } from './lib/features/features';
import { fakeImages } from './test/fake-backbone';
import * as crypto from 'crypto';
const images = fakeImages(${N}, 9);
const md5 = (f: Float32Array) => crypto.createHash('md5').update(Buffer.from(f.buffer, f.byteOffset, f.byteLength)).digest('hex');
const opts = { backbone: 'mobilenet_v1_0.75' as const, resolution: 160, cacheDir: ${JSON.stringify(cache)} };`);
  assert.equal(setup.status, 'ok', setup.text);

  // Interrupt once the bar has drawn a third: well inside the one 2,048-image chunk.
  const r = await run(`const f = await extractFeatures({ images: images, n: ${N} }, opts);`, (h) => textPct(h) >= 33 && textPct(h) < 90);
  assert.equal(r.status, 'error', `the cell was not interrupted (it ran to the end?):\n${r.text}`);
  const m = /InterruptedError: features mobilenet_v1_0\.75 160px plain interrupted after ([\d,]+) \/ 2,000 images; ([\d,]+) cached/.exec(r.text);
  assert.ok(m, r.text);
  t.diagnostic(`interrupted: ${m![0]}`);
  const done = Number(m![1].replace(/,/g, ''));
  const cached = Number(m![2].replace(/,/g, ''));
  assert.ok(done > 0 && done < N, `interrupted part-way: ${done}`);
  assert.equal(cached, done, 'every finished image is cached (before: "0 cached")');

  // The bar's final state: the real fraction next to "— interrupted", not a full bar.
  const last = r.html[r.html.length - 1];
  assert.match(last, /— interrupted/);
  assert.equal(textPct(last), Math.floor((100 * done) / N));
  assert.ok(Math.abs(barValue(last) - (100 * done) / N) < 0.01, `bar drawn at ${barValue(last)}%, ${done} / ${N} done`);

  // The partial chunk is a valid cache file of its own beside (not instead of) nothing else.
  const files = (fs.readdirSync(cache, { recursive: true }) as string[]).filter((f) => f.endsWith('.feat'));
  assert.equal(files.length, 1, files.join(', '));
  assert.deepEqual((fs.readdirSync(cache, { recursive: true }) as string[]).filter((f) => /\.tmp|\.claim$/.test(f)), [], 'no temp or claim files left');

  // The re-run: its progress line says it computed only the remainder.
  const again = await run(`const g = await extractFeatures({ images: images, n: ${N} }, opts); console.log(JSON.stringify(g.stats));`);
  assert.equal(again.status, 'ok', again.text);
  const stats = JSON.parse(again.text.trim().split('\n').pop()!);
  assert.deepEqual([stats.computed, stats.cached], [N - done, done]);
  const rerun = again.html[again.html.length - 1];
  t.diagnostic(`re-run: ${rerun.replace(/<[^>]+>/g, '').trim()}; interrupted bar: ${/<progress[^>]*>/.exec(last)![0]} ${last.replace(/<[^>]+>/g, '').trim()}`);
  assert.match(rerun, new RegExp(`— ${N - done} computed, ${done} from cache`));

  // The same features an uninterrupted extraction gives, to the bit.
  const fresh = fs.mkdtempSync(path.join(os.tmpdir(), 'interrupt-fresh-'));
  const cmp = await run(`const h = await extractFeatures({ images: images, n: ${N} }, { ...opts, cacheDir: ${JSON.stringify(fresh)}, progress: false }); console.log(md5(g.data) === md5(h.data), h.stats!.computed);`);
  assert.equal(cmp.status, 'ok', cmp.text);
  assert.equal(cmp.text.trim().split('\n').pop(), `true ${N}`);
});

test('a notebook progress bar that stops part-way is drawn at the fraction done', () => {
  // tslab's display writer, captured: progress() draws into it as in a kernel.
  const jupyter = require('tslab/dist/jupyter') as { lastWriteDisplayData: unknown };
  const saved = jupyter.lastWriteDisplayData;
  const drawn: string[] = [];
  let stopped = '';
  jupyter.lastWriteDisplayData = (d: { data: Record<string, string> }) => drawn.push(d.data['text/html']);
  try {
    const p = progress('features', 3000);
    p.tick(2010);
    p.done('interrupted');
    stopped = drawn[drawn.length - 1];
    const p2 = progress('features', 10);
    p2.tick(10);
    p2.done('10 computed, 0 from cache');
  } finally {
    jupyter.lastWriteDisplayData = saved;
  }
  const finished = drawn[drawn.length - 1];
  assert.match(stopped, /<progress value="67" max="100"[^>]*><\/progress> features: 2010\/3000 img \(67%\) .* — interrupted/);
  assert.match(finished, /<progress value="100" max="100"/);
});

describe('in process: the partial chunk an interrupt leaves', () => {
  const n = 40;
  const images = fakeImages(n, 4);
  let fakeDir: string;
  let root: string;
  const opts = (): ExtractOptions => ({ backbone: 'mobilenet_v1_0.75', backbonesDir: fakeDir, resolution: 32, cacheDir: root, workers: 0, batchSize: 4, progress: false });
  before(async () => {
    await initBackend({ log: () => {} });
    fakeDir = await writeFakeBackbone();
  });

  /** Extract `n` images, aborting (as an interrupt does) once `stopAt` images are done. */
  async function interrupted(stopAt: number): Promise<string> {
    const controller = new AbortController();
    let count = 0;
    const sink = { tick: (k: number) => ((count += k) >= stopAt ? controller.abort() : undefined), done: () => {} };
    const err = await extractFeatures({ images, n }, { ...opts(), progress: sink, signal: controller.signal }).then(() => undefined, (e: Error) => e);
    assert.ok(err instanceof InterruptedError, `interrupted: ${err}`);
    return err!.message;
  }
  const featFiles = () => (fs.readdirSync(root, { recursive: true }) as string[]).filter((f) => f.endsWith('.feat'));

  test('keeps the finished rows, resumes from them, and gives the features an uninterrupted run gives', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'partial-'));
    assert.equal(await interrupted(12), 'features mobilenet_v1_0.75 32px plain interrupted after 12 / 40 images; 12 cached');
    assert.equal(featFiles().length, 1, 'one partial chunk file');
    const resumed = await extractFeatures({ images, n }, opts());
    assert.deepEqual([resumed.stats!.computed, resumed.stats!.cached], [28, 12]);
    const fresh = await extractFeatures({ images, n }, { ...opts(), cacheDir: fs.mkdtempSync(path.join(os.tmpdir(), 'fresh-')) });
    assert.equal(fresh.stats!.computed, n);
    assert.ok(Buffer.from(resumed.data.buffer).equals(Buffer.from(fresh.data.buffer)), 'bit-identical');
    // Both files are whole, valid cache files: a third run reads everything.
    assert.deepEqual([(await extractFeatures({ images, n }, opts())).stats!.computed, featFiles().length], [0, 2]);
  });

  test('a run that waited on an interrupted run\'s chunk computes only what that run did not finish', async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'partial-shared-'));
    await interrupted(12); // images 0-11 cached
    // Another live run holds the chunk of the 28 images left (this process's pid: alive, so the claim is respected)...
    const folder = cacheFolder(root, { backbone: 'mobilenet_v1_0.75', weights: backboneFingerprint(path.join(fakeDir, BACKBONES['mobilenet_v1_0.75'].folder)), resolution: 32, view: 'plain' });
    const rest = imageKeys(images.subarray(12 * 3072), n - 12);
    const claim = path.join(folder, `${crypto.createHash('md5').update(rest).digest('hex')}.feat.claim`);
    fs.writeFileSync(claim, JSON.stringify({ pid: process.pid, host: os.hostname(), at: Date.now() }));
    let summary = '';
    const waiting = extractFeatures({ images, n }, { ...opts(), progress: { tick: () => {}, done: (s?: string) => void (summary = s ?? '') } });
    // ...is interrupted after 10 of them (its partial chunk: images 12-21), and lets the chunk go.
    await new Promise((r) => setTimeout(r, 300));
    const other = await extractFeatures({ images: images.subarray(12 * 3072, 22 * 3072), n: 10 }, opts());
    assert.equal(other.stats!.computed, 10);
    fs.rmSync(claim);
    const r = await waiting;
    assert.deepEqual([r.stats!.cached, r.stats!.computed], [22, 18], '12 from its first read, 10 left by the other run, 18 computed');
    assert.equal(summary, '18 computed, 22 from cache (10 computed meanwhile by another run)', 'it took the 10 while waiting, not in its first read');
  });
});
