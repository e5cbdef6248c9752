// Notebook parameters (our papermill): a notebook's parameters cell declares typed defaults — usually the
// experiment's (lib/settings/config.ts, the same schema `npm start` uses) plus a few of its own — and environment variables
// override them, so CI runs a smoke configuration and a user the full one without editing the notebook.
//
// The variable of a setting is the schema's (`trainLimit` → TRAIN_LIMIT, exactly as for `npm start`); a
// notebook's own keys follow the same rule (`lrFindSteps` → LR_FIND_STEPS). Experiment settings are parsed and
// bounded by the schema; the others by their default's type: decimal numbers, booleans (true/false/yes/no/on/off/
// 1/0), strings as they are.
import { envOf, isBlankDefault, parseSetting, SETTINGS, SettingKey } from './config';
import * as path from 'path';
import { CONTEXT_SETTINGS, ContextSettings, initRuntimeContext } from './context';

export type ParamValue = string | number | boolean | string[] | number[] | null;

/** The environment variable that overrides parameter `key`. */
export const paramEnvName = envOf;

function parseOwn(key: string, name: string, raw: string, def: ParamValue): ParamValue {
  const v = raw.trim();
  const bad = (what: string) => new Error(`parameter ${key}: ${name}=${JSON.stringify(raw)} is not ${what} (default ${JSON.stringify(def)})`);
  if (typeof def === 'number') {
    if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)) throw bad('a decimal number');
    return Number(v);
  }
  if (typeof def === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(v)) return true;
    if (/^(false|0|no|off)$/i.test(v)) return false;
    throw bad('a boolean (true/false/1/0/yes/no/on/off)');
  }
  if (Array.isArray(def)) return v.split(',').map((x) => x.trim()).filter(Boolean);
  return raw;
}

export interface ParamsOptions<T = Record<string, ParamValue>> {
  /** Defaults to process.env, which then also resolves this process's runtime context (lib/settings/context.ts). */
  env?: NodeJS.ProcessEnv;
  /** Print nothing (default: the effective values, each marked with where it came from, and a line on changing them). */
  quiet?: boolean;
  /**
   * Values set from inside the notebook, e.g. `{ set: { trainLimit: 2000 } }`: a JupyterLab kernel reads the
   * environment once, when it starts, so this is how a Lab user changes a setting without restarting it. Typed like the
   * defaults and checked like an env var's value; they win over the environment (the cell is what the user just
   * typed). Besides the notebook's own keys, the runtime context's (`cifar10Dir`, `backbonesDir`, `dataDir`, `backend`)
   * may always be set: they say where the data and weights are for every later cell.
   */
  set?: Partial<T> & Partial<ContextSettings>;
}

/** What a value set from a notebook is checked as: the text an env var would hold. */
function asRaw(v: ParamValue): string {
  return Array.isArray(v) ? v.join(',') : String(v);
}

/** A value from `set`, checked against the schema (experiment settings) or its default's type (a notebook's own). */
function parseSet(key: string, v: unknown, def: ParamValue | undefined): ParamValue {
  const where = `params: set ${key}=${JSON.stringify(v)}`;
  const schemaDefault = key in SETTINGS ? (SETTINGS[key as SettingKey].default as ParamValue) : def;
  if (v === null || v === undefined) {
    if (schemaDefault === null) return null;
    throw new Error(`${where}: expected a value (only settings whose default is null take null)`);
  }
  if (key in SETTINGS) return parseSetting(key as SettingKey, asRaw(v as ParamValue), where) as ParamValue;
  const want = Array.isArray(def) ? 'array' : def === null ? typeof v : typeof def;
  const got = Array.isArray(v) ? 'array' : typeof v;
  if (want !== got || (got === 'number' && !Number.isFinite(v))) throw new Error(`${where}: expected ${want === 'array' ? 'a list' : `a ${want}`} like its default ${JSON.stringify(def)}`);
  return Array.isArray(v) ? (v.slice() as ParamValue) : (v as ParamValue);
}

const show = (v: ParamValue) => (Array.isArray(v) ? v.join(',') : JSON.stringify(v));

