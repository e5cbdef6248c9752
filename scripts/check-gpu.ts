// `npm run check:gpu`: one table of the GPU routes this machine has, and which backend `npm start` would use.
//
//   CUDA    through the TensorFlow wheel (the native backend): which flavour the installed build is, whether an
//           NVIDIA driver is visible, what cuInit said, and binding.isUsingGpuDevice(). Nothing is dlopen()ed here:
//           the driver is looked for as files (/proc/driver/nvidia/version, nvidia-smi on PATH, libcuda.so.1 in
//           `ldconfig -p` and the usual folders), and cuInit is only ever called by TensorFlow itself, whose words
//           we quote (the installed GPU build, or data/native-gpu-check's, loaded in a child process).
//   WebGPU  through Dawn (npm webgpu): the Vulkan loader and SwiftShader driver found, and every adapter Dawn offers,
//           hardware or software (lib/engine/webgpu.ts).
//   npm start: the backend ladder itself (lib/engine/backend.ts), run once, with its one-line reason.
//
// Read-only and quick (a second or two; loading the GPU check build takes longer). Always exits 0: it reports.
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { loadedNative, loadNative, nativeRoot } from '../lib/engine/native';
import { LINKER_FOUND, listAdapters, setupVulkan } from '../lib/engine/webgpu';
import { formatTable } from '../lib/util/format';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { CurrentManifest, gpuFallbackReason, readJson, tfMessages } from './native/manifest';
import { which } from './native/prereqs';
import { probe } from './native/verify';
import { spawnSync } from 'child_process';

type Row = [string, string, string];
const rows: Row[] = [];
const add = (route: string, check: string, result: string) => rows.push([route, check, result]);
const rel = (p: string) => path.relative(PROJECT_ROOT, p) || '.';
const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split('\n')[0];

/** Folders where distributions and container runtimes put the NVIDIA driver's libcuda.so.1. */
const LIBCUDA_DIRS = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/lib/wsl/lib', '/usr/local/nvidia/lib64'];

