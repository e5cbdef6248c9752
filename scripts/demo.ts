// `npm run demo [-- --serve] [--port N] [--model DIR] [--out DIR]`: a static web page in out/demo/ that classifies
// images in the browser with the saved model. Everything it loads sits beside it, by relative URL: the model
// (model/: model.json, weights, metadata.json), tfjs and its wasm and webgpu backends from node_modules (vendor/),
// the 32x32 reduction (pixels.js: lib/data/pixels.ts transpiled, so the page and `npm run predict` share one
// implementation), and one test image per class (samples/, PNG): CIFAR-10's from images 0-999, or, for a model
// trained on a folder, from that folder's test split at the model's input size. --serve serves the folder on
// http://127.0.0.1:PORT/; any static host works the same (file:// does not: browsers refuse to fetch from it).
import { PIXELS_PER_IMAGE } from '../lib/data/cifar10';
import { loadDataset, datasetSplits, DatasetSettings } from '../lib/data/dataset';
import { imageBytes } from '../lib/data/image-set';
import { defaultConfig } from '../lib/settings/config';
import * as fs from 'fs';
import * as http from 'http';
import * as net from 'net';
import * as path from 'path';
import { PNG } from 'pngjs';
import * as ts from 'typescript';
import { gitCommit, METADATA_FILE } from '../lib/model/classifier';
import { resolveModel } from '../lib/model/registry';
import { resolveConfig } from '../lib/settings/config';
import { modelsDir } from '../lib/settings/paths';
import { locateCifar10, readClassNames, readFirstTestImages } from '../lib/data/cifar10';
import { parseCli, UsageError } from '../lib/util/cli';
import { PROJECT_ROOT, userPath } from '../lib/settings/paths';

export const DEMO_DIR = path.join(PROJECT_ROOT, 'out', 'demo');
const PAGE = path.join(PROJECT_ROOT, 'scripts', 'demo-page');
const BUILD_FILE = 'build.json';
const VENDOR = [
  '@tensorflow/tfjs/dist/tf.min.js',
  '@tensorflow/tfjs-backend-wasm/dist/tf-backend-wasm.min.js',
  // all three: the wasm backend picks by browser support (threads only under cross-origin isolation)
  '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm',
  '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm',
  '@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-threaded-simd.wasm',
  // the UMD bundle, beside tf.min.js (it extends window.tf); it registers 'webgpu' only where navigator.gpu exists
  '@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js',
];
const OPTIONAL_VENDOR = ['@tensorflow/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js'];

export interface Sample {
  /** size x size RGB pixels. */
  pixels: Uint8Array;
  /** Side in pixels (default 32). */
  size?: number;
  /** File name under samples/. */
  name: string;
  label?: string;
  /** Index in the CIFAR-10 test set. */
  index?: number;
}

/** The first test image of each class among test images 0-999 (the exact ones in the offline copy). */
export function cifarSamples(dir: string): Sample[] {
  const classNames = readClassNames(dir);
  const { images, labels, n } = readFirstTestImages(dir, 1000);
  const out: Sample[] = [];
  for (let c = 0; c < classNames.length; c++) {
    const i = labels.findIndex((l) => l === c);
    if (i < 0 || i >= n) continue;
    out.push({ pixels: images.subarray(i * PIXELS_PER_IMAGE, (i + 1) * PIXELS_PER_IMAGE), name: `test-${String(i).padStart(4, '0')}-${classNames[c]}.png`, label: classNames[c], index: i });
  }
  return out;
}

/** The first test image of each class of the folder a model was trained on, at the model's input size. */
export async function folderSamples(meta: { config?: Partial<DatasetSettings> & { trainLimit?: number; valLimit?: number; testLimit?: number }; classNames: string[] }): Promise<Sample[]> {
  const s = { ...defaultConfig(), ...meta.config } as DatasetSettings & { trainLimit: number; valLimit: number; testLimit: number };
  const ds = await loadDataset(s, { progress: false });
  if (ds.kind !== 'folder') return [];
  const test = datasetSplits(ds, { trainLimit: s.trainLimit, valLimit: s.valLimit, testLimit: s.testLimit, seed: s.splitSeed }).testExact;
  const per = imageBytes(ds.size);
  const out: Sample[] = [];
  for (let c = 0; c < ds.classNames.length; c++) {
    const i = test.labels.findIndex((l) => l === c);
    if (i < 0) continue;
    const file = ds.files[test.indices[i]];
    out.push({ pixels: test.images.subarray(i * per, (i + 1) * per), size: ds.size, name: `test-${c}-${path.basename(file).replace(/\.[^.]+$/, '')}.png`, label: meta.classNames[c] });
  }
  return out;
}

export function writePng(file: string, rgb: Uint8Array, width: number, height: number): void {
  const png = new PNG({ width, height });
  for (let i = 0; i < width * height; i++) {
    png.data.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
    png.data[i * 4 + 3] = 255;
  }
  fs.writeFileSync(file, PNG.sync.write(png));
}

