// The `webgpu` tfjs backend in Node, through Dawn (Chrome's WebGPU implementation; npm `webgpu`, prebuilt
// `dawn.node`) and `@tensorflow/tfjs-backend-webgpu`. Everything Dawn-specific lives here; lib/engine/backend.ts only
// asks "is there an adapter, is it hardware" and "start it".
//
// Why each step exists (measured on Debian 12, Node 20, no GPU):
// - Node 20 has no `navigator`: tfjs-backend-webgpu registers its backend AT IMPORT only when
//   `globalThis.navigator.gpu` exists, and its kernels use the GPUBufferUsage/GPUMapMode/... constants as globals.
//   So the globals go in first (setupWebgpuGlobals), then the module is required.
// - Dawn on Linux talks to a Vulkan driver through the Vulkan loader (libvulkan.so.1), which it dlopen()s by soname.
//   Without a GPU the only driver Dawn accepts is SwiftShader (Debian's lavapipe is rejected); Debian ships it, with a
//   loader, in the `chromium` package under /usr/lib/chromium. Its ICD json names the driver relative to itself
//   ("./libvk_swiftshader.so"), so we write a copy with the absolute path into a private folder and add it with
//   VK_ADD_DRIVER_FILES (read when Dawn creates its Vulkan instance, so setting it in the process environment works, via
//   lib/settings/context.ts appendNativeEnvList; ADD keeps a
//   real GPU's driver visible, where VK_ICD_FILENAMES would hide it).
// - LD_LIBRARY_PATH cannot be set from inside the process (glibc reads it at start-up: measured, setting it in
//   process.env changes nothing). Instead, when the system has no loader, we dlopen chromium's libvulkan.so.1 by its
//   absolute path with RTLD_NODELETE: Dawn's later dlopen("libvulkan.so.1") then finds the already-loaded library
//   by its soname. No re-exec, no wrapper.
// - SwiftShader is a CPU rasteriser: Dawn reports it as a fallback adapter. It is correct but far slower than the
//   wasm or tensorflow backends, so the ladder never picks it by itself; TFJS_BACKEND=webgpu forces it.
// - In Node tfjs-backend-webgpu's synchronous read (dataSync/arraySync) goes through OffscreenCanvas, which Node has
//   not: every read must be async (data(), array()). We make that failure say so instead of "OffscreenCanvas is not
//   defined".
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { appendNativeEnvList, runtimeContext } from '../settings/context';

/** What we need of a WebGPU adapter's info (GPUAdapterInfo; Dawn's node binding fills these). */
export interface AdapterInfoLike {
  vendor?: string;
  architecture?: string;
  device?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (SwiftShader, llvmpipe, lavapipe...): correct, slow. */
  software: boolean;
  /** "webgpu (google swiftshader, software fallback adapter)" */
  text: string;
}

/** Finds the adapter tfjs would get and describes it; throws a one-line reason when there is none. Injectable. */
export type AdapterProbe = () => Promise<AdapterDescription>;

export interface SwiftShader {
  /** Our copy of the ICD json, its library_path made absolute. */
  icdFile: string;
  /** Folder holding libvk_swiftshader.so (and, in chromium's case, a Vulkan loader libvulkan.so.1). */
  libDir: string;
}

/** Where Debian's chromium package puts SwiftShader's Vulkan driver. */
export const SWIFTSHADER_DIRS = ['/usr/lib/chromium'];
/** Env var naming the folder with vk_swiftshader_icd.json + libvk_swiftshader.so, searched instead of the default. */
export const SWIFTSHADER_ENV = 'WEBGPU_SWIFTSHADER_DIR';

export const SOFTWARE_REFUSAL = (a: AdapterDescription) =>
  `only a software adapter (${a.vendor}/${a.architecture}): slow, used only when TFJS_BACKEND=webgpu`;

const SYNC_READ_ERROR =
  'webgpu in Node cannot read a tensor synchronously (dataSync/arraySync/bufferSync need OffscreenCanvas): ' +
  'use await data() / array() / buffer()';

// Reasons never contain ';': lib/engine/backend.ts joins the skipped rungs' reasons with it in one line.
function firstLine(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown error';
}

