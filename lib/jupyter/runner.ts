// Headless notebook execution (our nbclient): one fresh kernel per notebook, code cells in order, a per-cell
// timeout, outputs and execution counts stored in an executed copy. Any failure becomes ONE line naming the
// notebook, the cell, the failing line (or the cell's first line) and the error, because that is what a CI log needs
// to show.
import * as path from 'path';
import { DEFAULT_KERNEL, JupyterMessage, Kernel, KernelTimeoutError, kernelsDir, loadKernelSpec } from './kernel';
import * as fs from 'fs';
import { CodeCell, Notebook, Output, firstLine, joinText, readNotebook, splitLines, storeMimeValue, writeNotebook } from './nbformat';
import { childEnv } from '../settings/context';
import { PROJECT_ROOT } from '../settings/paths';

/** Executed copies go here unless --in-place (gitignored). */
export const DEFAULT_OUT_DIR = path.join(PROJECT_ROOT, 'out', 'notebooks');

export interface RunNotebookOptions {
  /** Where to write the executed notebook (default out/notebooks/<name>); ignored with inPlace. */
  outFile?: string;
  inPlace?: boolean;
  /** Per-cell timeout in seconds (default 1800). */
  timeoutSec?: number;
  startupTimeoutSec?: number;
  /** Extra environment for the kernel (notebook parameters), on top of baseEnv. */
  env?: Record<string, string>;
  /**
   * The environment the kernel inherits and recordEnv is read from (scripts pass their environment; default: the runtime
   * context's, lib/settings/context.ts).
   */
  baseEnv?: NodeJS.ProcessEnv;
  /** Environment variables to record in the notebook's metadata when set (the parameters the caller knows of). */
  recordEnv?: readonly string[];
  /** Kernelspec name under jupyter/kernels (default: the notebook's own if the project has it, else cifar10-tslab). */
  kernelName?: string;
  /** Progress lines (default: none). */
  log?: (line: string) => void;
  /** Kernel stream output as it arrives. */
  onStream?: (name: string, text: string) => void;
  /** Abort (Ctrl-C): stops after shutting the kernel down; the run fails with "interrupted". */
  signal?: AbortSignal;
  /** Called once the kernel is up (tests use the pid to check nothing is left behind). */
  onKernel?: (kernel: Kernel) => void;
}

export interface RunNotebookResult {
  file: string;
  outFile: string;
  codeCells: number;
  seconds: number;
}

/** A failed run; `message` is the one-line summary. */
export class NotebookRunError extends Error {
  constructor(
    message: string,
    readonly file: string,
    readonly outFile: string | undefined,
    /** 1-based position of the failing cell in the notebook (markdown cells count), if a cell failed. */
    readonly cell?: number,
    /** 1-based line in that cell's source where a runtime error happened, when the kernel's stack says. */
    readonly line?: number,
  ) {
    super(message);
  }
}

export function defaultOutFile(file: string): string {
  return path.join(DEFAULT_OUT_DIR, path.basename(file));
}

const ERROR_LINE = /^(?:Uncaught )?(?:[A-Za-z_$][\w$.]*)?(?:Error|Exception|Rejection)\b(?: \[[^\]]*\])?(?::|$)/;
const TS_DIAGNOSTIC = /^(?:\S+ )?\d+:\d+ - /;

/**
 * The error text of a failed tslab cell, from its stderr (tslab's error reply carries no ename/traceback; it prints
 * the error with console.error): TypeScript diagnostics, else the last "XxxError: message" line, else the last line
 * that is not a stack frame.
 */
export function errorSummary(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').trimEnd());
  const diags = lines.filter((l) => TS_DIAGNOSTIC.test(l));
  if (diags.length > 0) return diags.join('; ');
  const errors = lines.filter((l) => ERROR_LINE.test(l));
  if (errors.length > 0) return errors[errors.length - 1];
  const rest = lines.filter((l) => l.trim() !== '' && !/^\s+at /.test(l) && l.trim() !== '^' && !/^evalmachine\./.test(l));
  return rest[rest.length - 1]?.trim() ?? '(no error text on stderr)';
}

const CELL_FRAME = /^\s+at (?:async )?(?:.*\()?cell line (\d+), column (\d+)\)?$/;

/**
 * Where in the failing cell a runtime error happened: the project kernel rewrites stacks so that frames in the cell
 * read `cell line L, column C` (jupyter/kernels/cifar10-tslab/cell-errors.js); the first such frame after the error
 * line errorSummary picks. Undefined for TypeScript diagnostics, stackless errors and other kernels.
 */
