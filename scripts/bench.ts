// `npm run bench`: the backends side by side, in one run. For each backend that starts here (tensorflow = the
// native addon `npm install` builds, wasm = the worker-pool fallback) a child process measures, with the feature
// cache off:
//   - feature extraction, images/s and GFLOP/s per backbone at each resolution (tensorflow: in-process frozen TF
//     graph; wasm: one worker thread per core);
//   - head training, seconds per epoch over 45,000 x 2,048 features (the project's trainer, and tfjs `fit` of the
//     same head extrapolated from a few batches);
//   - end-to-end inference of a saved classifier (pixels -> probabilities, the `npm run predict` code path).
// and once, in this process (sharp/libvips does not depend on the tfjs backend): decoding + resizing a folder of
// 640x480 JPEGs to the backbone input, the first step of a `--dataset <folder>` run, next to the backbones' rate.
// Prints one table, writes data/bench/bench-<time>.json. Ratios between backends come from this one run.
//
//   npm run bench                                  # both backends, 160 px, 1,024 images per cell
//   npm run bench -- --backends tensorflow --res 96,160,224 --n 2048
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { writeJsonAtomic } from '../lib/util/atomic';
import { parseCli, UsageError } from '../lib/util/cli';
import { BACKBONES, BackboneName, backboneSpec, findBackboneDir } from '../lib/features/backbones';
import { BackendName, initBackend } from '../lib/engine/backend';
import { loadCifar10, PIXELS_PER_IMAGE as PIXELS } from '../lib/data/cifar10';
import { extractFeatures, terminateFeaturePool } from '../lib/features/features';
import { assembleModel, buildHead, loadModel, predictPixels, saveModel } from '../lib/model/classifier';
import { dataDir } from '../lib/settings/paths';
import { rng } from '../lib/util/random';
import { benchFineTuneStep, benchHead, FineTuneStepBench, HeadBench } from './bench-train';
import { VENV as KERAS_VENV } from './export-keras';
import { exitOnInterrupt } from '../lib/util/cancel';
import { DecodeBench, generate as generateJpegs, measureDecode } from './bench-decode';

const OPTIONS = {
  backends: { type: 'string', default: 'tensorflow,wasm', help: 'comma list of backends to compare' },
  backbones: { type: 'string', default: Object.keys(BACKBONES).join(','), help: 'comma list of backbones' },
  res: { type: 'string', default: '160', help: 'comma list of input resolutions (px)' },
  n: { type: 'string', default: '1024', help: 'images per feature cell' },
  'predict-n': { type: 'string', default: '1000', help: 'images for end-to-end inference' },
  'head-n': { type: 'string', default: '45000', help: 'feature rows per head-training epoch' },
  workers: { type: 'string', default: String(os.cpus().length), help: 'wasm worker threads' },
  batch: { type: 'string', default: '', help: 'images per backbone call (default: each backend its best)' },
  'decode-n': { type: 'string', default: '300', help: 'generated 640x480 JPEGs for the decode + resize row (0 skips it)' },
  peer: { type: 'boolean', default: false, help: 'also measure Keras/TensorFlow in graph mode on the same cores (uses the export:keras venv)' },
  child: { type: 'string', default: '', help: '(internal) measure in this process and print JSON' },
} as const;

interface FeatureRow { backbone: BackboneName; resolution: number; imagesPerSec: number; gflops: number; workers: number; fullSet60kMinutes: number }
interface BackendResult {
  backend: BackendName;
  summary: string;
  features: FeatureRow[];
  head: HeadBench;
  predict: { images: number; imagesPerSec: number };
  /** tensorflow only (wasm has no convolution backprop kernels). */
  fineTuneStep?: FineTuneStepBench;
  load1: number;
}

