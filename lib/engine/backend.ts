// Picks the fastest tfjs backend this machine can run, and says which in one line.
//
// Ladder: `tensorflow` on a GPU (the native addon `npm install` builds against the TensorFlow wheel's libtensorflow, see
//         lib/engine/native.ts: its CUDA build uses a GPU when one is visible)
//       > `webgpu` on a hardware adapter (Dawn's node binding + tfjs-backend-webgpu, lib/engine/webgpu.ts)
//       > `tensorflow` on the CPU (TensorFlow's CPU kernels, oneDNN)
//       > `wasm` (SIMD; the .wasm files ship inside the npm package, so it works offline)
//       > `cpu` (pure JS, ~40x slower than wasm: only ever chosen with a loud warning).
// A software WebGPU adapter (SwiftShader, what a machine without a GPU offers) is never chosen by the ladder: it is
// slower than wasm. `TFJS_BACKEND=tensorflow|webgpu|wasm|cpu` (`--backend`; the runtime context,
// lib/settings/context.ts) overrides the ladder; a forced webgpu accepts a software adapter. A missing or broken
// native install (not built, libcudart not found, ABI mismatch...) or WebGPU stack never crashes anything: we log
// why and fall back.
import * as tf from '@tensorflow/tfjs';
import * as os from 'os';
import * as path from 'path';
import { loadNative, NativeBackend } from './native';
import { AdapterProbe, tryWebgpu } from './webgpu';
import { BACKEND_NAMES } from '../settings/config';
import { BackendPreference, runtimeContext } from '../settings/context';

export type BackendName = (typeof BACKEND_NAMES)[number];
export const BACKENDS: readonly BackendName[] = BACKEND_NAMES;

export interface BackendChoice {
  name: BackendName;
  /** One human line: what runs and why the faster ones did not. */
  summary: string;
  /** Why each faster backend was skipped. */
  skipped: { name: BackendName; reason: string }[];
}

export interface BackendOptions {
  /** Force a backend (default: TFJS_BACKEND / --backend, the runtime context's; 'auto' is the ladder). */
  prefer?: BackendPreference;
  /** Where the one-line summary and warnings go (default console.log / console.warn). */
  log?: (line: string) => void;
  warn?: (line: string) => void;
  /** How to load the native backend; injectable so tests can simulate a missing or broken install. */
  loadNative?: () => unknown;
  /** How to find and describe the WebGPU adapter; injectable so tests can simulate a software-only or a GPU machine. */
  probeWebgpu?: AdapterProbe;
}

const CPU_WARNING =
  'WARNING: running on the pure-JS `cpu` backend, about 40x slower than wasm. ' +
  'Feature extraction will take hours. Check that @tensorflow/tfjs-backend-wasm is installed.';

let current: Promise<BackendChoice> | undefined;

function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown error';
}

/** "libtensorflow 2.21.0, CPU, oneDNN, 2 threads": what TensorFlow runs on, with its load-time notices folded in. */
function describeNative(native: NativeBackend | undefined): string {
  const binding = (tf.backend() as any).binding;
  const version = binding?.TF_Version ?? native?.manifest.tensorflow ?? '?';
  const gpu = typeof binding?.isUsingGpuDevice === 'function' && binding.isUsingGpuDevice();
  const noise = native?.noise ?? [];
  const parts = [`libtensorflow ${version}`];
  if (gpu) parts.push('GPU');
  else {
    parts.push('CPU');
    const onednn = noise.some((l) => /oneDNN custom operations are on/.test(l)) ||
      (noise.length === 0 && !runtimeContext().oneDnnOff);
    if (onednn) parts.push('oneDNN');
    parts.push(`${os.cpus().length} threads`);
    // A GPU build on a machine without one: say so once, in TensorFlow's own words.
    if (native?.manifest.flavour === 'gpu') {
      const why = noise.find((l) => /cuda|GPU will not be used|libcud/i.test(l));
      parts.push(`GPU build, no GPU used${why ? `: ${why.replace(/^.*\] /, '').trim()}` : ''}`);
    }
  }
  return parts.join(', ');
}

async function tryTensorflow(load: () => unknown): Promise<string> {
  // Registers the 'tensorflow' backend as a side effect; a test's stand-in may return something else entirely.
  const loaded = load() as Partial<NativeBackend> | undefined;
  if (!(await tf.setBackend('tensorflow'))) throw new Error('the native TensorFlow addon loaded but its backend failed to initialise');
  return `tensorflow (${describeNative(loaded?.manifest ? (loaded as NativeBackend) : undefined)})`;
}

/** Directory holding tfjs-backend-wasm's .wasm binaries (shipped in the package). */
export function wasmDir(): string {
  return path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm')) + path.sep;
}

