// The saved models, kept side by side: every run saves into `<models>/<model id>/`, and `<models>/current.json`
// names the one the readers (notebook 06, predict, report, demo, Keras export) load unless told otherwise. A new model
// never silently replaces another: the files of earlier runs stay where they are, and moving the "current" name says
// what it replaced and both accuracies. A smoke-sized run (any training/validation limit) does not take the name
// from a full run's model; it says so and how to load it.
import * as fs from 'fs';
import * as path from 'path';
import { writeJsonAtomic } from '../util/atomic';
import { METADATA_FILE, ModelMetadata } from './classifier';

export const CURRENT_FILE = 'current.json';

/** What `<models>/current.json` holds. */
export interface CurrentModel {
  id: string;
  /** When it became current, and why (the run that saved it, or a user's choice). */
  since: string;
  reason: string;
}

/** A model id: the save time and the regime, readable in a folder listing and sortable by time. */
export function newModelId(models: string, slug: string, now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '');
  const base = `${stamp}-${slug.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/-+/g, '-').replace(/^-|-$/g, '')}`;
  let id = base;
  for (let k = 2; fs.existsSync(path.join(models, id)); k++) id = `${base}-${k}`;
  return id;
}

/** The regime's slug for a model id: "frozen", "fine-tune-mobilenet_v2-top5". */
export function regimeSlug(regimeName: string): string {
  return regimeName.replace(/ top /g, '-top').replace(/ \+ /g, '-').replace(/\s+/g, '-');
}

export function readCurrent(models: string): CurrentModel | undefined {
  const file = path.join(models, CURRENT_FILE);
  if (!fs.existsSync(file)) return undefined;
  let x: unknown;
  try {
    x = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: unreadable (${(err as Error).message.split('\n')[0]}); expected {"id": "<model id>"}`);
  }
  if (!x || typeof x !== 'object' || typeof (x as CurrentModel).id !== 'string' || !(x as CurrentModel).id) {
    throw new Error(`${file}: expected {"id": "<model id>", ...}, got ${JSON.stringify(x).slice(0, 80)}`);
  }
  return x as CurrentModel;
}

function readMeta(dir: string): ModelMetadata | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, METADATA_FILE), 'utf8')) as ModelMetadata;
  } catch {
    return undefined;
  }
}

/** The saved models under `models`, oldest first (folders holding a model.json). */
export function listModels(models: string): { id: string; dir: string; metadata?: ModelMetadata; current: boolean }[] {
  if (!fs.existsSync(models)) return [];
  let current: string | undefined;
  try {
    current = readCurrent(models)?.id;
  } catch {
    current = undefined;
  }
  return fs.readdirSync(models, { withFileTypes: true })
    .filter((d) => d.isDirectory() && !d.name.startsWith('.') && fs.existsSync(path.join(models, d.name, 'model.json')))
    .map((d) => ({ id: d.name, dir: path.join(models, d.name), metadata: readMeta(path.join(models, d.name)), current: d.name === current }))
    .sort((a, b) => a.id.localeCompare(b.id));
}

/** Which saved model a reader loads: its folder, and how it was named (for the "loaded ..." line). */
export interface ModelRef {
  dir: string;
  id: string;
  /** "current" (models/current.json), "id", or "folder". */
  via: 'current' | 'id' | 'folder';
}

/**
 * `ref` is "current" (the default), a model id under `models`, or a model folder (a path; relative to `cwd`).
 * Anything else is one line naming what was asked for and what exists.
 */
export function resolveModel(models: string, ref: string | null | undefined, cwd: string = process.cwd()): ModelRef {
  const r = (ref ?? '').trim() || 'current';
  if (r === 'current') {
    const cur = readCurrent(models);
    if (!cur) {
      const any = listModels(models);
      throw new Error(
        any.length
          ? `${path.join(models, CURRENT_FILE)}: no current model is named; pick one of ${any.map((m) => m.id).join(', ')} (--model <id>)`
          : `no saved model in ${models}: run \`npm start\` (or notebook 05) first to train and save one`,
      );
    }
    const dir = path.join(models, cur.id);
    if (!fs.existsSync(path.join(dir, 'model.json'))) throw new Error(`${path.join(models, CURRENT_FILE)} names ${cur.id}, but ${dir} holds no model.json`);
    return { dir, id: cur.id, via: 'current' };
  }
  if (!r.includes('/') && fs.existsSync(path.join(models, r, 'model.json'))) return { dir: path.join(models, r), id: r, via: 'id' };
  const asPath = path.resolve(cwd, r);
  if (fs.existsSync(path.join(asPath, 'model.json'))) return { dir: asPath, id: path.basename(asPath), via: 'folder' };
  const ids = listModels(models).map((m) => m.id);
  throw new Error(`--model ${r}: no saved model by that id in ${models} nor a model folder at ${asPath}${ids.length ? `; saved: ${ids.join(', ')}` : ''}`);
}