// ---------------------------------------------------------------------------------------------------------------
// The Vulkan driver (SwiftShader) and loader

let icdRoot: string | undefined;

/** This process's private folder for the ICD copy (0700, ours, removed at exit): a fixed /tmp name could be planted. */
function privateIcdRoot(): string {
  if (!icdRoot || !fs.existsSync(icdRoot)) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cifar10-vulkan-icd-'));
    fs.chmodSync(dir, 0o700);
    icdRoot = dir;
    process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return icdRoot;
}

/**
 * Locate SwiftShader's Vulkan driver (in WEBGPU_SWIFTSHADER_DIR when set, else /usr/lib/chromium) and write an ICD json naming it
 * by absolute path. Returns the files, or a one-line reason it is not there.
 */
export function findSwiftShader(dirs?: string[]): SwiftShader | string {
  const override = runtimeContext().swiftshaderDir;
  // The override replaces the default (so a nonexistent folder turns SwiftShader off, e.g. to see the ladder without it).
  const candidates = dirs ?? (override ? [override] : SWIFTSHADER_DIRS);
  const looked: string[] = [];
  for (const dir of candidates) {
    const json = path.join(dir, 'vk_swiftshader_icd.json');
    looked.push(dir);
    if (!fs.existsSync(json)) continue;
    let icd: any;
    try {
      icd = JSON.parse(fs.readFileSync(json, 'utf8'));
    } catch (err) {
      return `${json} is unreadable: ${firstLine(err)}`;
    }
    const rel = icd?.ICD?.library_path;
    if (typeof rel !== 'string') return `${json} names no ICD.library_path`;
    // The Vulkan loader resolves a relative library_path against the json's folder; ours lives elsewhere.
    const lib = path.isAbsolute(rel) ? rel : path.resolve(dir, rel);
    if (!fs.existsSync(lib)) return `${json} names ${lib}, which does not exist`;
    icd.ICD.library_path = lib;
    const icdFile = path.join(privateIcdRoot(), 'vk_swiftshader_icd.json');
    fs.writeFileSync(icdFile, JSON.stringify(icd), { mode: 0o600 });
    return { icdFile, libDir: path.dirname(lib) };
  }
  return `SwiftShader's Vulkan driver not found (looked in ${looked.join(', ')}: apt-get install chromium, or set ${SWIFTSHADER_ENV})`;
}

/** glibc's RTLD_NODELETE (not in os.constants.dlopen): keeps a library loaded after Node's failed addon load closes it. */
const RTLD_NODELETE = 0x1000;

/** dlopen() a plain shared library. Node rejects it as an addon ("did not self-register") after loading it: that is success. */
function dlopenLibrary(file: string): string | undefined {
  const { RTLD_NOW, RTLD_GLOBAL } = os.constants.dlopen as Record<string, number>;
  try {
    process.dlopen({ exports: {} } as NodeJS.Module, file, RTLD_NOW | RTLD_GLOBAL | RTLD_NODELETE);
    return undefined;
  } catch (err) {
    const msg = firstLine(err);
    return /did not self-register/i.test(msg) ? undefined : msg;
  }
}

/** Where Dawn's Vulkan loader comes from: LINKER_FOUND (the system's, or LD_LIBRARY_PATH at start) or the file we preloaded. */
let vulkanLoader: string | undefined;
export const LINKER_FOUND = 'found by the dynamic linker';

/**
 * Make sure Dawn's dlopen("libvulkan.so.1") will succeed: the system's loader when the dynamic linker finds one
 * (libvulkan1, or LD_LIBRARY_PATH set before start), else the copy beside SwiftShader, preloaded by absolute path.
 */
function ensureVulkanLoader(swiftshader: SwiftShader | string): string {
  if (vulkanLoader) return vulkanLoader;
  if (process.platform !== 'linux') return (vulkanLoader = LINKER_FOUND);
  if (!dlopenLibrary('libvulkan.so.1')) return (vulkanLoader = LINKER_FOUND);
  const local = typeof swiftshader === 'string' ? undefined : path.join(swiftshader.libDir, 'libvulkan.so.1');
  if (local && fs.existsSync(local)) {
    const why = dlopenLibrary(local);
    if (!why) return (vulkanLoader = local);
    throw new Error(`the Vulkan loader ${local} does not load: ${why}`);
  }
  throw new Error(`no Vulkan loader (libvulkan.so.1 not found: apt-get install libvulkan1)${typeof swiftshader === 'string' ? ` and ${swiftshader}` : ''}`);
}

