// `npm run export:keras [-- --check] [--model DIR] [--out FILE]`: the saved classifier as a Keras 2 (tf-keras) HDF5
// file, <model dir>/cifar10.h5, written by PyPI's tensorflowjs converter
// (`tensorflowjs_converter --input_format tfjs_layers_model --output_format keras`) in a venv of its own,
// data/tools/keras-venv/ (made on first use from scripts/keras-requirements.txt, reused after; env KERAS_VENV moves it).
//
// The converter loads without custom objects, so a copy of model.json is rewritten first (kerasTopology):
//  - ResizeNormalize becomes Keras' Rescaling(1/127.5, offset -1) + Resizing(bilinear): Keras' Resizing has the
//    half-pixel centres of ResizeNormalize. The tfjs model keeps its own layer because tfjs 4.22's Resizing aligns
//    corners (and misreports its output shape) and its bilinear UpSampling2D samples the legacy TF1 way.
//  - layer names made unique ignoring case: the converter builds the model in a TF1 graph, whose name scopes are
//    case-insensitive, so MobileNet v1's `conv1` would rename v2's `Conv1` to `Conv1_1` and its weights would not
//    be found.
// `--output_format keras_keras` (.keras) was tried too: it looks weights up as `<layer>/<index>`, which a tfjs-saved
// model does not have.
//
// --check: the first 100 CIFAR-10 test images through tfjs (Node) and through the exported file (scripts/
// keras_check.py in the venv); the max abs difference of the probabilities must be <= 1e-4.
import { spawnSync, SpawnSyncReturns } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../lib/engine/backend';
import { locateCifar10, readFirstTestImages } from '../lib/data/cifar10';
import { loadModel, METADATA_FILE, predictPixels } from '../lib/model/classifier';
import { resolveModel } from '../lib/model/registry';
import { defaultConfig, resolveConfig } from '../lib/settings/config';
import { modelsDir } from '../lib/settings/paths';
import { parseCli, runCli } from '../lib/util/cli';
import { PROJECT_ROOT, userPath } from '../lib/settings/paths';
import { datasetSplits, loadDataset } from '../lib/data/dataset';
import { imageBytes, sideOf, sideOfSet } from '../lib/data/image-set';

/** The converter's venv; KERAS_VENV moves it (a test points it at an empty folder). */
export const VENV = process.env.KERAS_VENV ? path.resolve(process.env.KERAS_VENV) : path.join(PROJECT_ROOT, 'data', 'tools', 'keras-venv');
const REQUIREMENTS = path.join(PROJECT_ROOT, 'scripts', 'keras-requirements.txt');
const CHECK_SCRIPT = path.join(PROJECT_ROOT, 'scripts', 'keras_check.py');
export const EXPORT_FILE = 'cifar10.h5';
export const TOLERANCE = 1e-4;

type Layer = { class_name: string; name: string; config: any; inbound_nodes: any[][] };

/** A copy of a tfjs model.json the converter can load into tf-keras (see the top of this file). */
export function kerasTopology(modelJson: any): any {
  const json = structuredClone(modelJson);
  const top = json.modelTopology.model_config ?? json.modelTopology;
  const layers: Layer[] = top.config.layers;
  const i = layers.findIndex((l) => l.class_name === 'ResizeNormalize');
  if (i >= 0) {
    const { name, size } = layers[i].config;
    // The model's input side (32 for CIFAR-10, the resolution for a folder-trained model): no resize when equal.
    const input = layers.find((l) => l.class_name === 'InputLayer');
    const side = (input?.config.batch_input_shape ?? input?.config.batchInputShape)?.[1] ?? 32;
    const same = size === side;
    const scaleName = `${name}_rescale`;
    const rescale: Layer = {
      class_name: 'Rescaling', name: same ? name : scaleName, inbound_nodes: layers[i].inbound_nodes,
      config: { name: same ? name : scaleName, trainable: false, dtype: 'float32', scale: 1 / 127.5, offset: -1 },
    };
    const resize: Layer = {
      class_name: 'Resizing', name, inbound_nodes: [[[scaleName, 0, 0, {}]]],
      config: { name, trainable: false, dtype: 'float32', height: size, width: size, interpolation: 'bilinear', crop_to_aspect_ratio: false },
    };
    // ResizeNormalize skips resizing when the input already has its size; the consumers keep reading the layer called `name`
    layers.splice(i, 1, ...(same ? [rescale] : [rescale, resize]));
  }
  const renamed = uniqueIgnoringCase(top.config);
  for (const group of json.weightsManifest) {
    for (const w of group.weights) {
      const [layer, ...rest] = w.name.split('/');
      if (renamed.has(layer)) w.name = [renamed.get(layer), ...rest].join('/');
    }
  }
  return json;
}

