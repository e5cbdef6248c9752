// The experiment's settings, declared once: name, type, default, bounds, help and the environment variable that
// sets it. `npm start` flags and `--help`, the notebooks' parameter cells and the README's table all come from this
// schema, every value is parsed strictly and validated before any data is loaded, and errors name what the user
// actually set (`--epochs=abc`, `EPOCHS=abc`). The resolved configuration travels typed (arrays, booleans, numbers)
// into the run log and the saved model's metadata.
import { parseView } from '../data/augment';
import type { BackboneName } from '../features/backbones';

/** Arithmetic of the fine-tuned blocks in the training step (lib/engine/train-graph.ts). */
export const TRUNK_PRECISIONS = ['float32', 'bfloat16'] as const;
export type TrunkPrecision = (typeof TRUNK_PRECISIONS)[number];

type Kind = 'int' | 'number' | 'bool' | 'backbones' | 'views' | 'path' | 'blocks' | 'choice';

interface Spec<K extends Kind, T> {
  kind: K;
  default: T;
  help: string;
  /** Inclusive bounds for numbers; `above` is an exclusive lower bound. */
  min?: number;
  max?: number;
  above?: number;
  /** Shown in --help instead of the default (e.g. "all 45,000"). */
  defaultText?: string;
  /** The env var, when it is not the key in UPPER_SNAKE_CASE. */
  env?: string;
  /** The allowed values of a 'choice'. */
  choices?: readonly string[];
  /** What a value of a 'choice' is, for its error ("TFJS_BACKEND=\"webgpu\" is not a backend: expected one of ..."). */
  noun?: string;
  /** An empty value (`CIFAR10_DIR=`) means the default, as an unset variable does. */
  blankIsDefault?: boolean;
}

const int = (default_: number, help: string, b: Pick<Spec<'int', number>, 'min' | 'max' | 'defaultText'> = {}): Spec<'int', number> => ({ kind: 'int', default: default_, help, min: 0, ...b });
const num = <T extends number | null>(default_: T, help: string, b: Pick<Spec<'number', T>, 'min' | 'max' | 'above' | 'defaultText'> = {}): Spec<'number', T> => ({ kind: 'number', default: default_, help, ...b });
const bool = (default_: boolean, help: string): Spec<'bool', boolean> => ({ kind: 'bool', default: default_, help });
const choice = <T extends string>(choices: readonly T[], default_: T, help: string): Spec<'choice', T> => ({ kind: 'choice', default: default_, help, choices });
/** A folder of the runtime context (lib/settings/context.ts): where things are, not what the experiment does. */
const folder = (env: string, help: string, defaultText: string): Spec<'path', string | null> => ({ kind: 'path', default: null, env, help, defaultText, blankIsDefault: true });

/** The tfjs backends, fastest first (lib/engine/backend.ts tries them in this order). */
export const BACKEND_NAMES = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;