let driverNote: string | undefined;

/** Add SwiftShader to the Vulkan drivers Dawn will see (once). Returns what was set up, for check:gpu. */
export function setupVulkan(): { loader: string; swiftshader: SwiftShader | string } {
  if (process.platform !== 'linux') return { loader: LINKER_FOUND, swiftshader: 'not Linux: Dawn uses Metal/D3D12' };
  const found = findSwiftShader();
  if (typeof found !== 'string' && driverNote === undefined) {
    appendNativeEnvList('VK_ADD_DRIVER_FILES', found.icdFile);
    driverNote = found.icdFile;
  }
  const loader = ensureVulkanLoader(found);
  return { loader, swiftshader: found };
}

// ---------------------------------------------------------------------------------------------------------------
// Dawn

interface Dawn {
  create(flags: string[]): any;
  globals: Record<string, unknown>;
}

let dawn: Dawn | string | undefined;
let gpu: any;

/** The `webgpu` package (an optional dependency), or why not. */
function loadDawn(): Dawn | string {
  if (dawn === undefined) {
    try {
      dawn = requireDawn();
    } catch (err) {
      const msg = firstLine(err);
      dawn = /Cannot find module 'webgpu/.test(msg)
        ? 'the webgpu package is not installed (an optional dependency: npm install)'
        : `Dawn's node binding (npm webgpu) does not load: ${msg}`;
    }
  }
  return dawn;
}

function requireDawn(): Dawn {
  try {
    // The package is ESM; Node 20.19+ require()s it. Its index adds a fix-up (GPUDevice.destroy unmaps buffers).
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const mod = require('webgpu');
    if (typeof mod?.create !== 'function') throw new Error('the webgpu package exports no create()');
    return mod as Dawn;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ERR_REQUIRE_ESM') throw err;
    // Older Node 20: the prebuilt addon itself, as the package's index loads it.
    const arch = process.platform === 'darwin' ? 'universal' : process.arch;
    const dir = path.dirname(require.resolve('webgpu/package.json'));
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return require(path.join(dir, 'dist', `${process.platform}-${arch}`, 'dawn.node')) as Dawn;
  }
}

/** navigator.gpu for this process: Vulkan set up, one Dawn instance (every create() makes a new one). */
function dawnGpu(): any {
  if (gpu) return gpu;
  const d = loadDawn();
  if (typeof d === 'string') throw new Error(d);
  setupVulkan();
  gpu = d.create([]);
  return gpu;
}

/**
 * Install `navigator.gpu` and Dawn's globals (GPUBufferUsage, GPUMapMode, ...) for tfjs-backend-webgpu, once. Must run
 * before that module is imported. Throws a one-line reason when the `webgpu` package or its binary is missing/broken.
 */
export function setupWebgpuGlobals(): void {
  const g = globalThis as any;
  if (g.navigator?.gpu) return;
  const d = loadDawn();
  if (typeof d === 'string') throw new Error(d);
  const theGpu = dawnGpu();
  for (const [k, v] of Object.entries(d.globals)) if (!(k in g)) g[k] = v;
  // Node 21+ has a navigator (a getter on globalThis): add gpu to it; Node 20 has none: define one.
  if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: theGpu, configurable: true });
  else Object.defineProperty(g, 'navigator', { value: { gpu: theGpu }, configurable: true, writable: true });
}

