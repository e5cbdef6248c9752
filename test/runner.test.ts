// The headless runner end to end: real kernel (project kernelspec + tslab), real ZeroMQ, the CLI as CI uses it, on
// tiny notebooks written here. Kernel startup is ~2 s, so each case is one notebook run.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { Notebook, CodeCell, joinText, readNotebook } from '../lib/jupyter/nbformat';
import { errorLocation, errorSummary, runNotebook, NotebookRunError } from '../lib/jupyter/runner';

const tmp = fs.mkdtempSync(path.join(PROJECT_ROOT, 'data', 'test-runner-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function writeNb(name: string, cells: Array<['code' | 'markdown', string]>): string {
  const nb = {
    cells: cells.map(([t, src]) => (t === 'code' ? { cell_type: t, metadata: {}, execution_count: null, outputs: [], source: src } : { cell_type: t, metadata: {}, source: src })),
    metadata: {},
    nbformat: 4,
    nbformat_minor: 4, // no cell ids: the runner must upgrade to 4.5
  };
  const file = path.join(tmp, name);
  fs.writeFileSync(file, JSON.stringify(nb));
  return file;
}

function cli(args: string[], opts: { onStderr?: (s: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--require', 'ts-node/register/transpile-only', path.join(PROJECT_ROOT, 'scripts', 'notebooks.ts'), '--out', path.join(tmp, 'out'), ...args], {
      cwd: PROJECT_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (b) => {
      stderr += b.toString();
      opts.onStderr?.(stderr, child);
    });
    child.on('exit', (code) => resolve({ code, stderr }));
  });
}

/** Gone = no such process, or a zombie nobody reaped yet (it runs nothing). */
function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return true;
  }
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
}

const lastLine = (s: string) => s.trim().split('\n').pop() ?? '';
const code = (nb: Notebook) => nb.cells.filter((c): c is CodeCell => c.cell_type === 'code');

test('a passing notebook: outputs, execution counts, display updates and params saved in an nbformat 4.5 copy', async () => {
  const file = writeNb('pass.ipynb', [
    ['markdown', '# Title'],
    ['code', "console.log('value', process.env.SOME_VALUE);\nconsole.error('to stderr');"],
    ['code', "import { notebookDisplay } from './lib/jupyter/notebook';\nconst d = notebookDisplay()!.newDisplay();\nd.text('first');\nd.text('second');"],
    ['code', '   '], // empty cells are skipped, like nbclient
    ['code', "import { params } from './lib/settings/params';\nconst P = params({ someValue: 1 });\nconsole.log(P.someValue * 2);"],
  ]);
  const before = fs.readFileSync(file, 'utf8');
  const r = await cli([file, '-p', 'SOME_VALUE=21']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fs.readFileSync(file, 'utf8'), before, 'source notebook must stay untouched without --in-place');
  const out = readNotebook(path.join(tmp, 'out', 'pass.ipynb'));
  const raw = JSON.parse(fs.readFileSync(path.join(tmp, 'out', 'pass.ipynb'), 'utf8'));
  assert.equal(raw.nbformat_minor, 5);
  assert.ok(raw.cells.every((c: { id?: string }) => typeof c.id === 'string' && /^[a-zA-Z0-9-_]{1,64}$/.test(c.id)));
  const cells = code(out);
  assert.deepEqual(cells.map((c) => c.execution_count), [1, 2, null, 3]);
  assert.deepEqual(cells[0].outputs.map((o) => o.output_type === 'stream' && [o.name, joinText(o.text)]), [['stdout', 'value 21\n'], ['stderr', 'to stderr\n']]);
  assert.equal(cells[1].outputs.length, 1, 'an updated display stays one output');
  assert.deepEqual((cells[1].outputs[0] as { data: Record<string, unknown> }).data['text/plain'], ['second']);
  assert.match(joinText((cells[3].outputs[0] as { text: string[] }).text), /^parameters: someValue=21 \(env SOME_VALUE\)\n {2}from the environment: SOME_VALUE=21; [^\n]*\n42\n$/);
  assert.equal((out.metadata.kernelspec as { name: string }).name, 'cifar10-tslab');
  assert.equal((out.metadata.runner as { status: string }).status, 'ok');
});

test('a failing cell: non-zero exit, one line naming notebook, cell number, failing line and error text', async () => {
  const file = writeNb('fail.ipynb', [
    ['markdown', 'intro'],
    ['code', "console.log('before');"],
    ['code', "const x = 1;\nthrow new Error('boom ' + x);"],
    ['code', "console.log('never');"],
  ]);
  const r = await cli([file]);
  assert.equal(r.code, 1);
  assert.match(lastLine(r.stderr), /fail\.ipynb: cell 3, line 2 \(`throw new Error\('boom ' \+ x\);`\) failed: Error: boom 1$/);
  const out = readNotebook(path.join(tmp, 'out', 'fail.ipynb'));
  const cells = code(out);
  assert.equal(joinText((cells[0].outputs[0] as { text: string[] }).text), 'before\n', 'partial outputs are saved');
  assert.equal(cells[2].execution_count, null, 'cells after the failure do not run');
  assert.equal((out.metadata.runner as { status: string }).status, 'error');
});

