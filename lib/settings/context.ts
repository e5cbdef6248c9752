// The runtime context: where things are (data, CIFAR-10, backbones, the native build, plots) and which tfjs backend
// to run, resolved ONCE per process from the environment (and, for `npm start`, its flags) and then passed down.
// lib/ modules read it here, never from process.env: the folders and the backend are settings of the schema
// (lib/settings/config.ts: DATA_DIR, CIFAR10_DIR, BACKBONES_DIR, TFJS_BACKEND, parsed and validated like every
// setting), the rest are the few plumbing variables below.
//
// Who resolves it: an entry point that has flags (scripts/main.ts) calls initRuntimeContext(env, config); notebooks
// resolve it in their parameters cell (lib/settings/params.ts); anything else resolves it from process.env the first
// time a lib module asks. Child processes and worker threads get childEnv(): the environment that resolves to the
// same context. Tests point modules at fixtures with withRuntimeContext({ cifar10Dir: ... }, fn).
import * as path from 'path';
import type { ExperimentConfig } from './config';
import { PROJECT_ROOT, userPath } from './paths';

/** The settings of the schema that are part of the context (flags and env vars as for any setting). */
export const CONTEXT_SETTINGS = ['dataDir', 'cifar10Dir', 'backbonesDir', 'backend'] as const;
export type ContextSettings = Pick<ExperimentConfig, (typeof CONTEXT_SETTINGS)[number]>;

/** 'auto' or a backend name (TFJS_BACKEND / --backend). */
export type BackendPreference = ExperimentConfig['backend'];

export interface RuntimeContext {
  /** DATA_DIR (absolute), default <project>/data: downloads, caches, runs, benchmarks. */
  readonly dataDir: string;
  /** CIFAR10_DIR (absolute), when set: read instead of <dataDir>/cifar-10-batches-bin. */
  readonly cifar10Dir?: string;
  /** BACKBONES_DIR (absolute), when set: searched before <dataDir>/models. */
  readonly backbonesDir?: string;
  /** TFJS_BACKEND: 'auto' (the ladder) or the backend to force. */
  readonly backend: BackendPreference;
  /** TFJS_NATIVE_DIR (relative to the project), default <project>/data/native: the native build. */
  readonly nativeDir: string;
  /** TFJS_NATIVE=off: the install skipped the native build on purpose. */
  readonly nativeOff: boolean;
  /** TF_ENABLE_ONEDNN_OPTS=0: TensorFlow's oneDNN kernels are off. */
  readonly oneDnnOff: boolean;
  /** PLOT_DIR (absolute), when set: show() outside a notebook writes figures there. */
  readonly plotDir?: string;
  /** WEBGPU_SWIFTSHADER_DIR (absolute), when set: the only folder searched for SwiftShader's Vulkan driver. */
  readonly swiftshaderDir?: string;
  /** The environment this context was resolved from (a copy): the base of childEnv(). */
  readonly env: Readonly<NodeJS.ProcessEnv>;
}

/**
 * Resolve a context from `env`; `settings` (a resolved configuration: flags over env vars) wins for the schema's
 * keys when given. Throws the schema's one-line error for a bad value (`TFJS_BACKEND="webgpu" is not a backend: ...`).
 */