/**
 * `defaults` overridden by environment variables (see the naming above), and both by `opts.set`; throws one clear
 * line for a value that does not parse or a key the notebook does not have. Prints the effective values so an executed
 * notebook records what it ran with, each marked with where it came from:
 *
 *   parameters: trainLimit=2000 (env TRAIN_LIMIT), epochs=3 (set in notebook), resolution=160, ...
 *     from the environment: TRAIN_LIMIT=2000, CIFAR10_DIR=...; set in the notebook: epochs; 25 defaults; folders: ...
 *
 * (unmarked = the notebook's default; lib/jupyter/report.ts `printedParams` reads the first line back). A notebook's
 * parameters cell is its entry point: with the process's own environment this also resolves the runtime context
 * (data, CIFAR-10 and backbone folders, backend; `set` may name them too) the lib modules then use, so a bad one fails
 * here, before any work.
 */
export function params<T extends Record<string, ParamValue>>(defaults: T, opts: ParamsOptions<T> = {}): Readonly<T> {
  const env = opts.env ?? process.env;
  const set = (opts.set ?? {}) as Record<string, unknown>;
  for (const key of Object.keys(set)) {
    if (!(key in defaults) && !(CONTEXT_SETTINGS as readonly string[]).includes(key)) {
      throw new Error(`params: set ${key}: not a parameter of this notebook (its parameters: ${Object.keys(defaults).join(', ')}; or ${CONTEXT_SETTINGS.join(', ')})`);
    }
  }
  const setValues: Record<string, ParamValue> = {};
  for (const [key, v] of Object.entries(set)) setValues[key] = parseSet(key, v, defaults[key]);
  const contextSet: Partial<ContextSettings> = {};
  for (const k of CONTEXT_SETTINGS) if (k in setValues) (contextSet as Record<string, unknown>)[k] = setValues[k];
  const ctx = opts.env ? undefined : initRuntimeContext(env, contextSet);

  const out: Record<string, ParamValue> = {};
  const shown: string[] = [];
  const fromEnv: string[] = [];
  const fromSet: string[] = [];
  for (const [key, def] of Object.entries(defaults)) {
    const name = envOf(key);
    const raw = env[name];
    const overridden = raw !== undefined && !(raw === '' && isBlankDefault(key));
    let value: ParamValue = Array.isArray(def) ? (def.slice() as ParamValue) : def;
    let mark = '';
    if (key in setValues) {
      value = setValues[key];
      // The env var is still checked: a bad value in the environment is a mistake worth one line either way.
      if (overridden) key in SETTINGS ? parseSetting(key as SettingKey, raw, `${name}=${JSON.stringify(raw)}`) : parseOwn(key, name, raw, def);
      mark = ` (set in notebook${overridden ? `; ${name}=${raw} ignored` : ''})`;
      fromSet.push(key);
    } else if (overridden) {
      value = key in SETTINGS ? (parseSetting(key as SettingKey, raw, `${name}=${JSON.stringify(raw)}`) as ParamValue) : parseOwn(key, name, raw, def);
      mark = ` (env ${name})`;
      fromEnv.push(`${name}=${raw}`);
    }
    out[key] = value;
    shown.push(`${key}=${show(value)}${mark}`);
  }
  if (!opts.quiet) {
    // The runtime context's folders, wherever they came from, unless the line above already shows them.
    const folders = ctx
      ? ([['cifar10Dir', ctx.cifar10Dir, path.join(ctx.dataDir, 'cifar-10-batches-bin')], ['backbonesDir', ctx.backbonesDir, path.join(ctx.dataDir, 'models')], ['dataDir', ctx.dataDir, ctx.dataDir]] as const)
        .filter(([k]) => !(k in defaults))
        .map(([k, v, fallback]) => {
          const name = envOf(k);
          const from = k in setValues ? 'set in notebook' : env[name] ? `env ${name}` : 'default';
          return `${name}=${v ?? fallback} (${from})`;
        })
      : [];
    const defaultsCount = Object.keys(defaults).length - fromEnv.length - fromSet.length;
    console.log(`parameters: ${shown.join(', ')}`);
    console.log(
      `  from the environment: ${fromEnv.length ? fromEnv.join(', ') : 'none'}; set in the notebook: ${fromSet.length ? fromSet.join(', ') : 'none'}; ` +
      `${defaultsCount} default${defaultsCount === 1 ? '' : 's'}${folders.length ? `; folders: ${folders.join(', ')}` : ''}. ` +
      'Env vars are read when the kernel starts: to change a value without restarting it, pass params(..., { set: { name: value } }).',
    );
  }
  return Object.freeze(out) as Readonly<T>;
}