/**
 * Rename layers (nested models included) whose names clash ignoring case; returns old -> new for the weights.
 * A name can be renamed twice only for layers without weights (input layers): tfjs weight names are
 * `<layer>/<weight>` across nested models, so two weighted layers never share a name.
 */
function uniqueIgnoringCase(model: any, seen = new Set<string>(), renamed = new Map<string, string>()): Map<string, string> {
  const local = new Map<string, string>();
  for (const l of model.layers as Layer[]) {
    let name = l.name;
    for (let k = 1; seen.has(name.toLowerCase()); k++) name = `${l.name}_${k}`;
    seen.add(name.toLowerCase());
    if (name !== l.name) {
      local.set(l.name, name);
      renamed.set(l.name, name);
      l.name = l.config.name = name;
    }
    if (l.class_name === 'Model' || l.class_name === 'Functional') uniqueIgnoringCase(l.config, seen, renamed);
  }
  const ref = (r: any[]) => (r[0] = local.get(r[0]) ?? r[0]);
  for (const l of model.layers as Layer[]) for (const node of l.inbound_nodes) node.forEach(ref);
  model.input_layers.forEach(ref);
  model.output_layers.forEach(ref);
  return renamed;
}

function run(cmd: string, args: string[], what: string): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' }, maxBuffer: 64 << 20 });
  if (r.error) throw new Error(`${what}: cannot run ${cmd} (${(r.error as NodeJS.ErrnoException).code ?? r.error.message})`);
  return r;
}

function failure(what: string, r: SpawnSyncReturns<string>, logFile: string): Error {
  fs.mkdirSync(path.dirname(logFile), { recursive: true });
  fs.writeFileSync(logFile, `${r.stdout}\n${r.stderr}`);
  const last = `${r.stderr}`.trim().split('\n').filter((s) => /error|exception/i.test(s)).pop() ?? `exit code ${r.status}`;
  return new Error(`${what} failed: ${last.trim()} (full output: ${path.relative(process.cwd(), logFile)})`);
}

/** The converter's venv, made once (and again when keras-requirements.txt changes). Returns its bin/ folder. */
export function ensureVenv(log: (s: string) => void = console.log): string {
  const bin = path.join(VENV, 'bin');
  const stamp = path.join(VENV, 'requirements.sha256');
  const want = crypto.createHash('sha256').update(fs.readFileSync(REQUIREMENTS)).digest('hex');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === want) return bin;
  const py = spawnSync('python3', ['--version'], { encoding: 'utf8' });
  if (py.error || py.status !== 0) throw new Error('python3 not found: the Keras export needs Python 3 with venv (e.g. apt-get install python3 python3-venv)');
  log(`making the converter's venv in ${path.relative(process.cwd(), VENV)} (${py.stdout.trim()}; tensorflowjs 4.22.0, tf-keras 2.19, ~3 GB, about a minute)`);
  fs.rmSync(VENV, { recursive: true, force: true });
  const logFile = `${VENV}.log`;
  let r = run('python3', ['-m', 'venv', VENV], 'python3 -m venv');
  if (r.status !== 0) throw failure('python3 -m venv (on Debian: apt-get install python3-venv)', r, logFile);
  r = run(path.join(bin, 'pip'), ['install', '--disable-pip-version-check', '--no-input', '-r', REQUIREMENTS], 'pip install');
  if (r.status !== 0) throw failure('pip install -r scripts/keras-requirements.txt', r, logFile);
  fs.writeFileSync(stamp, want + '\n');
  return bin;
}

