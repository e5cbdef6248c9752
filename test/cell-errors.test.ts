// Runtime errors at the cell's own line (jupyter/kernels/cifar10-tslab/cell-errors.js): the stack rewriting on its
// own, then tslab's real converter and executor with the hooks installed (in this process, no kernel), then the
// project kernel as JupyterLab and the runner start it.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { format } from 'util';
import { JupyterMessage, Kernel, loadKernelSpec } from '../lib/jupyter/kernel';
import { errorLocation } from '../lib/jupyter/runner';
import { PROJECT_ROOT } from '../lib/settings/paths';

interface Frame { indent: string; async: boolean; fn: string | null; location: string; file: string | null; line: number; column: number }
interface CellErrorsInstance {
  current: number;
  rewriteStack(stack: string): string;
  hookTypeScript(tsFile: string): unknown;
  hookConverters<T>(convs: T): T;
  hookConsole(c: { log: (...a: unknown[]) => void; error: (...a: unknown[]) => void }): { log: (...a: unknown[]) => void; error: (...a: unknown[]) => void };
  hookExecutor<E>(e: E): E;
  hookVm(vm: unknown): unknown;
}
const kernelDir = path.join(PROJECT_ROOT, 'jupyter', 'kernels', 'cifar10-tslab');
const tslabDir = path.join(PROJECT_ROOT, 'node_modules', 'tslab');
// Plain JS (the kernel launcher runs it with node), so typed here by hand.
const { CellErrors, parseFrame } = require(path.join(kernelDir, 'cell-errors.js')) as {
  CellErrors: new (opts: { root: string; internal?: string[] }) => CellErrorsInstance;
  parseFrame(line: string): Frame | null;
};

/** What no rewritten error may show: compiled code, tslab, Node internals, the vm script's name. */
function assertNoInternals(text: string): void {
  for (const bad of ['evalmachine', 'tslab', 'node:internal', 'node:vm', 'exports.', 'tsLastExpr', '__tslab__', 'launch.js', 'cell-errors.js']) {
    assert.ok(!text.includes(bad), `shows ${JSON.stringify(bad)}:\n${text}`);
  }
}

/** 1-based line and column of `needle` in a file's text (the test follows the source if it is edited). */
function positionIn(file: string, needle: string): { line: number; column: number } {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const line = lines.findIndex((l) => l.includes(needle));
  assert.ok(line >= 0, `${needle} not in ${file}`);
  return { line: line + 1, column: lines[line].indexOf(needle) + 1 };
}

test('parseFrame reads the frame forms V8 prints', () => {
  assert.deepEqual(parseFrame('    at helper (/a/b.js:12:5)'), { indent: '    ', async: false, fn: 'helper', location: '/a/b.js:12:5', file: '/a/b.js', line: 12, column: 5 });
  assert.deepEqual(parseFrame('    at tslab-cell-3.js:4:17'), { indent: '    ', async: false, fn: null, location: 'tslab-cell-3.js:4:17', file: 'tslab-cell-3.js', line: 4, column: 17 });
  const a = parseFrame('    at async Promise.all (index 0)')!;
  assert.equal(a.async, true);
  assert.equal(a.fn, 'Promise.all');
  assert.equal(a.file, null, 'a builtin has no file position');
  assert.equal(parseFrame('    at new Foo (node:internal/x:1:2)')!.fn, 'new Foo');
  assert.equal(parseFrame('TypeError: not a frame'), null);
});