export function errorLocation(stderr: string): { line: number; column: number } | undefined {
  const lines = stderr.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').trimEnd());
  if (lines.some((l) => TS_DIAGNOSTIC.test(l))) return undefined;
  let from = 0;
  lines.forEach((l, i) => {
    if (ERROR_LINE.test(l)) from = i;
  });
  for (const l of lines.slice(from)) {
    const m = CELL_FRAME.exec(l);
    if (m) return { line: Number(m[1]), column: Number(m[2]) };
  }
  return undefined;
}

function clip(s: string, n: number): string {
  const one = s.replace(/\s+/g, ' ').trim();
  return one.length > n ? one.slice(0, n - 1) + '…' : one;
}

/** Outputs of one cell as the kernel reports them; display ids are notebook-wide (a later cell may update). */
class OutputCollector {
  private readonly displays = new Map<string, Output[]>();
  private clearPending = false;

  apply(outputs: Output[], m: JupyterMessage): void {
    const c = m.content;
    const type = m.header.msg_type;
    if (type === 'clear_output') {
      if (c.wait) this.clearPending = true;
      else outputs.length = 0;
      return;
    }
    if (type === 'update_display_data') {
      for (const o of this.displays.get(c.transient?.display_id) ?? []) {
        if (o.output_type === 'display_data' || o.output_type === 'execute_result') {
          o.data = c.data;
          o.metadata = c.metadata ?? {};
        }
      }
      return;
    }
    if (!['stream', 'display_data', 'execute_result', 'error'].includes(type)) return;
    if (this.clearPending) {
      outputs.length = 0;
      this.clearPending = false;
    }
    let out: Output;
    if (type === 'stream') {
      const last = outputs[outputs.length - 1];
      if (last?.output_type === 'stream' && last.name === c.name) {
        last.text = joinText(last.text) + c.text; // one output per run of the same stream, as Jupyter shows it
        return;
      }
      out = { output_type: 'stream', name: c.name, text: c.text };
    } else if (type === 'error') {
      out = { output_type: 'error', ename: c.ename, evalue: c.evalue, traceback: c.traceback ?? [] };
    } else if (type === 'execute_result') {
      out = { output_type: 'execute_result', execution_count: c.execution_count ?? null, data: c.data, metadata: c.metadata ?? {} };
    } else {
      out = { output_type: 'display_data', data: c.data, metadata: c.metadata ?? {} };
    }
    outputs.push(out);
    const id = c.transient?.display_id;
    if (id && out.output_type !== 'stream' && out.output_type !== 'error') {
      this.displays.set(id, [...(this.displays.get(id) ?? []), out]);
    }
  }
}

/** Outputs as Jupyter stores them: text as lists of lines. A copy, so later display updates don't alias. */
function storedOutputs(outputs: Output[]): Output[] {
  return outputs.map((o) => {
    if (o.output_type === 'stream') return { ...o, text: splitLines(joinText(o.text)) };
    if (o.output_type === 'display_data' || o.output_type === 'execute_result') {
      const data: Record<string, unknown> = {};
      for (const [mime, v] of Object.entries(o.data)) data[mime] = storeMimeValue(mime, v);
      return { ...o, data };
    }
    return { ...o };
  });
}

function stderrOf(outputs: Output[]): string {
  return outputs
    .filter((o) => o.output_type === 'stream' && o.name === 'stderr')
    .map((o) => joinText((o as { text: string }).text))
    .join('');
}

function pickKernel(nb: Notebook, explicit?: string): string {
  if (explicit) return explicit;
  const own = (nb.metadata.kernelspec as { name?: string } | undefined)?.name;
  return own && fs.existsSync(path.join(kernelsDir(), own, 'kernel.json')) ? own : DEFAULT_KERNEL;
}

