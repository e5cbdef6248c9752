// Runtime errors at the cell's own line. tslab compiles a cell's TypeScript to ES modules, then to CommonJS, and
// runs the result in a vm script named `evalmachine.<anonymous>`, so an error's stack points at compiled code
// (`evalmachine.<anonymous>:4:17`, Node's excerpt of the compiled line) followed by frames of tslab and Node
// internals. The kernel launcher (launch.js) installs the hooks below into tslab:
//  - the TypeScript compiler tslab uses emits a source map for every file (cell or imported lib/*.ts), and the
//    ES module -> CommonJS step adds a second one; both are kept per cell and per compiled file;
//  - each cell's script is named `tslab-cell-<n>.js` (n = the execution count, In [n]) with a sourceURL comment;
//  - the errors tslab prints for a failed cell (thrown synchronously or by an awaited promise) get their stack
//    rewritten: frames in a cell read `cell line L, column C` (1-based, as in the cell's source; `cell [n] line L,
//    column C` for a function defined in an earlier cell), frames in files tslab compiled point at the .ts source,
//    project paths are relative to the project root, and frames of tslab, Node internals and this kernel go.
// Plain JavaScript because node runs launch.js directly (no ts-node in the kernel); the API is JSDoc-typed.
'use strict';
const path = require('path');
const { SourceMap } = require('module');

/** The name a cell's script gets in stack traces. */
const cellUrl = (/** @type {number} */ n) => `tslab-cell-${n}.js`;
const CELL_URL = /^tslab-cell-(\d+)\.js$/;
const INLINE_MAP = /\n?\/\/# sourceMappingURL=data:application\/json;base64,([A-Za-z0-9+/=]+)\s*$/;
const FILE_MAP_COMMENT = /\n?\/\/# sourceMappingURL=\S+\s*$/;
/**
 * Node's excerpt of the throwing line, put before the stack of an error thrown in a vm script:
 * "evalmachine.<anonymous>:4\n<compiled line>\n    ^\n\n" (no caret line for JSON.parse's "<anonymous_script>:1").
 */
const DECORATION = /^(?:evalmachine\.<anonymous>|<anonymous_script>|tslab-cell-\d+\.js|\/[^\n]*):\d+\n[^\n]*\n(?:[ \t]*\^+[ \t]*\n)?\n(?=\S)/;
const FRAME = /^\s+at (?:async )?\S/;

/**
 * @typedef {{ line: number, column: number }} Position 1-based line and column.
 * @typedef {{ kind: 'cell', cell: number, line: number, column: number }} CellOrigin
 * @typedef {{ kind: 'file', file: string, line: number, column: number }} FileOrigin
 * @typedef {{ maps: SourceMap[], lines?: number }} Chain source maps from the code that runs back to the source
 *   (maps[0] maps the running code); `lines` = the running code's line count, when frames past it are the wrapper.
 */

/**
 * A position in running code -> the position in the original source, through a chain of source maps (each lookup
 * takes the nearest mapping at or before the position on the same line, as Node's own source-map support does).
 * @param {SourceMap[]} maps
 * @param {number} line 1-based
 * @param {number} column 1-based
 * @returns {(Position & { source: string }) | null}
 */
function throughMaps(maps, line, column) {
  let l = line - 1;
  let c = column - 1;
  let source = '';
  for (const map of maps) {
    let e = map.findEntry(l, c);
    // Before the first mapping of its line: take the line's first mapping rather than the previous line's last.
    if (!e || e.generatedLine !== l) {
      e = map.findEntry(l, Number.MAX_SAFE_INTEGER);
      if (!e || e.generatedLine !== l) return null;
      const first = firstEntryOfLine(map, l);
      if (first) e = first;
    }
    if (typeof e.originalLine !== 'number') return null;
    l = e.originalLine;
    c = e.originalColumn;
    source = e.originalSource;
  }
  return { line: l + 1, column: c + 1, source };
}

/** @param {SourceMap} map @param {number} l 0-based */
function firstEntryOfLine(map, l) {
  // findEntry is a binary search for the last mapping <= (l, c); probe column 0 upwards in steps.
  for (let c = 0; c < 4096; c += c < 64 ? 1 : 64) {
    const e = map.findEntry(l, c);
    if (e && e.generatedLine === l) return e;
  }
  return null;
}

/** A source map payload from base64 JSON (or a JSON string). @param {string} text @param {boolean} base64 */
function parseMap(text, base64) {
  try {
    return new SourceMap(JSON.parse(base64 ? Buffer.from(text, 'base64').toString('utf8') : text));
  } catch {
    return null;
  }
}