/** Every setting of the experiment. Keys are camelCase; the flag is --kebab-case and the env var UPPER_SNAKE_CASE. */
export const SETTINGS = {
  dataset: { kind: 'path', default: 'cifar10', help: 'cifar10, or a folder of your images: one subfolder per class, or train/ (+ val/, test/) each holding class subfolders' } as Spec<'path', string>,
  fit: choice(['cover', 'contain'] as const, 'cover', 'folder datasets: how an image becomes a square at the backbone input: cover = centre-crop, contain = pad with black'),
  valFraction: num(0.15, 'folder datasets without val/: share of each class held out for validation (stratified, seeded)', { min: 0.01, max: 0.5 }),
  testFraction: num(0.15, 'folder datasets without test/: share of each class held out for test', { min: 0.01, max: 0.5 }),
  trainLimit: int(0, 'stratified cap on training images (0 = all)', { defaultText: '0 = all 45,000' }),
  valLimit: int(0, 'stratified cap on validation images (0 = all)', { defaultText: '0 = all 5,000' }),
  testLimit: int(0, 'use test images 0..N-1 only (0 = all)', { defaultText: '0 = all 10,000' }),
  backbones: { kind: 'backbones', default: ['mobilenet_v1_0.75', 'mobilenet_v2'] as BackboneName[], help: 'comma list of backbones, features concatenated in this order' } as Spec<'backbones', BackboneName[]>,
  resolution: int(160, 'backbone input size in pixels', { min: 32, max: 1024 }),
  views: { kind: 'views', default: ['plain'], help: 'cached training views sampled per epoch (plain, flip, aug<k>; plain,flip adds a cold extraction of the training set)' } as Spec<'views', string[]>,
  tta: bool(true, 'average plain + flipped predictions at evaluation (test-time augmentation)'),
  splitSeed: int(42, 'seed of the validation split (fixed: every run holds out the same 5,000 images)'),
  seed: int(1, 'seed of head initialisation, sampling and dropout'),
  sweepEpochs: int(5, 'epochs per run of the 4 x 2 learning-rate x dropout sweep (0 skips it; then give --lr and --dropout)'),
  sweepImages: int(10000, 'stratified subset of the training features each sweep run uses (0 = all)'),
  epochs: int(15, 'final training epochs (early stopping restores the best)', { min: 1 }),
  units: int(256, 'hidden units of the head', { min: 1 }),
  batchSize: int(256, 'mini-batch size', { min: 2 }),
  lr: num<number | null>(null, "the head's learning rate", { above: 0, defaultText: 'the sweep winner (frozen); 0.001 (fine-tuning)' }),
  dropout: num<number | null>(null, "the head's dropout rate", { min: 0, max: 0.95, defaultText: 'the sweep winner (frozen); 0.35 (fine-tuning)' }),
  workers: num<number | null>(null, 'wasm feature-extraction worker threads (0 = in this thread)', { min: 0, defaultText: 'CPU cores on wasm' }),
  trainableBlocks: { kind: 'blocks', default: null, defaultText: 'auto', help: 'top blocks of each backbone that fine-tune, a comma list in --backbones order (0 = frozen); auto = the best regime that fits --budget-minutes' } as Spec<'blocks', number[] | null>,
  fineTuneEpochs: int(12, 'epochs of fine-tuning (cosine schedule over them; early stopping restores the best)', { min: 1 }),
  fineTuneBatchSize: int(128, 'mini-batch size of fine-tuning', { min: 2 }),
  backboneLr: num(1e-4, 'learning rate of the fine-tuned backbone blocks (the head keeps --lr)', { above: 0 }),
  trunkPrecision: choice(['auto', ...TRUNK_PRECISIONS] as const, 'auto', 'arithmetic of the fine-tuned blocks in the training step: float32, bfloat16 (weights, head and inference stay float32), auto = bfloat16 where the CPU has bfloat16 instructions'),
  retrain: bool(false, 'fine-tune again even when the cache holds weights trained from the same images, backbones and settings'),
  budgetMinutes: num(25, 'wall-time budget of npm start in minutes: with --trainable-blocks auto, the best regime whose estimate fits', { above: 0 }),
  endToEnd: int(0, 'also compare cached views with end-to-end augmentation on N training images (0 skips it)'),
  e2eEpochs: int(5, 'epochs of the end-to-end comparison', { min: 1 }),
  models: { kind: 'path', default: null, env: 'MODELS_DIR', help: 'where saved models are kept: each run in <models>/<model id>/, the current one named in <models>/current.json', defaultText: 'models' } as Spec<'path', string | null>,
  model: { kind: 'path', default: null, env: 'MODEL', help: 'the saved model that notebook 06, predict, the report, the demo and the Keras export load: current, a model id, or a model folder', defaultText: 'current' } as Spec<'path', string | null>,
  // The runtime context (lib/settings/context.ts): where things are and what runs them, resolved once per process.
  dataDir: folder('DATA_DIR', 'where downloads, feature caches, fine-tuned weights, runs and benchmarks go (relative to the folder you run from)', 'data'),
  cifar10Dir: folder('CIFAR10_DIR', 'a cifar-10-batches-bin folder to read instead of the copy downloaded under the data folder', 'data/cifar-10-batches-bin'),
  backbonesDir: folder('BACKBONES_DIR', "folder holding the backbones' weights (<backbone folder>/model.json), searched before the data folder's models/", 'data/models'),
  backend: { ...choice(['auto', ...BACKEND_NAMES] as const, 'auto', 'tfjs backend; auto = the fastest that starts: tensorflow on a GPU > webgpu on a hardware GPU > tensorflow on the CPU (native, built by npm install) > wasm > cpu; webgpu on a software adapter (SwiftShader) only when forced'), env: 'TFJS_BACKEND', noun: 'a backend', blankIsDefault: true },
};