/** Execute `file` in a fresh kernel; throws NotebookRunError (one-line message) on any failure. */
export async function runNotebook(file: string, opts: RunNotebookOptions = {}): Promise<RunNotebookResult> {
  const t0 = Date.now();
  const nb = readNotebook(file);
  const outFile = opts.inPlace ? file : opts.outFile ?? defaultOutFile(file);
  const timeoutMs = (opts.timeoutSec ?? 1800) * 1000;
  const name = path.relative(process.cwd(), file) || file;
  const spec = loadKernelSpec(pickKernel(nb, opts.kernelName));
  const codeCells = nb.cells.filter((c): c is CodeCell => c.cell_type === 'code');
  const baseEnv = opts.baseEnv ?? childEnv();
  for (const c of codeCells) {
    c.outputs = [];
    c.execution_count = null;
  }
  const collector = new OutputCollector();
  const live = new Map<CodeCell, Output[]>();
  const save = (status: string) => {
    for (const [cell, outs] of live) cell.outputs = storedOutputs(outs);
    nb.metadata.kernelspec = { name: spec.name, display_name: spec.displayName, language: spec.language };
    nb.metadata.runner = {
      executed_at: new Date(t0).toISOString(),
      seconds: Math.round((Date.now() - t0) / 100) / 10,
      status,
      // What the notebook ran with: the -p values, and those of the named variables set in the environment.
      params: Object.fromEntries(
        Object.entries(baseEnv).filter(([k]) => opts.recordEnv?.includes(k)).concat(Object.entries(opts.env ?? {})) as [string, string][],
      ),
    };
    writeNotebook(outFile, nb);
  };
  const fail = (msg: string, cell?: number, line?: number): never => {
    save('error');
    throw new NotebookRunError(msg, file, outFile, cell, line);
  };

  if (opts.signal?.aborted) fail(`${name}: interrupted before start`);
  let kernel: Kernel;
  try {
    kernel = await Kernel.start({
      spec,
      cwd: path.dirname(path.resolve(file)), // as Jupyter does; the launcher moves to the project root
      env: { ...baseEnv, ...opts.env },
      startupTimeoutMs: (opts.startupTimeoutSec ?? 60) * 1000,
      onStream: opts.onStream,
    });
  } catch (err) {
    return fail(`${name}: kernel ${spec.name} did not start: ${(err as Error).message}`);
  }
  opts.onKernel?.(kernel);
  opts.log?.(`${name}: kernel ${spec.name} started (pid ${kernel.pid}), ${codeCells.length} code cells`);
  try {
    nb.metadata.language_info = kernel.kernelInfo?.language_info ?? nb.metadata.language_info;
    for (let i = 0; i < nb.cells.length; i++) {
      const cell = nb.cells[i];
      if (cell.cell_type !== 'code' || joinText(cell.source).trim() === '') continue;
      const where = `${name}: cell ${i + 1} (\`${clip(firstLine(cell.source), 80)}\`)`;
      const outputs: Output[] = [];
      live.set(cell, outputs);
      const tc = Date.now();
      let reply: any;
      try {
        const run = kernel.execute(joinText(cell.source), { timeoutMs, onIopub: (m) => collector.apply(outputs, m) });
        // One abort listener per cell, removed when the cell ends (otherwise they pile up over a long notebook).
        let onAbort = () => {};
        const aborted = new Promise<never>((_, reject) => {
          onAbort = () => reject(new Error('interrupted'));
          if (opts.signal?.aborted) onAbort();
          opts.signal?.addEventListener('abort', onAbort, { once: true });
        });
        try {
          reply = await Promise.race([run, aborted]);
        } finally {
          opts.signal?.removeEventListener('abort', onAbort);
        }
      } catch (err) {
        if (err instanceof KernelTimeoutError) {
          const msg = `cell did not finish within ${timeoutMs / 1000} s (--timeout)`;
          outputs.push({ output_type: 'error', ename: 'CellTimeoutError', evalue: msg, traceback: [msg] });
          fail(`${where} timed out: ${msg}`, i + 1);
        }
        fail(`${where} ${(err as Error).message === 'interrupted' ? 'interrupted' : `failed: ${(err as Error).message}`}`, i + 1);
      }
      cell.execution_count = reply.execution_count ?? null;
      cell.metadata.runner = { seconds: Math.round((Date.now() - tc) / 100) / 10 };
      if (reply.status !== 'ok') {
        const stderr = stderrOf(outputs);
        const text = reply.ename ? `${reply.ename}: ${reply.evalue}` : errorSummary(stderr);
        const at = reply.ename ? undefined : errorLocation(stderr);
        const lineText = at && joinText(cell.source).split('\n')[at.line - 1];
        if (at && lineText !== undefined && lineText.trim() !== '') {
          fail(`${name}: cell ${i + 1}, line ${at.line} (\`${clip(lineText, 80)}\`) failed: ${clip(text, 400)}`, i + 1, at.line);
        }
        fail(`${where} failed: ${clip(text, 400)}`, i + 1);
      }
      opts.log?.(`${name}: cell ${i + 1}/${nb.cells.length} ok (${((Date.now() - tc) / 1000).toFixed(1)} s)`);
    }
    save('ok');
  } finally {
    await kernel.shutdown();
  }
  return { file, outFile, codeCells: codeCells.length, seconds: (Date.now() - t0) / 1000 };
}