/**
 * Parse one stack-frame line ("    at fn (file:12:5)", "    at file:12:5", "    at async fn (file:12:5)").
 * @param {string} line
 * @returns {{ indent: string, async: boolean, fn: string | null, location: string, file: string | null, line: number, column: number } | null}
 */
function parseFrame(line) {
  const m = /^(\s+)at (async )?(.*)$/.exec(line);
  if (!m) return null;
  let fn = null;
  let location = m[3];
  const paren = /^(.*?) \((.*)\)$/.exec(m[3]);
  if (paren && !/^eval at /.test(m[3])) {
    fn = paren[1];
    location = paren[2];
  }
  const pos = /^(.*):(\d+):(\d+)$/.exec(location);
  return {
    indent: m[1],
    async: !!m[2],
    fn,
    location,
    file: pos ? pos[1] : null,
    line: pos ? Number(pos[2]) : 0,
    column: pos ? Number(pos[3]) : 0,
  };
}

class CellErrors {
  /**
   * @param {{ root: string, internal?: string[] }} opts root: the project root (paths are shown relative to it);
   *   internal: folders (or files) whose frames are dropped (tslab, this kernel's folder).
   */
  constructor(opts) {
    this.root = path.resolve(opts.root);
    this.internal = (opts.internal ?? []).map((d) => path.resolve(d));
    /** @type {Map<number, Chain & { source: string }>} cells run so far, by execution count */
    this.cells = new Map();
    /** @type {Map<string, Chain & { original: string }>} files tslab compiled (lib/*.ts), by the .js path it runs */
    this.files = new Map();
    /** The cell being executed (its execution count). */
    this.current = 0;
    /** @type {Map<string, SourceMap[]>} maps of the latest ES module -> CommonJS conversions, by their output */
    this.pending = new Map();
  }

  /**
   * Make the TypeScript that tslab loads emit source maps (call before tslab's converter is required): the
   * module's exports are read-only getters, so the cached module's exports are replaced by an object that
   * forwards to them and overrides the two functions tslab's converter calls.
   * @param {string} tsFile the resolved path of tslab's TypeScript (`@tslab/typescript-for-tslab`)
   */
  hookTypeScript(tsFile) {
    const ts = require(tsFile);
    const cached = require.cache[tsFile];
    if (!cached) throw new Error(`cell-errors: ${tsFile} is not in the require cache`);
    const self = this;
    /** @type {Record<string, any>} */
    const hooked = {};
    // Own properties (tslab's __importStar copies only those), each reading the original's live value.
    for (const key of Object.keys(ts)) Object.defineProperty(hooked, key, { get: () => ts[key], enumerable: true, configurable: true });
    /** The cell/lib emit: inline source maps (TS source -> ES module JS). */
    const override = (/** @type {string} */ name, /** @type {Function} */ fn) =>
      Object.defineProperty(hooked, name, { value: fn, enumerable: true, writable: true, configurable: true });
    override('createWatchCompilerHost', function (/** @type {any} */ rootFiles, /** @type {any} */ options, /** @type {any[]} */ ...rest) {
      return ts.createWatchCompilerHost(rootFiles, { ...options, sourceMap: false, inlineSourceMap: true, inlineSources: false }, ...rest);
    });
    /** tslab's ES module -> CommonJS step: keep both maps, return the code without map comments. */
    override('transpileModule', function (/** @type {string} */ input, /** @type {any} */ transpileOptions) {
      const m = INLINE_MAP.exec(input);
      if (!m || !transpileOptions || !transpileOptions.compilerOptions) return ts.transpileModule(input, transpileOptions);
      const first = parseMap(m[1], true);
      const result = ts.transpileModule(input.slice(0, m.index) + '\n', {
        ...transpileOptions,
        compilerOptions: { ...transpileOptions.compilerOptions, sourceMap: true, inlineSourceMap: false },
      });
      const outputText = result.outputText.replace(FILE_MAP_COMMENT, '\n');
      const second = result.sourceMapText ? parseMap(result.sourceMapText, false) : null;
      if (first && second) self.pending.set(outputText, [second, first]);
      return { ...result, outputText, sourceMapText: undefined };
    });
    cached.exports = hooked;
    return hooked;
  }

