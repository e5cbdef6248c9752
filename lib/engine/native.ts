// The native TensorFlow backend that `npm install` builds (scripts/native/install.ts): tfjs-node-gpu 4.22's addon
// compiled from source against libtensorflow from the PyPI TensorFlow wheel, kept under data/native/. This module
// finds it, loads it with TensorFlow's load-time stderr noise captured, and says in words why it is not there.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { defaultNativeEnv, runtimeContext } from '../settings/context';

/** data/native, or TFJS_NATIVE_DIR (must stay under the project: the package resolves @tensorflow/tfjs upwards). */
export function nativeRoot(): string {
  return runtimeContext().nativeDir;
}

/** What the installer wrote into <root>/current.json. */
export interface NativeManifest {
  dir: string;
  flavour: 'cpu' | 'gpu';
  tensorflow: string;
  tfjsNode: string;
  captureAddon?: string | null;
}

/** The loaded tfjs-node module (the union tfjs package plus `node`: loadSavedModel etc.) and what it said. */
export interface NativeBackend {
  tfnode: any;
  manifest: NativeManifest;
  packageDir: string;
  /** TensorFlow's own stderr lines printed while loading (absl/oneDNN notices), when they could be captured. */
  noise: string[];
}

function readJson(file: string): any {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Why the native backend is absent, in a user's words (from the installer's status.json when it left one). */
export function whyNotInstalled(root = nativeRoot()): string {
  const status = readJson(path.join(root, 'status.json'));
  if (status && status.ok === false && typeof status.reason === 'string') return `native TensorFlow not installed: ${status.reason}`;
  if (runtimeContext().nativeOff) return 'native TensorFlow skipped (TFJS_NATIVE=off at install)';
  return 'native TensorFlow not installed (run `npm run setup:native`)';
}

/** Send fd 2 to a temp file while `fn` runs (native code writes there directly), then hand back what was written. */
function withCapturedStderr<T>(addonPath: string | undefined, fn: () => T): { value: T; lines: string[] } {
  let addon: { redirect(fd: number): number; restore(saved: number): void } | undefined;
  try {
    if (addonPath && fs.existsSync(addonPath)) addon = require(addonPath);
  } catch {
    addon = undefined;
  }
  if (!addon) return { value: fn(), lines: [] };
  const file = path.join(os.tmpdir(), `tf-load-${process.pid}-${Date.now()}.log`);
  const fd = fs.openSync(file, 'w+');
  const saved = addon.redirect(fd);
  let value: T;
  try {
    value = fn();
  } finally {
    addon.restore(saved);
    fs.closeSync(fd);
  }
  const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  fs.rmSync(file, { force: true });
  return { value, lines };
}

let loaded: NativeBackend | undefined;

/**
 * Load the installed native backend (once per process). Throws a one-line, user-readable error when it is not
 * installed or does not load. Registers the 'tensorflow' tfjs backend as a side effect.
 */
export function loadNative(root = nativeRoot()): NativeBackend {
  if (loaded) return loaded;
  const manifest = readJson(path.join(root, 'current.json')) as NativeManifest | undefined;
  if (!manifest || typeof manifest.dir !== 'string') throw new Error(whyNotInstalled(root));
  const packageDir = path.resolve(root, manifest.dir);
  if (!fs.existsSync(path.join(packageDir, 'package.json'))) {
    throw new Error(`native TensorFlow install is incomplete (${packageDir} missing; run \`npm run setup:native\`)`);
  }
  // INFO lines (oneDNN notice, CPU feature guard) are noise to a user; warnings and errors still show.
  defaultNativeEnv({ TF_CPP_MIN_LOG_LEVEL: '1' });
  const capture = manifest.captureAddon ? path.resolve(root, manifest.captureAddon) : undefined;
  const { value: tfnode, lines } = withCapturedStderr(capture, () => require(packageDir));
  loaded = { tfnode, manifest, packageDir, noise: lines };
  return loaded;
}

/** The native backend, if loadNative succeeded earlier in this process. */
export function loadedNative(): NativeBackend | undefined {
  return loaded;
}
