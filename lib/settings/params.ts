// Notebook parameters (our papermill): a notebook's parameters cell declares typed defaults — usually the
// experiment's (lib/settings/config.ts, the same schema `npm start` uses) plus a few of its own — and environment variables
// override them, so CI runs a smoke configuration and a user the full one without editing the notebook.
//
// The variable of a setting is the schema's (`trainLimit` → TRAIN_LIMIT, exactly as for `npm start`); a
// notebook's own keys follow the same rule (`lrFindSteps` → LR_FIND_STEPS). Experiment settings are parsed and
// bounded by the schema; the others by their default's type: decimal numbers, booleans (true/false/yes/no/on/off/
// 1/0), strings as they are.
import { envOf, isBlankDefault, parseSetting, SETTINGS, SettingKey } from './config';
import { initRuntimeContext } from './context';

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

export interface ParamsOptions {
  /** Defaults to process.env, which then also resolves this process's runtime context (lib/settings/context.ts). */
  env?: NodeJS.ProcessEnv;
  /** Print nothing (default: one line listing the effective values, overridden ones marked). */
  quiet?: boolean;
}

/**
 * `defaults` overridden by environment variables (see the naming above); throws one clear line for a value that
 * does not parse. Prints the effective values so an executed notebook records what it ran with. A notebook's
 * parameters cell is its entry point: with the process's own environment this also resolves the runtime context
 * (data, CIFAR-10 and backbone folders, backend) the lib modules then use, so a bad one fails here, before any work.
 */
export function params<T extends Record<string, ParamValue>>(defaults: T, opts: ParamsOptions = {}): Readonly<T> {
  const env = opts.env ?? process.env;
  if (!opts.env) initRuntimeContext(env);
  const out: Record<string, ParamValue> = {};
  const shown: string[] = [];
  for (const [key, def] of Object.entries(defaults)) {
    const name = envOf(key);
    const raw = env[name];
    const overridden = raw !== undefined && !(raw === '' && isBlankDefault(key));
    let value: ParamValue = Array.isArray(def) ? (def.slice() as ParamValue) : def;
    if (overridden) value = key in SETTINGS ? (parseSetting(key as SettingKey, raw, `${name}=${JSON.stringify(raw)}`) as ParamValue) : parseOwn(key, name, raw, def);
    out[key] = value;
    shown.push(`${key}=${Array.isArray(value) ? value.join(',') : JSON.stringify(value)}${overridden ? ` (${name})` : ''}`);
  }
  if (!opts.quiet) console.log(`parameters: ${shown.join(', ')}`);
  return Object.freeze(out) as Readonly<T>;
}
