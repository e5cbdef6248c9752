// The contract between the native installer (scripts/native/install.ts) and the run-time backend (lib/engine/native.ts).
//
// <native dir>                 data/native, or TFJS_NATIVE_DIR (resolved against the project root). It must stay
//                              inside the project: the built package finds @tensorflow/tfjs, @mapbox/node-pre-gyp,
//                              progress and google-protobuf by walking up to the project's node_modules.
//   current.json               the last build that passed verification (absent: none did). CurrentManifest below.
//   status.json                how the last install attempt ended: { ok: false, reason, at } or { ok: true, ... }.
//   install.log                full output (npm pack, pip, node-gyp) of the last attempt that built something.
//   wheels/                    downloaded wheels, reused by the next build.
//   tfjs-node-gpu-<v>-tf<v>-<flavour>/   a complete, verified package: require() it.
//     native-build.json        the build's own manifest; written last, before the folder is renamed into place.
//     stderr-capture/stderr_capture.node   the fd-2 redirect addon (optional).
//   *.tmp-<pid>, *.old-<pid>   work in progress / being replaced; never referenced, removed by the next install.
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../../lib/util/atomic';
import { PROJECT_ROOT } from '../../lib/settings/paths';

export const TFJS_NODE_VERSION = '4.22.0';
export const TENSORFLOW_VERSION = '2.21.0';

export type Flavour = 'cpu' | 'gpu';

/** data/native/current.json. Paths are relative to the native dir. */
export interface CurrentManifest {
  dir: string;
  flavour: Flavour;
  tensorflow: string;
  tfjsNode: string;
  /** process.version of the Node that built it (N-API addons keep working across minor versions). */
  node: string;
  /** N-API version the addon was compiled for (lib/napi-v<napi>/tfjs_binding.node). */
  napi: number;
  builtAt: string;
  /** The stderr-capture addon, relative to the native dir, or null when it did not build. */
  captureAddon: string | null;
}

/** <package>/native-build.json: the same facts, with paths relative to the package, plus what went into it. */
export interface BuildManifest extends Omit<CurrentManifest, 'dir' | 'captureAddon'> {
  captureAddon: string | null;
  wheel: string;
  /** The nvidia-*-cu12 wheels installed into deps/nvidia (gpu flavour only). */
  cudaWheels: string[];
}

export type Status =
  | { ok: false; reason: string; at: string }
  | { ok: true; at: string; dir: string; flavour: Flavour; tensorflow: string; gpuUsed: boolean; note: string | null };

export { PROJECT_ROOT };

/** data/native, or TFJS_NATIVE_DIR resolved against the project root (same rule as lib/engine/native.ts). */
export function nativeRoot(env = process.env): string {
  return env.TFJS_NATIVE_DIR ? path.resolve(PROJECT_ROOT, env.TFJS_NATIVE_DIR) : path.join(PROJECT_ROOT, 'data', 'native');
}

export function packageDirName(flavour: Flavour): string {
  return `tfjs-node-gpu-${TFJS_NODE_VERSION}-tf${TENSORFLOW_VERSION}-${flavour}`;
}

export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function writeStatus(root: string, status: Status): void {
  writeJsonAtomic(path.join(root, 'status.json'), status);
}

export function writeCurrent(root: string, current: CurrentManifest): void {
  writeJsonAtomic(path.join(root, 'current.json'), current);
}

/** The Node major a manifest was built with: N-API addons load on any Node >= that, but we rebuild on a major change. */
export function nodeMajor(version: string): number {
  return Number(/^v?(\d+)/.exec(version)?.[1] ?? NaN);
}

// ---- TensorFlow's stderr, condensed -------------------------------------------------------------------------------

// glog/absl prefixes: "2025-12-01 18:40:00.123: I tensorflow/core/x.cc:12] msg" (older TF) and
// "E0000 00:00:1796150884.508739   18679 cuda_platform.cc:52] msg" (absl: level, MMDD, time, thread, file:line).
const LOG_PREFIX = /^(?:\d{4}-\d\d-\d\d [\d:.]+: )?[IWEF](?:\d{4} [\d:.]+\s+\d+)?\s*[\w./+-]+:\d+\]\s*/;

/** TensorFlow's stderr as plain messages: prefixes stripped, blank lines dropped. */
export function tfMessages(stderr: string): string[] {
  return stderr
    .split('\n')
    .map((l) => l.replace(LOG_PREFIX, '').trim())
    .filter((l) => l !== '');
}

// Most telling first: the line that says a GPU build will not use the GPU, then why libraries or the driver failed.
const GPU_REASONS = [/GPU will not be used/i, /Cannot dlopen some GPU libraries/i, /cuInit/i, /Could not load dynamic library/i, /cuda|cudnn|libcu|GPU/i];

/** One line saying why a GPU build runs on the CPU, in TensorFlow's own words, or null if it did not say. */
export function gpuFallbackReason(stderr: string): string | null {
  const messages = tfMessages(stderr).filter((m) => !/cpu_feature_guard|oneDNN custom operations/i.test(m));
  for (const pattern of GPU_REASONS) {
    const hit = messages.find((m) => pattern.test(m));
    if (hit) return oneLine(hit);
  }
  return null;
}

/** First line, whitespace collapsed, at most `max` characters. */
export function oneLine(text: string, max = 240): string {
  const line = (text.split('\n').find((l) => l.trim() !== '') ?? '').replace(/\s+/g, ' ').trim();
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}