  /**
   * Hook tslab's converter set: each converted cell keeps its maps and gets its script name; each compiled
   * dependency keeps its maps.
   * @template {{ node: any }} T
   * @param {T} convs
   * @returns {T}
   */
  hookConverters(convs) {
    const self = this;
    const node = convs.node;
    const convert = node.convert;
    node.convert = function (prevDecl, src) {
      self.pending.clear();
      const out = convert.call(this, prevDecl, src);
      try {
        for (const side of out.sideOutputs ?? []) {
          const maps = self.pending.get(side.data);
          if (maps) self.files.set(path.resolve(side.path), { maps, original: side.path.replace(/\.js$/, '.ts') });
        }
        if (out.output) {
          const maps = self.pending.get(out.output);
          if (maps) {
            self.cells.set(self.current, { maps, source: src, lines: out.output.split('\n').length });
            // One leading newline: the executor puts its wrapper's opening on the first line, so the cell's code
            // starts at line 2 with its own columns.
            out.output = `\n${out.output}\n//# sourceURL=${cellUrl(self.current)}`;
          }
        }
      } finally {
        self.pending.clear();
      }
      return out;
    };
    return convs;
  }

  /**
   * The console tslab prints a failed cell's error with: Error arguments are printed with rewritten stacks.
   * @param {{ log: (...a: any[]) => void, error: (...a: any[]) => void }} console
   */
  hookConsole(console) {
    return {
      ...console,
      log: console.log,
      error: (/** @type {any[]} */ ...args) => this.printError(console.error, args),
    };
  }

  /**
   * Give each cell's script its name as the vm filename too (tslab passes none): the sourceURL comment names it in
   * V8's own stack traces, but an Error.prepareStackTrace such as source-map-support's asks for the file name.
   * Only scripts carrying a cell's sourceURL (see hookConverters) are touched.
   * @param {typeof import('vm')} vm
   */
  hookVm(vm) {
    const runInThisContext = vm.runInThisContext;
    vm.runInThisContext = function (/** @type {any} */ code, /** @type {any} */ options, ...rest) {
      const m = typeof code === 'string' ? /\n\/\/# sourceURL=(tslab-cell-\d+\.js)\n(?:[^\n]*\n){0,2}[^\n]*$/.exec(code.slice(-200)) : null;
      if (m && (options === undefined || (typeof options === 'object' && options !== null && options.filename === undefined))) {
        options = { ...options, filename: m[1] };
      }
      return runInThisContext.call(this, code, options, ...rest);
    };
    return vm;
  }

  /**
   * Count executions like tslab's kernel does (one execute per execute_request, In [n]).
   * @template {{ execute: (src: string) => Promise<boolean> }} E
   * @param {E} executor
   * @returns {E}
   */
  hookExecutor(executor) {
    const execute = executor.execute;
    executor.execute = (src) => {
      this.current++;
      return execute.call(executor, src);
    };
    return executor;
  }

  /**
   * Print `args` with `print`, every Error among them (and their causes) with its rewritten stack. The errors'
   * own stacks are put back afterwards (the same error may be printed again from another cell).
   * @param {(...a: any[]) => void} print
   * @param {any[]} args
   */
  printError(print, args) {
    /** @type {Array<[any, any]>} */
    const restore = [];
    const out = args.slice();
    try {
      for (let i = 0; i < out.length; i++) {
        let e = out[i];
        for (let depth = 0; depth < 5 && isErrorLike(e); depth++) {
          const stack = this.rewriteStack(e.stack);
          if (depth === 0 && isBare(e, stack)) {
            // Node prints an error without frames in brackets, "[InterruptedError: … interrupted after …]": the
            // text alone is the one line the user should see.
            out[i] = stack;
            break;
          }
          if (stack !== e.stack) {
            const before = e.stack;
            try {
              e.stack = stack;
            } catch {}
            if (e.stack === stack) restore.push([e, before]);
            else if (depth === 0) out[i] = stack; // a frozen error: print the text
          }
          e = e.cause;
        }
      }
    } catch {
      // never lose the error because of the rewriting
    }
    try {
      print(...out);
    } finally {
      for (const [e, stack] of restore.reverse()) {
        try {
          e.stack = stack;
        } catch {}
      }
    }
  }

  /**
   * A stack as the cell's author reads it: cell frames at the cell's line and column, .ts positions for files
   * tslab compiled, project paths relative to the root, no internal frames, no excerpt of compiled code.
   * @param {string} stack
   * @returns {string}
   */
  rewriteStack(stack) {
    if (typeof stack !== 'string') return stack;
    const lines = stack.replace(DECORATION, '').split('\n');
    const firstFrame = lines.findIndex((l) => FRAME.test(l));
    if (firstFrame < 0) return lines.join('\n');
    const head = lines.slice(0, firstFrame);
    /** @type {Array<{ text: string, builtin: boolean }>} */
    const frames = [];
    for (const line of lines.slice(firstFrame)) {
      const f = FRAME.test(line) ? parseFrame(line) : null;
      if (!f) {
        frames.push({ text: line, builtin: false });
        continue;
      }
      const where = this.describe(f);
      if (where === null) continue;
      // A function of an earlier cell is called through tslab's exports object, a Proxy: "Proxy.helper".
      const fn = where.cell && f.fn ? f.fn.replace(/^Proxy\./, '') : f.fn;
      const at = `${f.indent}at ${f.async ? 'async ' : ''}`;
      frames.push({ text: fn ? `${at}${fn} (${where.location})` : `${at}${where.location}`, builtin: where.builtin });
    }
    // Native frames after the last frame worth showing are the machinery that ran the cell.
    while (frames.length > 0 && frames[frames.length - 1].builtin) frames.pop();
    return [...head, ...frames.map((f) => f.text)].join('\n');
  }