/** A model that was trained on a subset (smoke settings): it never takes the name from a full-data model silently. */
export function isSubsetModel(meta: ModelMetadata | undefined): boolean {
  const c = (meta?.config ?? {}) as Record<string, unknown>;
  return Boolean(c.trainLimit || c.valLimit || c.testLimit);
}

/** The headline validation accuracy of a saved model's metadata (with TTA when measured), for the replace line. */
export function headlineOf(meta: ModelMetadata | undefined): number | undefined {
  if (!meta?.metrics) return undefined;
  return meta.metrics['validation + TTA'] ?? meta.metrics.validation;
}

export interface Promotion {
  current: string;
  /** The model the name moved from, if any. */
  replaced?: string;
  /** The name stayed on the earlier model (a subset run next to a full one). */
  kept: boolean;
  /** One line for the user. */
  message: string;
}

/**
 * Make the model `id` (already saved under `models`) the current one — unless the current one was trained on all the
 * data and this one on a subset. Either way the returned line says which model is current, what it replaced, and
 * both validation accuracies.
 */
export function promote(models: string, id: string, reason: string, pct: (x: number) => string): Promotion {
  let prev: CurrentModel | undefined;
  try {
    prev = readCurrent(models);
  } catch {
    prev = undefined; // an unreadable pointer is replaced, and said below
  }
  const newMeta = readMeta(path.join(models, id));
  const prevMeta = prev ? readMeta(path.join(models, prev.id)) : undefined;
  const acc = (m: ModelMetadata | undefined) => (headlineOf(m) !== undefined ? `validation ${pct(headlineOf(m)!)}` : 'no validation figure');
  const where = (x: string) => path.join(models, x);
  // A subset run never takes the name from a full run on the same dataset; a model of another dataset is no subset.
  const datasetOf = (m: ModelMetadata | undefined) => m?.dataset?.name ?? 'CIFAR-10';
  if (prev && prevMeta && prev.id !== id && isSubsetModel(newMeta) && !isSubsetModel(prevMeta) && datasetOf(newMeta) === datasetOf(prevMeta)) {
    return {
      current: prev.id, kept: true,
      message: `model saved to ${where(id)} (${acc(newMeta)}, a subset run); the current model stays ${prev.id} (${acc(prevMeta)}, all the data) — load this one with --model ${id}`,
    };
  }
  writeJsonAtomic(path.join(models, CURRENT_FILE), { id, since: new Date().toISOString(), reason } satisfies CurrentModel);
  if (!prev || prev.id === id || !prevMeta) {
    return { current: id, kept: false, message: `model saved to ${where(id)} (${acc(newMeta)}); it is now the current model${prev && !prevMeta && prev.id !== id ? ` (the previous name, ${prev.id}, pointed at no model)` : ''}` };
  }
  return {
    current: id, replaced: prev.id, kept: false,
    message: `model saved to ${where(id)} (${acc(newMeta)}); it is now the current model, replacing ${prev.id} (${acc(prevMeta)}), which stays in ${where(prev.id)}`,
  };
}