/** Convert the tfjs model in `modelDir` to a Keras HDF5 file `out`. */
export function exportKeras(modelDir: string, out: string, bin = ensureVenv()): void {
  const json = JSON.parse(fs.readFileSync(path.join(modelDir, 'model.json'), 'utf8'));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keras-export-'));
  try {
    for (const group of json.weightsManifest) for (const p of group.paths) fs.copyFileSync(path.join(modelDir, p), path.join(tmp, p));
    fs.writeFileSync(path.join(tmp, 'model.json'), JSON.stringify(kerasTopology(json)));
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.rmSync(out, { force: true });
    const r = run(path.join(bin, 'tensorflowjs_converter'), ['--input_format', 'tfjs_layers_model', '--output_format', 'keras', path.join(tmp, 'model.json'), out], 'tensorflowjs_converter');
    if (r.status !== 0 || !fs.existsSync(out)) throw failure('tensorflowjs_converter', r, `${out}.log`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Predict `images` (uint8 NHWC, at the model's input size) with the tfjs model and with the Keras file; returns keras_check.py's line.
 * Throws when the difference is over TOLERANCE.
 */
export async function checkKeras(modelDir: string, file: string, images: Uint8Array, n: number, bin = ensureVenv()): Promise<string> {
  const { model } = await loadModel(modelDir);
  const probs = await predictPixels(model, images, n);
  model.dispose();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'keras-check-'));
  try {
    const x = path.join(tmp, 'images.f32');
    const p = path.join(tmp, 'probs.f32');
    fs.writeFileSync(x, new Uint8Array(Float32Array.from(images).buffer)); // little-endian on every platform tfjs runs on
    fs.writeFileSync(p, new Uint8Array(probs.buffer, probs.byteOffset, probs.byteLength));
    const r = run(path.join(bin, 'python'), [CHECK_SCRIPT, '--model', file, '--images', x, '--probs', p, '--n', String(n), '--size', String(sideOf(images.length, n)), '--tol', String(TOLERANCE)], 'keras_check.py');
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0) throw r.status === 1 && /max abs difference/.test(line) ? new Error(`check failed: ${line}`) : failure('keras_check.py', r, `${file}.check.log`);
    return line;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const CLI = {
  usage: 'npm run export:keras -- [--check] [--model ID|DIR] [--out FILE]',
  options: {
    check: { type: 'boolean', help: "compare the exported file with tfjs on the first 100 test images (CIFAR-10's, or the model's folder's test split; max |diff| <= 1e-4)" },
    model: { type: 'string', arg: 'id|dir', help: 'the saved model: current (default), a model id, or a model folder (env MODEL)' },
    out: { type: 'string', arg: 'file', help: 'the .h5 to write (default <model dir>/cifar10.h5)' },
  },
} as const;

async function main(): Promise<number> {
  const { values } = parseCli(CLI);
  const { config } = resolveConfig([], process.env, ['models', 'model']);
  const ref = resolveModel(modelsDir(config.models), values.model ?? config.model, userPath('.'));
  const dir = ref.dir;
  console.log(`model ${ref.id}${ref.via === 'current' ? ' (the current model)' : ''} from ${dir}`);
  const out = values.out ? userPath(values.out) : path.join(dir, EXPORT_FILE);
  const bin = ensureVenv();
  const t0 = Date.now();
  exportKeras(dir, out, bin);
  console.log(`wrote ${path.relative(process.cwd(), out)} (${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB, ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  if (values.check) {
    await initBackend({ log: () => {} });
    const meta = JSON.parse(fs.readFileSync(path.join(dir, METADATA_FILE), 'utf8'));
    if (meta.dataset?.kind === 'folder') {
      // the model's own test split (its folder, its settings), at its input size
      const s = { ...defaultConfig(), ...meta.config };
      const test = datasetSplits(await loadDataset(s, { progress: false }), { trainLimit: s.trainLimit, valLimit: s.valLimit, testLimit: s.testLimit, seed: s.splitSeed }).testExact;
      const n = Math.min(100, test.n);
      console.log(await checkKeras(dir, out, test.images.subarray(0, n * imageBytes(sideOfSet(test))), n, bin));
    } else {
      const cifar = locateCifar10();
      if (!cifar) throw new Error('--check needs CIFAR-10: set CIFAR10_DIR to a cifar-10-batches-bin folder (or run npm start once to download it)');
      // the first 100 test images: exact in the offline copy (1000-9999 were rebuilt from JPEG)
      console.log(await checkKeras(dir, out, readFirstTestImages(cifar, 100).images, 100, bin));
    }
  }
  return 0;
}

if (require.main === module) runCli(main);
