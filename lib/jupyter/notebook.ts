// Are we inside a tslab (Jupyter) kernel? Rich output (live progress, inline plots, images) goes through
// tslab's display API there; everywhere else (CLI, tests) callers fall back to the terminal or files.
import type { Display } from 'tslab';

/** True while a tslab kernel is executing a cell in this process. */
export function inNotebook(): boolean {
  try {
    // tslab sets this when it executes the first cell; the module is the kernel's own instance because the
    // project kernelspec starts the tslab installed in this project's node_modules.
    return require('tslab/dist/jupyter').lastWriteDisplayData != null;
  } catch {
    return false;
  }
}

/** tslab's display API, or undefined outside a notebook. */
export function notebookDisplay(): { display: Display; newDisplay: () => Display } | undefined {
  if (!inNotebook()) return undefined;
  const tslab = require('tslab') as typeof import('tslab');
  return { display: tslab.display, newDisplay: tslab.newDisplay };
}

/** A Jupyter MIME bundle, e.g. { 'text/html': '...', 'application/vnd.plotly.v1+json': fig, 'text/plain': '...' }. */
export type MimeBundle = Record<string, unknown>;

/**
 * Send one display_data (or update_display_data) carrying several MIME types at once. tslab's Display sends a
 * single type per call; the front end needs all alternatives in ONE output to pick the best it can render, and the
 * report needs the plotly JSON next to the HTML. Returns false outside a notebook (nothing sent).
 */
export function displayBundle(
  data: MimeBundle,
  opts: { displayId?: string; update?: boolean; metadata?: Record<string, unknown> } = {},
): boolean {
  if (!inNotebook()) return false;
  const write = require('tslab/dist/jupyter').lastWriteDisplayData as (d: unknown, update: boolean) => void;
  write({ data, metadata: opts.metadata ?? {}, transient: opts.displayId ? { display_id: opts.displayId } : {} }, !!opts.update);
  return true;
}