test('rewriteStack drops internal frames, relativises project paths, strips the compiled-line excerpt', () => {
  const ce = new CellErrors({ root: '/proj', internal: ['/proj/node_modules/tslab'] });
  const stack = [
    'evalmachine.<anonymous>:4', // Node's excerpt of the compiled line
    'exports.tsLastExpr = console.log(none.images.length);',
    '                                      ^',
    '',
    "TypeError: Cannot read properties of undefined (reading 'images')",
    '    at go (/proj/lib/a.js:3:9)',
    '    at Array.map (<anonymous>)',
    '    at f (/elsewhere/x.js:1:2)',
    '    at Object.<anonymous> (/proj/node_modules/tslab/dist/executor.js:180:40)',
    '    at evalmachine.<anonymous>:9:3',
    '    at Script.runInThisContext (node:vm:137:12)',
    '    at new Promise (<anonymous>)',
    '    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)',
  ].join('\n');
  assert.equal(
    ce.rewriteStack(stack),
    ["TypeError: Cannot read properties of undefined (reading 'images')", '    at go (lib/a.js:3:9)', '    at Array.map (<anonymous>)', '    at f (/elsewhere/x.js:1:2)'].join('\n'),
  );
  // JSON.parse's excerpt has no caret line.
  assert.equal(ce.rewriteStack('<anonymous_script>:1\n[1,\n\nSyntaxError: Unexpected end of JSON input\n    at JSON.parse (<anonymous>)'), 'SyntaxError: Unexpected end of JSON input');
  // A frame of a cell script the mapper does not know (or the wrapper's line) is dropped, not shown compiled.
  assert.equal(ce.rewriteStack('Error: x\n    at tslab-cell-99.js:2:1\n    at /proj/lib/b.js:1:1'), 'Error: x\n    at lib/b.js:1:1');
  // Stackless errors (the project's InterruptedError sets a one-line stack) and multi-line messages stay as they are.
  assert.equal(ce.rewriteStack('InterruptedError: features interrupted after 3 / 9 images; 2 cached'), 'InterruptedError: features interrupted after 3 / 9 images; 2 cached');
  assert.equal(ce.rewriteStack('Error: line one\nline two\n    at node:internal/x:1:1'), 'Error: line one\nline two');
});

// tslab's own converter and executor, hooked as launch.js hooks them, in this process.
let executor: { execute(src: string): Promise<boolean> };
let printed = '';
let closeConverter = () => {};
before(() => {
  if (process.cwd() !== PROJECT_ROOT) process.chdir(PROJECT_ROOT); // tslab compiles relative to its working directory
  // (this file calls the executor here, as tslab's kernel does there: its frames are the machinery too)
  const ce = new CellErrors({ root: PROJECT_ROOT, internal: [tslabDir, kernelDir, __filename] });
  ce.hookTypeScript(require.resolve('@tslab/typescript-for-tslab', { paths: [path.join(tslabDir, 'dist')] }));
  ce.hookVm(require('vm')); // ts-node's source-map-support, active in this process, reads the vm file name
  const { createConverter } = require(path.join(tslabDir, 'dist', 'converter.js'));
  const { createExecutor } = require(path.join(tslabDir, 'dist', 'executor.js'));
  const node = createConverter({ isJS: false, isBrowser: false });
  closeConverter = () => node.close();
  const print = (...a: unknown[]) => void (printed += format(...a) + '\n');
  executor = ce.hookExecutor(createExecutor(PROJECT_ROOT, ce.hookConverters({ node, close: closeConverter }), ce.hookConsole({ log: print, error: print })));
});
after(() => closeConverter());

async function exec(src: string): Promise<{ ok: boolean; text: string }> {
  printed = '';
  const ok = await executor.execute(src);
  return { ok, text: printed };
}

test('through tslab: a TypeError, an earlier cell\'s function, an awaited async error, a lib frame', async () => {
  // [1] a runtime TypeError on line 3, column 18 (`images`)
  let r = await exec("const a = 1;\nconst none: any = undefined;\nconsole.log(none.images.length);");
  assert.equal(r.ok, false);
  assert.equal(r.text.trim(), "TypeError: Cannot read properties of undefined (reading 'images')\n    at cell line 3, column 18");
  // [2] a function defined here, called from [3]
  r = await exec("function helper(x: number) {\n  return JSON.parse('{bad' + x);\n}");
  assert.equal(r.ok, true, r.text);
  // [3] awaited: the SyntaxError thrown by JSON.parse in [2]'s helper, called after an await
  r = await exec("const q = 2;\nasync function load() {\n  await new Promise((res) => setTimeout(res, 10));\n  return helper(q);\n}\nawait load();");
  assert.equal(r.ok, false);
  assert.match(r.text, /^SyntaxError: .*JSON.*\n    at JSON\.parse \(<anonymous>\)\n    at helper \(cell \[2\] line 2, column 15\)\n    at load \(cell line 4, column 10\)\n    at async cell line 6, column 1\n$/);
  // [4] an error thrown in a project file that tslab compiled: its .ts line and column, relative path
  r = await exec("import { concatFeatures } from './lib/features/labeled-features';\nconst z = 3;\nconcatFeatures([]);");
  assert.equal(r.ok, false);
  const at = positionIn(path.join(PROJECT_ROOT, 'lib', 'features', 'labeled-features.ts'), "new Error('concatFeatures: nothing to concatenate')");
  // (an imported function is called as `(0, module.f)(...)` in the compiled code: V8 places that call at its `(`)
  assert.equal(r.text.trim(), `Error: concatFeatures: nothing to concatenate\n    at concatFeatures (lib/features/labeled-features.ts:${at.line}:${at.column})\n    at cell line 3, column 15`);
  // [5] values still display, TypeScript errors are printed as before
  r = await exec('const v = 6 * 7;\nv');
  assert.deepEqual(r, { ok: true, text: '42\n' });
  r = await exec("const w = 1;\nnotDefinedFn(w);");
  assert.equal(r.text.trim(), "2:1 - Cannot find name 'notDefinedFn'.");
});