export type SettingKey = keyof typeof SETTINGS;
type ValueOf<S> = S extends Spec<Kind, infer T> ? T : never;
/** The resolved, typed configuration. */
export type ExperimentConfig = { -readonly [K in SettingKey]: ValueOf<(typeof SETTINGS)[K]> };

export const flagOf = (key: string): string => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
export const envOf = (key: string): string =>
  (SETTINGS as Record<string, Spec<Kind, unknown>>)[key]?.env ??
  key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2').replace(/[^A-Za-z0-9]+/g, '_').toUpperCase();

/** The defaults, as a fresh mutable object. */
export function defaultConfig(): ExperimentConfig {
  const out: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(SETTINGS)) out[k] = Array.isArray(s.default) ? [...s.default] : s.default;
  return out as ExperimentConfig;
}

/** Whether an empty value of `key`'s env var means its default (the runtime context's folders and backend). */
export const isBlankDefault = (key: string): boolean => (SETTINGS as Record<string, Spec<Kind, unknown>>)[key]?.blankIsDefault === true;

/** Decimal integers and numbers only: no empty strings, hex, binary, octal or trailing junk. */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Parse and validate one raw value; `where` names what the user set (`--epochs=abc`, `EPOCHS=abc`). */
export function parseSetting<K extends SettingKey>(key: K, raw: string, where: string): ExperimentConfig[K] {
  const s = SETTINGS[key] as Spec<Kind, unknown>;
  const v = raw.trim();
  const fail = (expected: string): never => {
    throw new Error(`${where}: expected ${expected}`);
  };
  const bounds = () =>
    [s.above !== undefined ? `> ${s.above}` : s.min !== undefined ? `>= ${s.min}` : '', s.max !== undefined ? `<= ${s.max}` : '']
      .filter(Boolean).join(' and ');
  const inBounds = (x: number) =>
    (s.above === undefined || x > s.above) && (s.min === undefined || x >= s.min) && (s.max === undefined || x <= s.max);
  switch (s.kind) {
    case 'int': {
      if (!/^[+-]?\d+$/.test(v)) fail(`a whole number${bounds() ? ` ${bounds()}` : ''}`);
      const x = Number(v);
      if (!inBounds(x)) fail(`a whole number ${bounds()}`);
      return x as ExperimentConfig[K];
    }
    case 'number': {
      if (!DECIMAL.test(v)) fail(`a number${bounds() ? ` ${bounds()}` : ''}`);
      const x = Number(v);
      if (!Number.isFinite(x) || !inBounds(x)) fail(`a number ${bounds()}`);
      if (key === 'workers' && !Number.isInteger(x)) fail('a whole number >= 0');
      return x as ExperimentConfig[K];
    }
    case 'bool':
      if (/^(true|1|yes|on)$/i.test(v)) return true as ExperimentConfig[K];
      if (/^(false|0|no|off)$/i.test(v)) return false as ExperimentConfig[K];
      return fail('true/false, yes/no, on/off or 1/0');
    case 'backbones': {
      const names = v.split(',').map((x) => x.trim()).filter(Boolean);
      // Required here, not at the top: the settings stay light to load (no tfjs) for the modules that only need folders.
      // eslint-disable-next-line @typescript-eslint/no-var-requires
      const known = Object.keys((require('../features/backbones') as typeof import('../features/backbones')).BACKBONES);
      if (!names.length || names.some((n) => !known.includes(n))) fail(`a comma list of ${known.join(', ')}`);
      if (new Set(names).size !== names.length) fail('each backbone once');
      return names as ExperimentConfig[K];
    }
    case 'blocks': {
      if (/^auto$/i.test(v)) return null as ExperimentConfig[K];
      const parts = v.split(',').map((x) => x.trim());
      if (!parts.length || parts.some((x) => !/^\d+$/.test(x))) fail('auto, or a comma list of whole numbers (one per backbone, 0 = frozen)');
      return parts.map(Number) as ExperimentConfig[K];
    }
    case 'choice':
      if (!s.choices!.includes(v)) {
        if (s.noun) throw new Error(`${where} is not ${s.noun}: expected one of ${s.choices!.join(', ')}`);
        fail(`one of ${s.choices!.join(', ')}`);
      }
      return v as ExperimentConfig[K];
    case 'path':
      if (v === '') fail('a folder path');
      return v as ExperimentConfig[K];
    case 'views': {
      const views = v.split(',').map((x) => x.trim()).filter(Boolean);
      if (!views.length) fail('a comma list of views (plain, flip, aug<k>)');
      for (const view of views) {
        try {
          parseView(view);
        } catch {
          fail('a comma list of views (plain, flip, aug<k>)');
        }
      }
      return views as ExperimentConfig[K];
    }
  }
  return fail('a value');
}