  /**
   * Where a frame is, as shown; null to drop it.
   * @param {NonNullable<ReturnType<typeof parseFrame>>} f
   * @returns {{ location: string, builtin: boolean, cell?: boolean } | null}
   */
  describe(f) {
    if (f.file === null) {
      // "native", "<anonymous>", "index 0", eval origins: builtins (JSON.parse, Array.map, new Promise)
      return { location: f.location, builtin: true };
    }
    const cell = CELL_URL.exec(f.file);
    if (cell) {
      const at = this.locate(f.file, f.line, f.column);
      if (!at || at.kind !== 'cell') return null; // the executor's wrapper around the cell's code
      return { location: `${at.cell === this.current ? 'cell' : `cell [${at.cell}]`} line ${at.line}, column ${at.column}`, builtin: false, cell: true };
    }
    if (f.file.startsWith('node:') || f.file === 'evalmachine.<anonymous>' || f.file === '<anonymous>') return null;
    const abs = f.file.startsWith('file://') ? decodeURIComponent(f.file.slice(7)) : f.file;
    if (!path.isAbsolute(abs)) return { location: f.location, builtin: false };
    if (this.internal.some((d) => abs === d || abs.startsWith(d + path.sep))) return null;
    const at = this.locate(path.resolve(abs), f.line, f.column);
    const shown = at && at.kind === 'file' ? { file: at.file, line: at.line, column: at.column } : { file: abs, line: f.line, column: f.column };
    return { location: `${this.relative(shown.file)}:${shown.line}:${shown.column}`, builtin: false };
  }

  /** @param {string} file */
  relative(file) {
    const rel = path.relative(this.root, file);
    return rel.startsWith('..') || path.isAbsolute(rel) ? file : rel;
  }

  /**
   * The source position of a position in code tslab runs: a cell's script (by its name) or a file it compiled.
   * @param {string} file
   * @param {number} line 1-based
   * @param {number} column 1-based
   * @returns {CellOrigin | FileOrigin | null}
   */
  locate(file, line, column) {
    const cell = CELL_URL.exec(file);
    if (cell) {
      const n = Number(cell[1]);
      const rec = this.cells.get(n);
      // Line 1 is the executor's wrapper opening (see hookConverters), lines after the code its closing call.
      if (!rec || line < 2 || line > rec.lines + 1) return null;
      const at = throughMaps(rec.maps, line - 1, column);
      if (!at) return null;
      // The compiled source is "export {};\n" + the cell (+ "\nexport {...}"): its line 1 is not the cell's.
      const cellLine = at.line - 1;
      const srcLines = rec.source.split('\n');
      if (cellLine < 1 || cellLine > srcLines.length) return null;
      const col = Math.min(at.column, srcLines[cellLine - 1].length + 1);
      return { kind: 'cell', cell: n, line: cellLine, column: col };
    }
    const rec = this.files.get(file);
    if (!rec) return null;
    const at = throughMaps(rec.maps, line, column);
    if (!at) return null;
    // (tslab prefixes "export {};\n" only to cells and in-memory modules; files are compiled as they are on disk)
    return { kind: 'file', file: rec.original, line: at.line, column: at.column };
  }
}

/**
 * An error that prints as its stack text alone: no frames left, no cause, no properties of its own to show.
 * @param {any} e
 * @param {string} stack
 */
function isBare(e, stack) {
  if (stack.split('\n').some((l) => FRAME.test(l)) || e.cause !== undefined) return false;
  return Object.keys(e).every((k) => k === 'name' || k === 'message' || k === 'stack');
}

/** @param {any} e */
function isErrorLike(e) {
  return e !== null && typeof e === 'object' && typeof e.stack === 'string';
}

/**
 * Where a rewritten stack says the error happened in the failing cell: the first `cell line L, column C` frame.
 * @param {string} text
 * @returns {Position | null}
 */
function cellPosition(text) {
  const m = /^\s+at (?:.*\()?cell line (\d+), column (\d+)\)?$/m.exec(text);
  return m ? { line: Number(m[1]), column: Number(m[2]) } : null;
}

module.exports = { CellErrors, parseFrame, cellPosition, cellUrl };