test('through tslab: an error with no frames left prints as its one line, not in brackets', async () => {
  // As the project's InterruptedError does: a one-line stack. Node's inspect would print "[InterruptedError: …]".
  let r = await exec("class StopError extends Error {\n  constructor(m: string) { super(m); this.name = 'StopError'; this.stack = `StopError: ${m}`; }\n}\nthrow new StopError('interrupted after 3 / 9 images');");
  assert.equal(r.text, 'StopError: interrupted after 3 / 9 images\n');
  // An error with properties of its own still prints them.
  r = await exec("const coded = Object.assign(new Error('no file'), { code: 'ENOENT' });\nthrow coded;");
  assert.match(r.text, /^Error: no file\n    at cell line 1, column 29 \{\n  code: 'ENOENT'\n\}\n$/);
});

test('through tslab: the printed error keeps its own stack (it may be printed again)', async () => {
  const r = await exec("(globalThis as any).kept = new Error('again');\nthrow (globalThis as any).kept;");
  assert.match(r.text, /^Error: again\n    at cell line 1, column 28\n$/);
  const own = (globalThis as { kept?: Error }).kept!.stack!;
  assert.match(own, /tslab-cell-\d+\.js:\d+:\d+/, 'the error object was left as V8 made it');
});

// The project kernel, as JupyterLab and the runner start it.
let kernel: Kernel;
async function run(code: string): Promise<{ status: string; text: string }> {
  let text = '';
  const onIopub = (m: JupyterMessage) => {
    if (m.header.msg_type === 'stream') text += m.content.text;
  };
  const reply = (await kernel.execute(code, { timeoutMs: 60_000, onIopub })) as { status: string };
  if (reply.status !== 'ok') await new Promise((res) => setTimeout(res, 300)); // tslab's stop-on-error window
  return { status: reply.status, text };
}

test('the project kernel: runtime errors name the cell line (sync, awaited async, JSON.parse) and no internals', async (t) => {
  kernel = await Kernel.start({ spec: loadKernelSpec(), cwd: PROJECT_ROOT });
  t.after(() => kernel.shutdown());
  const sync = await run("const none: any = undefined;\nconsole.log(none.images.length);");
  assert.equal(sync.status, 'error');
  assert.equal(sync.text.trim(), "TypeError: Cannot read properties of undefined (reading 'images')\n    at cell line 2, column 18");

  const awaited = await run("async function fetchCount(): Promise<number> {\n  await new Promise((res) => setTimeout(res, 20));\n  throw new RangeError('count out of range');\n}\nconst c = await fetchCount();");
  assert.equal(awaited.status, 'error');
  assertNoInternals(awaited.text);
  assert.match(awaited.text, /^RangeError: count out of range\n    at fetchCount \(cell line 3, column 9\)\n    at async cell line 5, column 11\n$/);
  assert.deepEqual(errorLocation(awaited.text), { line: 3, column: 9 }, 'the runner reads the innermost cell frame');

  const parse = await run("const text = '{\"a\": 1,}';\nconst obj = JSON.parse(text);\nconsole.log(obj);");
  assert.equal(parse.status, 'error');
  assertNoInternals(parse.text);
  assert.match(parse.text, /^SyntaxError: .*JSON.*\n    at JSON\.parse \(<anonymous>\)\n    at cell line 2, column 18\n$/);

  // The compile-time path is unchanged.
  const ts = await run('const w = 1;\nnotDefinedFn(w);');
  assert.equal(ts.text.trim(), "2:1 - Cannot find name 'notDefinedFn'.");
});