test('a runtime error in an awaited function names the line it happened on', async () => {
  const file = writeNb('async-err.ipynb', [
    ['code', "const none: any = undefined;\nasync function count() {\n  await new Promise((res) => setTimeout(res, 10));\n  return none.images.length;\n}\nconsole.log(await count());"],
  ]);
  await assert.rejects(runNotebook(file, { outFile: path.join(tmp, 'out', 'async-err.ipynb') }), (err: NotebookRunError) => {
    assert.equal(err.message, `${path.relative(process.cwd(), file)}: cell 1, line 4 (\`return none.images.length;\`) failed: TypeError: Cannot read properties of undefined (reading 'images')`);
    assert.equal(err.cell, 1);
    assert.equal(err.line, 4);
    return true;
  });
  const stderr = joinText((code(readNotebook(path.join(tmp, 'out', 'async-err.ipynb')))[0].outputs[0] as { text: string[] }).text);
  assert.match(stderr, /^TypeError: .*\n    at count \(cell line 4, column 15\)\n    at async cell line 6, column 13\n$/, 'the saved output shows the cell lines, no internals');
});

test('a TypeScript error is reported with its diagnostic', async () => {
  const file = writeNb('tserr.ipynb', [['code', "const n: number = 'text';"]]);
  await assert.rejects(runNotebook(file, { outFile: path.join(tmp, 'out', 'tserr.ipynb') }), (err: NotebookRunError) => {
    assert.match(err.message, /tserr\.ipynb: cell 1 \(`const n: number = 'text';`\) failed: 1:7 - Type 'string' is not assignable to type 'number'/);
    assert.equal(err.cell, 1);
    return true;
  });
});

test('a hung cell: timeout error, kernel killed, no process left behind', async () => {
  const file = writeNb('hang.ipynb', [
    ['code', 'console.log(`pid=${process.pid}`);'],
    ['code', 'await new Promise(() => {});'],
  ]);
  let pid = 0;
  const t0 = Date.now();
  await assert.rejects(
    runNotebook(file, { outFile: path.join(tmp, 'out', 'hang.ipynb'), timeoutSec: 2, onKernel: (k) => (pid = k.pid) }),
    /hang\.ipynb: cell 2 \(`await new Promise\(\(\) => \{\}\);`\) timed out: cell did not finish within 2 s/,
  );
  assert.ok(Date.now() - t0 < 20_000, 'the timeout must not wait for the cell');
  assert.ok(pid > 0);
  const out = readNotebook(path.join(tmp, 'out', 'hang.ipynb'));
  assert.equal(joinText((code(out)[0].outputs[0] as { text: string[] }).text), `pid=${pid}\n`, 'the pid we check is the kernel that ran the cells');
  assert.equal(processGone(pid), true, `kernel pid ${pid} still running`);
  assert.equal(code(out)[1].outputs.at(-1)?.output_type, 'error');
});

test('Ctrl-C (SIGINT) on the CLI during a hung cell shuts the kernel down', async () => {
  const file = writeNb('sigint.ipynb', [['code', 'await new Promise(() => {});']]);
  let pid = 0;
  let sent = false;
  const r = await cli([file, '--timeout', '120'], {
    onStderr: (s, child) => {
      const m = /started \(pid (\d+)\)/.exec(s);
      if (m && !sent) {
        sent = true;
        pid = Number(m[1]);
        setTimeout(() => child.kill('SIGINT'), 1000); // let the cell start
      }
    },
  });
  assert.ok(pid > 0, r.stderr);
  assert.equal(r.code, 130, r.stderr);
  assert.match(lastLine(r.stderr), /sigint\.ipynb: cell 1 .* interrupted/);
  assert.equal(processGone(pid), true, `kernel pid ${pid} still running`);
});

test('--in-place writes outputs into the notebook itself', async () => {
  const file = writeNb('inplace.ipynb', [['code', '6 * 7']]);
  const r = await cli([file, '--in-place']);
  assert.equal(r.code, 0, r.stderr);
  const nb = readNotebook(file);
  assert.equal(code(nb)[0].execution_count, 1);
  assert.equal(joinText((code(nb)[0].outputs[0] as { text: string[] }).text), '42\n'); // tslab prints values on stdout
  assert.equal(fs.existsSync(path.join(tmp, 'out', 'inplace.ipynb')), false);
});

test('errorSummary picks the error line out of tslab stderr', () => {
  const stderr = 'some warning\nevalmachine.<anonymous>:2\nthrow new Error("boom");\n^\n\nError: boom\n    at evalmachine.<anonymous>:2:7\n    at Script.runInThisContext (node:vm:1:1)\n';
  assert.equal(errorSummary(stderr), 'Error: boom');
  assert.equal(errorSummary('TypeError [ERR_X]: bad thing\n    at f (x.js:1:1)\n'), 'TypeError [ERR_X]: bad thing');
  assert.equal(errorSummary('1:7 - Cannot find name foo.\n2:1 - Other.\n'), '1:7 - Cannot find name foo.; 2:1 - Other.');
  assert.equal(errorSummary('just a thrown string\n'), 'just a thrown string');
  assert.equal(errorSummary(''), '(no error text on stderr)');
});

test('errorLocation reads the failing cell line from the kernel\'s rewritten stack', () => {
  const stderr = "TypeError: Cannot read properties of undefined (reading 'x')\n    at inner (lib/a.ts:3:4)\n    at helper (cell [2] line 9, column 1)\n    at go (cell line 4, column 7)\n    at async cell line 6, column 1\n";
  assert.deepEqual(errorLocation(stderr), { line: 4, column: 7 }, 'the innermost frame of the failing cell, not an earlier cell\'s');
  assert.deepEqual(errorLocation('Error: a\n    at cell line 1, column 1\nError: b\n    at cell line 5, column 2\n'), { line: 5, column: 2 }, 'the frames of the error errorSummary reports');
  assert.equal(errorLocation('InterruptedError: training interrupted in epoch 3/50'), undefined);
  assert.equal(errorLocation("2:1 - Cannot find name 'f'.\n"), undefined, 'TypeScript diagnostics carry their own line:column');
});