type Args = { [K in keyof typeof OPTIONS]: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

async function images(n: number): Promise<{ images: Uint8Array; source: string }> {
  try {
    const c = await loadCifar10({ download: false });
    const out = new Uint8Array(n * PIXELS);
    for (let i = 0; i < n; i++) out.set(c.test.images.subarray((i % c.test.n) * PIXELS, ((i % c.test.n) + 1) * PIXELS), i * PIXELS);
    return { images: out, source: `CIFAR-10 test 0..${Math.min(n, c.test.n) - 1}` };
  } catch {
    // Speed does not depend on content; random pixels keep the bench runnable without the dataset.
    const r = rng(1);
    return { images: Uint8Array.from({ length: n * PIXELS }, () => Math.floor(r() * 256)), source: 'random pixels' };
  }
}

/** All measurements on the backend TFJS_BACKEND names (a child process: a process has one backend). */
async function measure(a: Args): Promise<BackendResult> {
  const backend = await initBackend({ log: () => {} });
  const n = Number(a.n);
  const backbones = a.backbones.split(',') as BackboneName[];
  backbones.forEach(backboneSpec);
  const resolutions = a.res.split(',').map(Number);
  const workers = backend.name === 'wasm' ? Number(a.workers) : 0;
  const batchSize = a.batch ? Number(a.batch) : undefined;
  const data = await images(Math.max(n, Number(a['predict-n'])));
  const features: FeatureRow[] = [];
  for (const backbone of backbones) {
    for (const resolution of resolutions) {
      const opts = { backbone, resolution, workers, cache: false, progress: false, batchSize } as const;
      // Warm-up: worker start, graph writing/loading and kernel setup for this shape are not throughput.
      const warm = Math.max(1, workers) * 64;
      await extractFeatures({ images: data.images.subarray(0, warm * PIXELS), n: warm }, opts);
      const f = await extractFeatures({ images: data.images.subarray(0, n * PIXELS), n }, opts);
      const ips = n / f.stats!.seconds;
      const macs = backboneSpec(backbone).macsAt224 * (resolution / 224) ** 2;
      features.push({
        backbone, resolution, workers: f.stats!.workers, imagesPerSec: +ips.toFixed(1), gflops: +((2 * macs * ips) / 1e9).toFixed(1),
        fullSet60kMinutes: +(60000 / ips / 60).toFixed(1),
      });
    }
  }
  await terminateFeaturePool();

  const head = await benchHead({ n: Number(a['head-n']) });

  // A saved classifier of the default shape (random head: speed does not depend on the weights), loaded back the
  // way `npm run predict` loads one.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-model-'));
  const resolution = resolutions.includes(160) ? 160 : resolutions[0];
  const dim = backbones.reduce((s, b) => s + BACKBONES[b].featureSize, 0);
  const h = buildHead({ inputDim: dim, units: 256, dropout: 0.3 });
  const assembled = await assembleModel({ backbones, resolution, head: h, backbonesDir: undefined });
  // Ten class names for its ten outputs: loadModel refuses a model whose metadata disagrees with it.
  await saveModel(assembled, { backbones, resolution, classNames: Array.from({ length: 10 }, (_, i) => `class ${i}`), head: { inputDim: dim, units: 256, dropout: 0.3 }, metrics: {}, date: '', gitCommit: null }, dir);
  assembled.dispose();
  h.dispose();
  const { model } = await loadModel(dir);
  const pn = Number(a['predict-n']);
  const warm = Math.min(64, data.images.length / PIXELS);
  await predictPixels(model, data.images.subarray(0, warm * PIXELS), warm); // warm-up
  const t0 = performance.now();
  await predictPixels(model, data.images.subarray(0, pn * PIXELS), pn);
  const predict = { images: pn, imagesPerSec: +(pn / ((performance.now() - t0) / 1000)).toFixed(1) };
  model.dispose();
  fs.rmSync(dir, { recursive: true, force: true });
  const fineTuneStep = backend.name === 'tensorflow' && findBackboneDir('mobilenet_v2') ? await benchFineTuneStep() : undefined;
  return { backend: backend.name, summary: backend.summary, features, head, predict, fineTuneStep, load1: +os.loadavg()[0].toFixed(2) };
}

interface PeerResult { tensorflow: string; keras: string; features: { backbone: string; resolution: number; imagesPerSec: number }[]; headEpochSeconds: number; fineTuneStepMs?: number }

/** Keras in graph mode on the same backbones (scripts/peer_keras_bench.py in the export:keras venv), or why not. */
function runPeer(a: Args): PeerResult | string {
  const python = path.join(KERAS_VENV, 'bin', 'python');
  if (!fs.existsSync(python)) return `no Keras venv at ${KERAS_VENV}: run \`npm run export:keras\` once to make it`;
  const dir = findBackboneDir('mobilenet_v2');
  if (!dir) return 'backbones not found (set BACKBONES_DIR)';
  try {
    const out = execFileSync(python, [path.join(__dirname, 'peer_keras_bench.py'), '--backbones-dir', path.dirname(dir), '--backbones', a.backbones,
      '--resolution', a.res.split(',')[0], '--n', a.n, '--head-n', a['head-n']], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 }).toString();
    const line = out.split('\n').find((l) => l.startsWith('PEER_JSON '));
    return line ? (JSON.parse(line.slice('PEER_JSON '.length)) as PeerResult) : 'no result printed';
  } catch (err) {
    return ((err as { stderr?: Buffer }).stderr?.toString().trim().split('\n').pop() ?? (err as Error).message).slice(0, 300);
  }
}