/** vendor/architecture/description of an adapter, and whether it is a CPU implementation. */
export function describeAdapter(info: AdapterInfoLike): AdapterDescription {
  const vendor = info.vendor || 'unknown vendor';
  const architecture = info.architecture || 'unknown';
  const device = info.device ?? '';
  const description = info.description ?? '';
  const software = info.isFallbackAdapter === true ||
    /swiftshader|llvmpipe|lavapipe|softpipe|\bwarp\b|microsoft basic render/i.test(`${architecture} ${device} ${description}`);
  const name = [info.vendor, info.architecture].filter(Boolean).join(' ') || description || 'unknown adapter';
  const text = `webgpu (${name}, ${software ? `software ${info.isFallbackAdapter ? 'fallback ' : ''}adapter` : `hardware adapter${description && !name.includes(description) ? `: ${description}` : ''}`})`;
  return { vendor, architecture, device, description, software, text };
}

/** The adapter tfjs-backend-webgpu would get (it asks for 'high-performance'), described. */
export const probeAdapter: AdapterProbe = async () => {
  const theGpu = dawnGpu();
  const adapter = await theGpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    const ss = findSwiftShader();
    throw new Error(`no WebGPU adapter (no GPU driver Dawn accepts${typeof ss === 'string' ? `, and ${ss}` : ''})`);
  }
  return describeAdapter(adapter.info ?? {});
};

/** Every adapter Dawn offers, for check:gpu: the default (hardware first) and the fallback one. */
export async function listAdapters(): Promise<{ kind: string; adapter?: AdapterDescription; reason?: string }[]> {
  const theGpu = dawnGpu();
  const out: { kind: string; adapter?: AdapterDescription; reason?: string }[] = [];
  for (const [kind, opts] of [
    ['high-performance', { powerPreference: 'high-performance' }],
    ['low-power', { powerPreference: 'low-power' }],
    ['fallback', { forceFallbackAdapter: true }],
  ] as const) {
    try {
      const a = await theGpu.requestAdapter(opts);
      out.push(a ? { kind, adapter: describeAdapter(a.info ?? {}) } : { kind, reason: 'none' });
    } catch (err) {
      out.push({ kind, reason: firstLine(err) });
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The tfjs backend

/** Make a synchronous read on webgpu fail with a sentence that says what to do (Node has no OffscreenCanvas). */
function patchSyncReads(backendModule: any): void {
  const proto = backendModule?.WebGPUBackend?.prototype;
  if (!proto || proto.__syncReadPatched || typeof (globalThis as any).OffscreenCanvas !== 'undefined') return;
  const readSync = proto.readSync;
  proto.readSync = function (this: any, dataId: object) {
    const d = this.tensorMap?.get(dataId);
    // Values still on the CPU (small tensors, strings) are read as before; only a GPU read-back is impossible.
    if (d && d.values == null && d.dtype !== 'string' && d.dtype !== 'complex64') throw new Error(SYNC_READ_ERROR);
    return readSync.call(this, dataId);
  };
  proto.__syncReadPatched = true;
}

/**
 * Start the webgpu backend: probe the adapter, refuse a software one unless allowed, install the globals, import
 * tfjs-backend-webgpu (which registers 'webgpu'), and switch tfjs to it. Returns the adapter (its `text` is the line).
 */
export async function tryWebgpu(opts: { allowSoftware: boolean; probe?: AdapterProbe }): Promise<AdapterDescription> {
  const adapter = await (opts.probe ?? probeAdapter)();
  if (adapter.software && !opts.allowSoftware) throw new Error(SOFTWARE_REFUSAL(adapter));
  setupWebgpuGlobals();
  let mod: any;
  try {
    mod = require('@tensorflow/tfjs-backend-webgpu');
  } catch (err) {
    const msg = firstLine(err);
    throw new Error(/Cannot find module/.test(msg)
      ? '@tensorflow/tfjs-backend-webgpu is not installed (an optional dependency: npm install)'
      : `@tensorflow/tfjs-backend-webgpu does not load: ${msg}`);
  }
  if (!tf.findBackendFactory('webgpu')) {
    throw new Error('@tensorflow/tfjs-backend-webgpu was imported before navigator.gpu existed, so it registered no backend');
  }
  patchSyncReads(mod);
  if (!(await tf.setBackend('webgpu'))) throw new Error('the webgpu backend failed to initialise (requestDevice failed?)');
  return adapter;
}

/** The error a synchronous read raises on webgpu in Node (tests match it). */
export const WEBGPU_SYNC_READ_ERROR = SYNC_READ_ERROR;