export function resolveContext(env: NodeJS.ProcessEnv = process.env, settings?: Partial<ContextSettings>): RuntimeContext {
  // Required here: config pulls in the backbones' names only when parsing them, but stays out of light modules' loads.
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { resolveConfig } = require('./config') as typeof import('./config');
  const s: ContextSettings = { ...resolveConfig([], env, CONTEXT_SETTINGS).config, ...settings };
  const nativeDir = env.TFJS_NATIVE_DIR;
  return Object.freeze({
    dataDir: s.dataDir ? userPath(s.dataDir, env) : path.join(PROJECT_ROOT, 'data'),
    cifar10Dir: s.cifar10Dir ? userPath(s.cifar10Dir, env) : undefined,
    backbonesDir: s.backbonesDir ? userPath(s.backbonesDir, env) : undefined,
    backend: s.backend,
    // Must stay under the project: the native package resolves @tensorflow/tfjs upwards.
    nativeDir: nativeDir ? path.resolve(PROJECT_ROOT, nativeDir) : path.join(PROJECT_ROOT, 'data', 'native'),
    nativeOff: env.TFJS_NATIVE === 'off',
    oneDnnOff: env.TF_ENABLE_ONEDNN_OPTS === '0',
    plotDir: env.PLOT_DIR ? path.resolve(env.PLOT_DIR) : undefined,
    swiftshaderDir: env.WEBGPU_SWIFTSHADER_DIR ? path.resolve(env.WEBGPU_SWIFTSHADER_DIR) : undefined,
    env: Object.freeze({ ...env }),
  });
}

let current: RuntimeContext | undefined;

/** This process's context: the one an entry point set, else resolved from process.env on first use. */
export function runtimeContext(): RuntimeContext {
  return (current ??= resolveContext(process.env));
}

/** Resolve this process's context (an entry point, once, before any work) and return it. */
export function initRuntimeContext(env: NodeJS.ProcessEnv = process.env, settings?: Partial<ContextSettings>): RuntimeContext {
  current = resolveContext(env, settings);
  return current;
}

/** Replace this process's context (or forget it with undefined: the next use resolves from process.env again). */
export function setRuntimeContext(ctx: RuntimeContext | undefined): void {
  current = ctx;
}

/**
 * Run `fn` with the current context's fields overridden (tests pointing modules at fixtures), restoring the context
 * afterwards, also when `fn` throws or its promise rejects.
 */
export function withRuntimeContext<T>(overrides: Partial<Omit<RuntimeContext, 'env'>>, fn: () => T): T {
  const saved = current;
  current = Object.freeze({ ...runtimeContext(), ...overrides });
  let result: T;
  try {
    result = fn();
  } catch (err) {
    current = saved;
    throw err;
  }
  if (result instanceof Promise) return result.finally(() => (current = saved)) as T;
  current = saved;
  return result;
}

/**
 * The environment for child processes and worker threads: the context's, with its settings written out (absolute
 * paths) so the child resolves the same context; `extra` on top.
 */
export function childEnv(ctx: RuntimeContext = runtimeContext(), extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...ctx.env };
  const put = (name: string, value: string | undefined) => (value === undefined ? delete env[name] : (env[name] = value));
  put('DATA_DIR', ctx.dataDir === path.join(PROJECT_ROOT, 'data') ? undefined : ctx.dataDir);
  put('CIFAR10_DIR', ctx.cifar10Dir);
  put('BACKBONES_DIR', ctx.backbonesDir);
  put('TFJS_BACKEND', ctx.backend === 'auto' ? undefined : ctx.backend);
  put('PLOT_DIR', ctx.plotDir);
  return { ...env, ...extra };
}

/**
 * Set variables of this process's environment that native code reads at load (TF_CPP_MIN_LOG_LEVEL for
 * libtensorflow), each unless the user set it; children started later inherit them.
 */
export function defaultNativeEnv(vars: Record<string, string>): void {
  const set: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(vars)) {
    if (process.env[name] !== undefined) continue;
    process.env[name] = set[name] = value;
  }
  // Children started from the context's environment inherit them too, as they would have from process.env.
  if (current && Object.keys(set).length) current = Object.freeze({ ...current, env: Object.freeze({ ...current.env, ...set }) });
}

/**
 * Append `item` to a path-list variable of this process's environment that native code reads when it starts
 * (VK_ADD_DRIVER_FILES for the Vulkan loader Dawn creates), keeping what the user set; children inherit it too.
 */
export function appendNativeEnvList(name: string, item: string): void {
  const prev = process.env[name];
  const value = prev ? `${prev}${path.delimiter}${item}` : item;
  process.env[name] = value;
  if (current) current = Object.freeze({ ...current, env: Object.freeze({ ...current.env, [name]: value }) });
}