/** The NVIDIA driver, looked for without loading anything. */
function nvidiaDriver(): { found: string[]; checked: string } {
  const found: string[] = [];
  const version = '/proc/driver/nvidia/version';
  if (fs.existsSync(version)) found.push(`${version}: ${fs.readFileSync(version, 'utf8').split('\n')[0].replace(/\s+/g, ' ').trim()}`);
  const smi = which('nvidia-smi');
  if (smi) found.push(`nvidia-smi at ${smi}`);
  let ldconfig = 'ldconfig -p not available';
  for (const cmd of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const r = spawnSync(cmd, ['-p'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status !== 0) continue;
    const hit = r.stdout.split('\n').find((l) => /\blibcuda\.so\.1\b/.test(l));
    ldconfig = 'ldconfig -p';
    if (hit) found.push(`ldconfig -p: ${hit.trim()}`);
    break;
  }
  for (const dir of LIBCUDA_DIRS) {
    const f = path.join(dir, 'libcuda.so.1');
    if (fs.existsSync(f)) found.push(f);
  }
  return { found: [...new Set(found)], checked: `${version}, nvidia-smi on PATH, libcuda.so.1 in ${ldconfig} and ${LIBCUDA_DIRS.join(', ')}` };
}

/** cuInit, in TensorFlow's words, from a GPU build's load: the one in use, or data/native-gpu-check's (child process). */
async function cuInit(current: CurrentManifest | undefined): Promise<string> {
  const native = loadedNative();
  if (current?.flavour === 'gpu' && native) {
    const line = native.noise.map((l) => tfMessages(l)[0] ?? '').find((m) => /cuInit/i.test(m));
    return line ? `TensorFlow (installed GPU build): ${line}` : 'TensorFlow (installed GPU build) reported no cuInit failure';
  }
  const checkRoot = path.join(PROJECT_ROOT, 'data', 'native-gpu-check');
  const check = readJson<CurrentManifest>(path.join(checkRoot, 'current.json'));
  if (check?.flavour === 'gpu') {
    const p = await probe(path.join(checkRoot, check.dir), check.captureAddon ? path.join(checkRoot, check.captureAddon) : null);
    if (!p.ok) return `${rel(checkRoot)}'s GPU build did not load: ${p.error}`;
    const line = tfMessages(p.tfLog).find((m) => /cuInit/i.test(m));
    return p.gpu ? `${rel(checkRoot)}'s GPU build: succeeded (a GPU is in use)` : `${rel(checkRoot)}'s GPU build: ${line ?? gpuFallbackReason(p.tfLog) ?? 'failed, TensorFlow did not say why'}`;
  }
  return `not called: the installed build is the ${current?.flavour ?? 'missing'} flavour and there is no GPU build in ${rel(checkRoot)} (npm run check:native-gpu builds one)`;
}

/** binding.isUsingGpuDevice() of the native backend, loading it if the ladder did not (e.g. TFJS_BACKEND=wasm). */
async function askBinding(): Promise<string> {
  let backend = tf.findBackend('tensorflow') as any;
  if (!backend) {
    const chosen = tf.getBackend();
    try {
      loadNative();
      if (await tf.setBackend('tensorflow')) backend = tf.backend();
    } catch (err) {
      return `not asked: ${firstLine(err)}`;
    } finally {
      if (chosen && tf.getBackend() !== chosen) await tf.setBackend(chosen);
    }
  }
  const binding = backend?.binding;
  return binding && typeof binding.isUsingGpuDevice === 'function'
    ? `${binding.isUsingGpuDevice()} (libtensorflow ${binding.TF_Version})`
    : 'not asked: the native backend has no binding';
}

async function main(): Promise<void> {
  // npm start's choice first: it loads the native addon (so its binding and notices are there to read) and Dawn.
  const lines: string[] = [];
  let choice = '';
  try {
    const c = await initBackend({ log: (l) => lines.push(l), warn: (l) => lines.push(l) });
    choice = c.name;
  } catch (err) {
    lines.push(firstLine(err));
  }

  // ---- CUDA through the TensorFlow wheel
  const root = nativeRoot();
  const current = readJson<CurrentManifest>(path.join(root, 'current.json'));
  add('CUDA (TensorFlow wheel)', 'native build', current
    ? `${current.flavour === 'gpu' ? 'GPU flavour (tensorflow wheel + nvidia-*-cu12 wheels)' : 'CPU flavour (tensorflow-cpu wheel): no CUDA in it'}, TF ${current.tensorflow}, ${rel(path.join(root, current.dir))}`
    : `none in ${rel(root)} (npm run setup:native)`);
  const driver = nvidiaDriver();
  add('', 'NVIDIA driver', driver.found.length ? driver.found.join('; ') : `none (checked ${driver.checked})`);
  const usingGpu = await askBinding(); // first: it loads the native build if the ladder did not, for cuInit's lines
  add('', 'cuInit', await cuInit(current));
  add('', 'isUsingGpuDevice()', usingGpu);

  // ---- WebGPU through Dawn
  try {
    const v = setupVulkan();
    add('WebGPU (Dawn)', 'Vulkan loader', v.loader === LINKER_FOUND ? 'libvulkan.so.1 found by the dynamic linker (the system\'s, or LD_LIBRARY_PATH)' : `${v.loader} (preloaded by absolute path: the dynamic linker finds none)`);
    add('', 'SwiftShader driver', typeof v.swiftshader === 'string' ? v.swiftshader : `${v.swiftshader.libDir}/libvk_swiftshader.so (its ICD json copied with an absolute library_path into a private temp folder, added with VK_ADD_DRIVER_FILES)`);
    const adapters = await listAdapters();
    for (const a of adapters) {
      add('', `adapter (${a.kind})`, a.adapter
        ? `${a.adapter.software ? 'SOFTWARE' : 'HARDWARE'}: vendor ${a.adapter.vendor}, architecture ${a.adapter.architecture}, device ${a.adapter.device || '-'}, "${a.adapter.description}"`
        : a.reason ?? 'none');
    }
    const hardware = adapters.some((a) => a.adapter && !a.adapter.software);
    add('', 'usable by the ladder', hardware ? 'yes: a hardware adapter' : 'no: no hardware adapter (a software one is used only with TFJS_BACKEND=webgpu)');
  } catch (err) {
    add('WebGPU (Dawn)', 'Dawn / Vulkan', firstLine(err));
  }

  // ---- what npm start runs
  add('npm start', 'backend', choice || 'none could start');
  for (const l of lines) add('', 'why', l.replace(/^tfjs backend: /, ''));

  console.log(formatTable(['route', 'check', 'result'], rows));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(`check-gpu: ${(err as Error).stack ?? err}`);
    process.exit(0);
  },
);