export interface ResolvedConfig {
  config: ExperimentConfig;
  /** Where each non-default value came from ("--epochs", "EPOCHS"). */
  sources: Partial<Record<SettingKey, string>>;
}

/**
 * Flags (`--key value` or `--key=value`; `--help`/`-h` are handled by the caller) over environment variables over
 * the defaults. Every value is parsed and validated here, before any work: the first bad one throws one line naming
 * the flag or variable the user set. Unknown flags and positional arguments are errors too.
 */
export function resolveConfig(argv: string[], env: NodeJS.ProcessEnv = process.env, keys: readonly SettingKey[] = Object.keys(SETTINGS) as SettingKey[]): ResolvedConfig {
  const config = defaultConfig();
  const sources: ResolvedConfig['sources'] = {};
  const byFlag = new Map(keys.map((k) => [flagOf(k), k]));
  for (const key of keys) {
    const name = envOf(key);
    const raw = env[name];
    if (raw === undefined || (raw === '' && isBlankDefault(key))) continue;
    (config as Record<string, unknown>)[key] = parseSetting(key, raw, `${name}=${JSON.stringify(raw)}`);
    sources[key] = name;
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^(--[a-z0-9-]+)(?:=(.*))?$/.exec(arg);
    if (!m) throw new Error(`${arg}: unexpected argument (see --help)`);
    const key = byFlag.get(m[1]);
    if (!key) throw new Error(`${m[1]}: unknown option (see --help)`);
    let raw = m[2];
    if (raw === undefined) {
      if (SETTINGS[key].kind === 'bool' && (argv[i + 1] === undefined || argv[i + 1].startsWith('--'))) raw = 'true';
      else if (argv[i + 1] === undefined) throw new Error(`${m[1]}: needs a value`);
      else raw = argv[++i];
    }
    (config as Record<string, unknown>)[key] = parseSetting(key, raw, `${m[1]}=${raw}`);
    sources[key] = m[1];
  }
  return { config, sources };
}

function showDefault(key: SettingKey): string {
  const s = SETTINGS[key] as Spec<Kind, unknown>;
  if (s.defaultText) return s.defaultText;
  return Array.isArray(s.default) ? s.default.join(',') : String(s.default);
}

/** `--help` text: every setting with its flag, env var, default and bounds. */
export function helpText(usage: string, keys: readonly SettingKey[] = Object.keys(SETTINGS) as SettingKey[]): string {
  const rows = keys.map((k) => [`${flagOf(k)} <${SETTINGS[k].kind === 'bool' ? 'bool' : SETTINGS[k].kind === 'int' ? 'int' : SETTINGS[k].kind === 'number' ? 'num' : SETTINGS[k].kind === 'path' ? 'dir' : 'list'}>`, envOf(k), showDefault(k), SETTINGS[k].help]);
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
  return [
    usage,
    '',
    `  ${'option'.padEnd(w[0])}  ${'env var'.padEnd(w[1])}  ${'default'.padEnd(w[2])}  meaning`,
    ...rows.map((r) => `  ${r[0].padEnd(w[0])}  ${r[1].padEnd(w[1])}  ${r[2].padEnd(w[2])}  ${r[3]}`),
    '',
    '  -h, --help  show this help',
    'Flags win over env vars; booleans take true/false, yes/no, on/off, 1/0; counts are decimal whole numbers.',
  ].join('\n');
}

/** The README's parameter table, generated (a test checks the README holds exactly this). */
export function markdownTable(keys: readonly SettingKey[] = Object.keys(SETTINGS) as SettingKey[]): string {
  return [
    '| setting | flag | env var | default | meaning |',
    '|---|---|---|---|---|',
    ...keys.map((k) => `| \`${k}\` | \`${flagOf(k)}\` | \`${envOf(k)}\` | ${showDefault(k)} | ${SETTINGS[k].help} |`),
  ].join('\n');
}
