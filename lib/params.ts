// Notebook parameters (our papermill): a notebook's parameters cell declares typed defaults, and environment
// variables override them, so CI runs a smoke configuration (`npm run notebooks -- -p NB_TRAIN_LIMIT=2000`, or
// plain env vars) and a user the full one, without editing the notebook.
//
// Naming: NB_ + the key in UPPER_SNAKE_CASE: trainLimit → NB_TRAIN_LIMIT, backbone → NB_BACKBONE,
// imageSize → NB_IMAGE_SIZE, useTTA → NB_USE_TTA, top5 → NB_TOP5.
// Parsing follows the default's type: number ("2000", "1e-3"), boolean (true/false/1/0/yes/no/on/off),
// string (as is). An empty variable counts as unset.

export type ParamValue = string | number | boolean;

/** The environment variable that overrides parameter `key`. */
export function paramEnvName(key: string, prefix = 'NB_'): string {
  const snake = key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_');
  return prefix + snake.toUpperCase();
}

function parseValue(key: string, envName: string, raw: string, def: ParamValue): ParamValue {
  const v = raw.trim();
  const bad = (what: string) =>
    new Error(`parameter ${key}: ${envName}=${JSON.stringify(raw)} is not ${what} (default ${JSON.stringify(def)})`);
  if (typeof def === 'number') {
    const n = Number(v);
    if (v === '' || !Number.isFinite(n)) throw bad('a number');
    return n;
  }
  if (typeof def === 'boolean') {
    if (/^(true|1|yes|on)$/i.test(v)) return true;
    if (/^(false|0|no|off)$/i.test(v)) return false;
    throw bad('a boolean (true/false/1/0/yes/no/on/off)');
  }
  return raw;
}

export interface ParamsOptions {
  /** Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
  prefix?: string;
  /** Print nothing (default: one line listing the effective values, overridden ones marked). */
  quiet?: boolean;
}

/**
 * `defaults` overridden by NB_* environment variables (see the naming above); throws one clear line for a value
 * that does not parse as the default's type. Prints the effective values so an executed notebook records them.
 */
export function params<T extends Record<string, ParamValue>>(defaults: T, opts: ParamsOptions = {}): Readonly<T> {
  const env = opts.env ?? process.env;
  const out: Record<string, ParamValue> = {};
  const shown: string[] = [];
  for (const [key, def] of Object.entries(defaults)) {
    if (!['string', 'number', 'boolean'].includes(typeof def)) {
      throw new Error(`parameter ${key}: default must be a string, number or boolean, got ${typeof def}`);
    }
    const name = paramEnvName(key, opts.prefix);
    const raw = env[name];
    const overridden = raw !== undefined && raw !== '';
    out[key] = overridden ? parseValue(key, name, raw, def) : def;
    shown.push(`${key}=${JSON.stringify(out[key])}${overridden ? ` (${name})` : ''}`);
  }
  if (!opts.quiet) console.log(`parameters: ${shown.join(', ')}`);
  return Object.freeze(out) as Readonly<T>;
}