/** Build the page into `outDir` (emptied first, but only if it is empty or an earlier demo build). */
export function buildDemo(opts: { modelDir: string; outDir: string; samples: Sample[] }): void {
  const { modelDir, outDir } = opts;
  if (!fs.existsSync(path.join(modelDir, 'model.json'))) throw new Error(`no saved model in ${modelDir} (model.json missing): run \`npm start\` first`);
  if (fs.existsSync(outDir) && fs.readdirSync(outDir).length && !fs.existsSync(path.join(outDir, BUILD_FILE))) {
    throw new Error(`${outDir} is not empty and holds no earlier demo (${BUILD_FILE}): refusing to replace it`);
  }
  fs.rmSync(outDir, { recursive: true, force: true });
  for (const d of ['model', 'vendor', 'samples']) fs.mkdirSync(path.join(outDir, d), { recursive: true });

  const json = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
  const files = ['model.json', METADATA_FILE, ...json.weightsManifest.flatMap((g: { paths: string[] }) => g.paths)];
  for (const f of files) fs.copyFileSync(path.join(modelDir, f), path.join(outDir, 'model', f));
  for (const v of VENDOR) {
    let from: string;
    try {
      from = require.resolve(v, { paths: [PROJECT_ROOT] });
    } catch (err) {
      // tfjs-backend-webgpu is an optional dependency: without it the page's <script> 404s and it runs on wasm
      if (OPTIONAL_VENDOR.includes(v)) continue;
      throw err;
    }
    fs.copyFileSync(from, path.join(outDir, 'vendor', path.basename(v)));
  }
  for (const f of fs.readdirSync(PAGE)) fs.copyFileSync(path.join(PAGE, f), path.join(outDir, f));
  const pixels = ts.transpileModule(fs.readFileSync(path.join(PROJECT_ROOT, 'lib', 'data', 'pixels.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.ES2020, target: ts.ScriptTarget.ES2020 },
    fileName: 'pixels.ts',
  }).outputText;
  fs.writeFileSync(path.join(outDir, 'pixels.js'), `// lib/data/pixels.ts, transpiled by scripts/demo.ts\n${pixels}`);

  const list = opts.samples.map((s) => {
    writePng(path.join(outDir, 'samples', s.name), s.pixels, s.size ?? 32, s.size ?? 32);
    return { file: `samples/${s.name}`, label: s.label, index: s.index };
  });
  fs.writeFileSync(path.join(outDir, 'samples.json'), JSON.stringify(list, null, 1));
  fs.writeFileSync(path.join(outDir, BUILD_FILE), JSON.stringify({ model: modelDir, date: new Date().toISOString(), gitCommit: gitCommit() }, null, 1));
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.wasm': 'application/wasm', // WebAssembly.instantiateStreaming insists on it
  '.bin': 'application/octet-stream',
};

/** A static file server for `root` (GET/HEAD only, nothing outside `root`). */
export function serveDir(root: string, port: number, host = '127.0.0.1'): Promise<http.Server> {
  root = path.resolve(root);
  const server = http.createServer((req, res) => {
    let rel: string;
    try {
      rel = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname);
    } catch {
      res.writeHead(400).end('bad request');
      return;
    }
    const file = path.join(root, rel.endsWith('/') ? path.join(rel, 'index.html') : rel);
    const inside = file.startsWith(root + path.sep);
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !inside || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(req.method === 'GET' || req.method === 'HEAD' ? 404 : 405).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'Cache-Control': 'no-cache', 'Content-Length': fs.statSync(file).size });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).pipe(res);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

const CLI = {
  usage: 'npm run demo -- [--serve] [--port N] [--model ID|DIR] [--out DIR]',
  notes: ['Put the built folder on any static host; file:// does not work (the browser refuses to fetch the model).'],
  options: {
    serve: { type: 'boolean', help: 'serve the page from a local HTTP server and print its URL' },
    port: { type: 'string', arg: 'n', help: 'port for --serve', default: '8080' },
    model: { type: 'string', arg: 'id|dir', help: 'the saved model: current (default), a model id, or a model folder (env MODEL)' },
    out: { type: 'string', arg: 'dir', help: 'where the page is built (default out/demo)' },
  },
} as const;

async function main(): Promise<void> {
  const { values } = parseCli(CLI);
  const { config } = resolveConfig([], process.env, ['models', 'model']);
  const ref = resolveModel(modelsDir(config.models), values.model ?? config.model, userPath('.'));
  const modelDir = ref.dir;
  const outDir = values.out ? userPath(values.out) : DEMO_DIR;
  const meta = JSON.parse(fs.readFileSync(path.join(modelDir, METADATA_FILE), 'utf8'));
  let samples: Sample[] = [];
  if (meta.dataset?.kind === 'folder') {
    try {
      samples = await folderSamples(meta);
    } catch (err) {
      console.warn(`warning: the model's folder could not be read (${(err as Error).message.split('\n')[0]}): the page gets no bundled sample images`);
    }
  } else {
    const cifar = locateCifar10();
    if (!cifar) console.warn('warning: CIFAR-10 not found (set CIFAR10_DIR): the page gets no bundled sample images');
    samples = cifar ? cifarSamples(cifar) : [];
  }
  buildDemo({ modelDir, outDir, samples });
  console.log(`demo built in ${path.relative(process.cwd(), outDir) || '.'}/ (model ${ref.id}${ref.via === 'current' ? ', the current model' : ''}, from ${modelDir}; ${samples.length} sample images)`);
  if (!values.serve) {
    console.log('serve it with `npm run demo -- --serve`, or put the folder on any static host');
    return;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port ${values.port}: expected a port number`);
  const server = await serveDir(outDir, port);
  console.log(`serving the demo at http://127.0.0.1:${(server.address() as net.AddressInfo).port}/ (Ctrl-C to stop)`);
}

if (require.main === module) {
  // Not runCli: with --serve the process lives on after main() returns.
  main().catch((err) => {
    console.error(`error: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    process.exit(err instanceof UsageError ? 2 : 1);
  });
}