function runChild(backend: string, argv: string[]): BackendResult | string {
  try {
    const ts = __filename.endsWith('.ts') ? ['-r', require.resolve('ts-node/register/transpile-only')] : [];
    const out = execFileSync(process.execPath, [...process.execArgv, ...ts, __filename, ...argv, '--child', backend], {
      env: { ...process.env, TFJS_BACKEND: backend }, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20,
    }).toString();
    const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
    if (!line) return 'no result printed';
    return JSON.parse(line.slice('BENCH_JSON '.length));
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    const last = (e.stderr?.toString() ?? e.message).split('\n').filter((l) => /^(bench failed|error)/i.test(l.trim())).pop();
    return last?.trim() ?? e.message.split('\n')[0];
  }
}

async function main(): Promise<void> {
  const { values } = parseCli({ usage: 'npm run bench -- [options]', options: OPTIONS });
  const a = values as unknown as Args;
  if (a.child) {
    console.log(`BENCH_JSON ${JSON.stringify(await measure(a))}`);
    return;
  }
  const argv = process.argv.slice(2);
  const cores = os.cpus().length;
  console.log(`bench: ${a.n} images per feature cell, ${a['predict-n']} for inference, ${cores} cores (${os.cpus()[0]?.model}), load avg ${os.loadavg()[0].toFixed(2)}`);
  const results: BackendResult[] = [];
  const failed: Record<string, string> = {};
  for (const backend of a.backends.split(',')) {
    const t0 = Date.now();
    const r = runChild(backend, argv);
    if (typeof r === 'string') {
      failed[backend] = r;
      console.log(`  ${backend}: did not run (${r})`);
      continue;
    }
    results.push(r);
    console.log(`  ${r.summary.replace(/^tfjs backend: /, '')} — measured in ${((Date.now() - t0) / 1000).toFixed(0)} s, load ${r.load1}`);
  }
  if (!results.length) throw new Error(`no backend could be measured: ${Object.entries(failed).map(([k, v]) => `${k}: ${v}`).join('; ')}`);
  const peer = a.peer ? runPeer(a) : undefined;
  if (typeof peer === 'string') console.log(`  keras peer: did not run (${peer})`);
  let decode: DecodeBench | undefined;
  const decodeN = Number(a['decode-n']);
  if (decodeN > 0) {
    const root = await generateJpegs(decodeN, () => {});
    try {
      decode = await measureDecode(root, Number(a.res.split(',')[0]), os.availableParallelism());
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }

  const ref = results.find((r) => r.backend === 'wasm');
  // Two significant digits below 10 img/s (a software WebGPU adapter measures ~0.5 img/s): never a bare "0 img/s".
  const rate = (x: number) => (x >= 10 ? x.toFixed(0) : x.toPrecision(2));
  const ratio = (x: number, y: number | undefined) => (y ? ` (${(x / y).toFixed(1)}x wasm)` : '');
  const rows: string[][] = [];
  for (const f of results[0].features) {
    const cells = results.map((r) => {
      const mine = r.features.find((g) => g.backbone === f.backbone && g.resolution === f.resolution)!;
      const base = ref?.features.find((g) => g.backbone === f.backbone && g.resolution === f.resolution);
      return `${rate(mine.imagesPerSec)} img/s, ${mine.gflops} GFLOP/s${r === ref ? '' : ratio(mine.imagesPerSec, base?.imagesPerSec)}`;
    });
    rows.push([`features ${f.backbone} ${f.resolution}px`, ...cells]);
  }
  rows.push([`head epoch (trainer), ${Number(a['head-n']).toLocaleString()} x 2048`, ...results.map((r) => `${r.head.trainerSeconds.toFixed(2)} s${r === ref || !ref ? '' : ` (${(ref.head.trainerSeconds / r.head.trainerSeconds).toFixed(1)}x faster)`}`)]);
  rows.push(['head epoch (tfjs fit, extrapolated)', ...results.map((r) => `${r.head.fitSeconds.toFixed(1)} s`)]);
  rows.push([`end-to-end predict, ${a['predict-n']} images`, ...results.map((r) => `${rate(r.predict.imagesPerSec)} img/s${r === ref ? '' : ratio(r.predict.imagesPerSec, ref?.predict.imagesPerSec)}`)]);
  const ft = results.find((r) => r.fineTuneStep)?.fineTuneStep;
  if (ft) {
    rows.push([`fine-tune step, V2 from ${ft.cut}, batch ${ft.batchSize}`, ...results.map((r) => (r.fineTuneStep
      ? `${r.fineTuneStep.graphMs} ms graph, ${r.fineTuneStep.eagerMs} ms eager (${(r.fineTuneStep.eagerMs / r.fineTuneStep.graphMs).toFixed(1)}x)`
      : r.backend === 'wasm' ? 'no conv backprop kernels' : 'not measured (graph step: tensorflow only)'))]);
  }
  if (decode) {
    // A folder's images are decoded once, then every backbone runs on each: the rate to beat is the backbones' together.
    const together = (r: BackendResult) => 1 / r.features.filter((f) => f.resolution === decode!.size).reduce((s, f) => s + 1 / f.imagesPerSec, 0);
    rows.push([`decode + resize, ${decode.images} 640x480 JPEGs -> ${decode.size}px (sharp, ${decode.concurrency} in flight)`, ...results.map((r) =>
      `${decode!.imagesPerSec.toFixed(0)} img/s, ${decode!.cpuMsPerImage.toFixed(1)} ms CPU each (${(decode!.imagesPerSec / together(r)).toFixed(1)}x the backbones' ${together(r).toFixed(0)} img/s)`)]);
  }
  // A software adapter (SwiftShader) is labelled in its column: its figures are a CPU emulating a GPU, not a GPU.
  const heads = results.map((r) => (r.backend === 'webgpu' && /software/.test(r.summary) ? 'webgpu (SOFTWARE adapter)' : r.backend));
  const widths = [0, ...results.map(() => 0)].map((_, i) => Math.max(...[['', ...heads], ...rows].map((r) => r[i].length)));
  const fmt = (r: string[]) => r.map((c, i) => c.padEnd(widths[i])).join('  ');
  console.log(`\n${fmt(['', ...heads])}\n${fmt(widths.map((w) => '-'.repeat(w)))}\n${rows.map(fmt).join('\n')}`);

  const file = path.join(dataDir('bench'), `bench-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  if (peer && typeof peer !== 'string') {
    const tfr = results.find((r) => r.backend === 'tensorflow');
    const vs = (ours: number | undefined, theirs: number) => (ours ? ` (ours ${(ours / theirs).toFixed(2)}x)` : '');
    console.log(`\nthe peer, Keras ${peer.keras} / TensorFlow ${peer.tensorflow} in graph mode (tf.function, batch 100), same run:`);
    for (const f of peer.features) {
      const mine = tfr?.features.find((g) => g.backbone === f.backbone && g.resolution === f.resolution)?.imagesPerSec;
      console.log(`  features ${f.backbone} ${f.resolution}px: ${f.imagesPerSec.toFixed(0)} img/s${vs(mine, f.imagesPerSec)}`);
    }
    console.log(`  head epoch (Keras fit): ${peer.headEpochSeconds.toFixed(2)} s${tfr ? ` (ours ${(peer.headEpochSeconds / tfr.head.trainerSeconds).toFixed(2)}x faster)` : ''}`);
    if (peer.fineTuneStepMs) {
      const mine = tfr?.fineTuneStep?.graphMs;
      console.log(`  fine-tune step (Keras train_on_batch, same layers from the same cut, batch 128): ${peer.fineTuneStepMs.toFixed(1)} ms${mine ? ` (ours ${(peer.fineTuneStepMs / mine).toFixed(2)}x faster)` : ''}`);
    }
  }
  writeJsonAtomic(file, { date: new Date().toISOString(), cores, cpu: os.cpus()[0]?.model, options: { ...a, child: undefined }, results, failed, peer, decode });
  console.log(`\nwrote ${file} (figures mean something only when the load average stayed near or below ${cores})`);
}

// Ctrl-C, SIGTERM (and npm's, through `exec` in package.json): one `interrupted:` line and 130/143.
exitOnInterrupt('npm run bench');
main().catch((err) => {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  if (process.env.BENCH_DEBUG) console.error(err);
  process.exit(err instanceof UsageError ? 2 : 1);
});