async function tryWasm(): Promise<string> {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const wasm = require('@tensorflow/tfjs-backend-wasm') as typeof import('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(wasmDir());
  if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  return `wasm (${simd ? 'SIMD' : 'no SIMD'}, one thread per process, worker pools for the other cores)`;
}

async function tryCpu(): Promise<string> {
  if (!(await tf.setBackend('cpu'))) throw new Error('cpu backend failed to initialise');
  return 'cpu (pure JS)';
}

/** Why a hardware WebGPU adapter beat the native backend (it loaded, but on the CPU). */
const TF_ON_CPU = 'runs on the CPU here: a hardware WebGPU adapter is faster';

const SOFTWARE_WEBGPU_WARNING =
  'WARNING: webgpu runs on a software adapter (a CPU rasteriser), far slower than wasm or tensorflow; ' +
  'and in Node every tensor read must be async (data()/array(): dataSync throws).';

/** Whether the loaded native backend computes on a GPU (tfjs-node's binding says so itself). */
function nativeUsesGpu(): boolean {
  const binding = (tf.backend() as any)?.binding;
  try {
    return typeof binding?.isUsingGpuDevice === 'function' && binding.isUsingGpuDevice() === true;
  } catch {
    return false;
  }
}

/**
 * Why a faster backend is not the one running, worded as information (the fallback is normal on a machine without
 * the native build): "the native TensorFlow backend is not installed: python3 not found on PATH (...)".
 */
function skipNote(s: { name: BackendName; reason: string }): string {
  if (s.name === 'tensorflow') {
    if (s.reason === TF_ON_CPU) return `the native TensorFlow backend ${TF_ON_CPU}`;
    const m = /^native TensorFlow (?:is )?not installed[:\s]*(.*)$/.exec(s.reason);
    if (m) return `the native TensorFlow backend is not installed${!m[1] ? '' : m[1].startsWith('(') ? ` ${m[1]}` : `: ${m[1]}`}`;
    return `the native TensorFlow backend did not load: ${s.reason}`;
  }
  if (s.name === 'webgpu') return `webgpu skipped: ${s.reason}`;
  return `the ${s.name} backend did not start: ${s.reason}`;
}

async function choose(opts: BackendOptions): Promise<BackendChoice> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const warn = opts.warn ?? ((l: string) => console.warn(l));
  const prefer = opts.prefer ?? runtimeContext().backend;
  const load = opts.loadNative ?? (() => loadNative());
  let webgpuSoftware = false;
  const attempts: Record<BackendName, () => Promise<string>> = {
    tensorflow: () => tryTensorflow(load),
    // A software adapter only when forced: the ladder would rather run wasm.
    webgpu: async () => {
      const adapter = await tryWebgpu({ allowSoftware: prefer === 'webgpu', probe: opts.probeWebgpu });
      webgpuSoftware = adapter.software;
      return adapter.text;
    },
    wasm: tryWasm,
    cpu: tryCpu,
  };
  const skipped: BackendChoice['skipped'] = [];
  const chosen = (name: BackendName, detail: string): BackendChoice => {
    const why = skipped.map(skipNote).join('; ');
    const summary = `tfjs backend: ${detail}${prefer !== 'auto' ? ' [forced by TFJS_BACKEND]' : ''}${why ? `; ${why}` : ''}`;
    log(summary);
    if (name === 'cpu') warn(CPU_WARNING);
    if (name === 'webgpu' && webgpuSoftware) warn(SOFTWARE_WEBGPU_WARNING);
    return { name, summary, skipped };
  };
  const attempt = async (name: BackendName): Promise<string | undefined> => {
    try {
      const detail = await attempts[name]();
      await tf.ready();
      return detail;
    } catch (err) {
      skipped.push({ name, reason: firstLine(err) });
      return undefined;
    }
  };

  if (prefer !== 'auto') {
    const detail = await attempt(prefer);
    if (detail !== undefined) return chosen(prefer, detail);
  } else {
    // tensorflow on a GPU > webgpu on a hardware adapter > tensorflow on the CPU > wasm > cpu. Loading the native
    // addon tells us which device it uses; when it is the CPU it stays registered while webgpu is tried.
    const tfDetail = await attempt('tensorflow');
    if (tfDetail !== undefined && nativeUsesGpu()) return chosen('tensorflow', tfDetail);
    const gpuDetail = await attempt('webgpu');
    if (gpuDetail !== undefined) {
      if (tfDetail !== undefined) skipped.unshift({ name: 'tensorflow', reason: TF_ON_CPU });
      return chosen('webgpu', gpuDetail);
    }
    if (tfDetail !== undefined && (await tf.setBackend('tensorflow'))) {
      await tf.ready();
      return chosen('tensorflow', tfDetail);
    }
    for (const name of ['wasm', 'cpu'] as const) {
      const detail = await attempt(name);
      if (detail !== undefined) return chosen(name, detail);
    }
  }
  throw new Error(`no tfjs backend could start: ${skipped.map((s) => `${s.name}: ${s.reason}`).join('; ')}`);
}

/**
 * Initialise the fastest available backend once per process; later calls return the same choice.
 * Pass `{ reset: true }` (tests) to choose again.
 */
export function initBackend(opts: BackendOptions & { reset?: boolean } = {}): Promise<BackendChoice> {
  if (!current || opts.reset) {
    current = choose(opts);
    current.catch(() => (current = undefined));
  }
  return current;
}

export { tf };
