// Reading and writing Jupyter notebooks (nbformat 4.5) without Python: the runner writes executed copies and the
// report reads them. Only the parts of the schema we produce or consume are typed.
import * as crypto from 'crypto';
import * as fs from 'fs';
import { writeFileAtomic } from '../util/atomic';

/** Multiline strings are stored either as one string or as a list of lines (Jupyter writes lists). */
export type MultilineString = string | string[];

export interface StreamOutput { output_type: 'stream'; name: 'stdout' | 'stderr'; text: MultilineString }
export interface DisplayDataOutput { output_type: 'display_data'; data: Record<string, unknown>; metadata: Record<string, unknown> }
export interface ExecuteResultOutput {
  output_type: 'execute_result';
  execution_count: number | null;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
}
export interface ErrorOutput { output_type: 'error'; ename: string; evalue: string; traceback: string[] }
export type Output = StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput;

export interface CodeCell {
  cell_type: 'code';
  id: string;
  metadata: Record<string, unknown>;
  source: MultilineString;
  execution_count: number | null;
  outputs: Output[];
}
export interface MarkdownCell { cell_type: 'markdown'; id: string; metadata: Record<string, unknown>; source: MultilineString; attachments?: unknown }
export interface RawCell { cell_type: 'raw'; id: string; metadata: Record<string, unknown>; source: MultilineString; attachments?: unknown }
export type Cell = CodeCell | MarkdownCell | RawCell;

export interface Notebook { nbformat: 4; nbformat_minor: number; metadata: Record<string, unknown>; cells: Cell[] }

/** Join a MultilineString. */
export function joinText(s: MultilineString | undefined): string {
  return Array.isArray(s) ? s.join('') : s ?? '';
}

/** Split into lines that keep their '\n', the way Jupyter stores sources and text outputs (readable diffs). */
export function splitLines(s: string): string[] {
  return s.match(/[^\n]*\n|[^\n]+$/g) ?? [];
}

/** The first non-empty line of a cell's source, for error messages. */
export function firstLine(source: MultilineString): string {
  return joinText(source).split('\n').map((l) => l.trim()).find((l) => l !== '') ?? '';
}

const CELL_ID = /^[a-zA-Z0-9-_]{1,64}$/;

/** A fresh cell id (nbformat 4.5: 1-64 chars of [a-zA-Z0-9-_]). */
export function newCellId(): string {
  return crypto.randomBytes(6).toString('hex');
}

/**
 * Parse and check a notebook; upgrades 4.0-4.4 to 4.5 by adding cell ids (kept if valid and unique). Throws one
 * line naming the file and what is wrong.
 */
export function parseNotebook(text: string, file: string): Notebook {
  let nb: any;
  try {
    nb = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not a notebook: invalid JSON (${(err as Error).message})`);
  }
  if (nb == null || typeof nb !== 'object' || nb.nbformat !== 4 || !Array.isArray(nb.cells)) {
    throw new Error(`${file}: not an nbformat 4 notebook (expected {"nbformat": 4, "cells": [...]})`);
  }
  nb.metadata ??= {};
  const seen = new Set<string>();
  nb.cells.forEach((cell: any, i: number) => {
    if (cell == null || !['code', 'markdown', 'raw'].includes(cell.cell_type)) {
      throw new Error(`${file}: cell ${i + 1}: unknown cell_type ${JSON.stringify(cell?.cell_type)} (expected code, markdown or raw)`);
    }
    if (typeof cell.source !== 'string' && !Array.isArray(cell.source)) {
      throw new Error(`${file}: cell ${i + 1}: source must be a string or a list of strings`);
    }
    cell.metadata ??= {};
    if (typeof cell.id !== 'string' || !CELL_ID.test(cell.id) || seen.has(cell.id)) cell.id = newCellId();
    seen.add(cell.id);
    if (cell.cell_type === 'code') {
      cell.outputs ??= [];
      cell.execution_count ??= null;
    }
  });
  if ((nb.nbformat_minor ?? 0) < 5) nb.nbformat_minor = 5;
  return nb as Notebook;
}

export function readNotebook(file: string): Notebook {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new Error(`${file}: cannot read notebook (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  return parseNotebook(text, file);
}

/** Serialise like Jupyter does (1-space indent, trailing newline) so diffs against saved notebooks stay small. */
export function serializeNotebook(nb: Notebook): string {
  return JSON.stringify(nb, null, 1) + '\n';
}

export function writeNotebook(file: string, nb: Notebook): void {
  writeFileAtomic(file, serializeNotebook(nb));
}

/** Normalise multiline text of an output/mime value the way Jupyter stores it: text/* as a list of lines. */
export function storeMimeValue(mime: string, value: unknown): unknown {
  // huge values (the plotly.js loader) stay one string: a line list would add megabytes of JSON punctuation
  if (typeof value === 'string' && value.length < 100_000 && (mime.startsWith('text/') || mime === 'image/svg+xml')) return splitLines(value);
  return value;
}
