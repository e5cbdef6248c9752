// Signals through npm. `kill -INT <npm's pid>` is what `timeout -s INT npm start`, supervisors and CI cancellation
// do: npm passes the signal to its child, which used to be `sh -c "ts-node ..."` — the shell held it, node never
// heard, the run went on, saved its model, and npm then exited 130. The package.json scripts now `exec` node, so node
// is npm's child and gets the signal; the exit status says what happened (stopped before finishing: 130 and an
// `interrupted:` line; finished: 0).
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { RECORD_BYTES, TEST_FILE, TRAIN_FILES, META_FILE } from '../lib/data/cifar10';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { writeFakeBackbone } from './fake-backbone';

const TS_NODE = require.resolve('ts-node/register/transpile-only');
const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
let work: string;
let backbones: string;

function skipLoudly(t: { skip: (m: string) => void }, why: string): void {
  console.log(`SKIPPED: ${why}`);
  t.skip(why);
}

/** A full-size CIFAR-10 folder (the loader insists on 10,000 records per file) of cheap synthetic images. */
function writeSyntheticCifar(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  [...TRAIN_FILES, TEST_FILE].forEach((f, b) => {
    const buf = Buffer.alloc(10000 * RECORD_BYTES);
    for (let i = 0; i < 10000; i++) {
      const o = i * RECORD_BYTES;
      buf[o] = (i + b) % 10;
      for (let p = 0; p < 3072; p++) buf[o + 1 + p] = (i * 7 + p * (buf[o] + 1)) % 256;
    }
    fs.writeFileSync(path.join(dir, f), buf);
  });
  fs.writeFileSync(path.join(dir, META_FILE), CLASSES.join('\n') + '\n');
}

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-signals-'));
  writeSyntheticCifar(path.join(work, 'cifar'));
  backbones = await writeFakeBackbone(path.join(work, 'backbones'));
});
after(() => fs.rmSync(work, { recursive: true, force: true })); // the fixtures are large (a synthetic CIFAR-10 is 180 MB)

/** Spawn `npm <args>` (same process group as this test: no detached group), collect its output. */
function startNpm(args: string[], env: Record<string, string | undefined>) {
  const child = spawn('npm', args, { cwd: PROJECT_ROOT, env: { ...process.env, INIT_CWD: undefined, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; at: number }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal, at: Date.now() })));
  return { child, output: () => out, exit };
}

const waitFor = async (pred: () => boolean, ms: number) => {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await new Promise((r) => setTimeout(r, 100))) if (pred()) return true;
  return false;
};

/** Pids of `pid`'s children, from /proc. */
const childrenOf = (pid: number): number[] => {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
};
const commandOf = (pid: number) => fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');

test('every long-running npm script execs node, so node is npm\'s child (no shell between them)', () => {
  const scripts: Record<string, string> = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')).scripts;
  for (const name of ['start', 'predict', 'bench', 'bench:load', 'bench:train', 'notebooks', 'report', 'lab', 'demo', 'regimes', 'export:keras', 'browser-check', 'setup:native', 'postinstall']) {
    assert.match(scripts[name] ?? '', /^exec node /, `scripts.${name}: ${scripts[name]}`);
  }
});

test('SIGINT to npm\'s pid only, during `npm start`: node stops within seconds, says "interrupted", exits 130, saves no model', async (t) => {
  // How npm hands the signal to node does not depend on the backend; on wasm the fake backbone's extraction runs in
  // worker threads that report only per chunk, so there is no reliable moment to interrupt it mid-way.
  if ((process.env.TFJS_BACKEND ?? 'tensorflow') !== 'tensorflow') return skipLoudly(t, 'checked on the tensorflow run (signal delivery through npm is backend-independent)');
  const model = path.join(work, 'model-interrupted');
  // Enough images that feature extraction is still running when the signal comes (the fake backbone is fast).
  const run = startNpm(['start', '--', '--backbones', 'mobilenet_v1_0.75', '--train-limit', '40000', '--val-limit', '1000', '--test-limit', '1000',
    '--epochs', '1', '--sweep-epochs', '0', '--lr', '0.001', '--dropout', '0.3', '--tta', '0', '--trainable-blocks', '0'], {
    CIFAR10_DIR: path.join(work, 'cifar'), BACKBONES_DIR: backbones, DATA_DIR: path.join(work, 'data'), MODELS_DIR: path.join(work, 'models'),
  });
  const extracting = await waitFor(() => /features mobilenet_v1_0\.75 160px plain: [\d,]+\/[\d,]+/.test(run.output()) || run.child.exitCode !== null, 120_000);
  if (!extracting || run.child.exitCode !== null) {
    run.child.kill('SIGKILL');
    const line = run.output().split('\n').find((l) => l.startsWith('error:')) ?? run.output().slice(-300);
    assert.fail(`npm start did not reach feature extraction, so there was nothing to interrupt: ${line.trim()}`);
  }
  const node = childrenOf(run.child.pid!);
  assert.deepEqual(node.map(commandOf).map((c) => /^node .*scripts\/main\.ts/.test(c)), [true], `npm's child: ${node.map(commandOf)}`);
  const sentAt = Date.now();
  process.kill(run.child.pid!, 'SIGINT'); // npm's pid only, as `timeout -s INT npm start` does
  const stopped = await Promise.race([run.exit, new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
  if (!stopped) {
    for (const p of [...node, run.child.pid!]) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
    assert.fail(`npm start was still running 15 s after SIGINT to npm; output: ${run.output().slice(-400)}`);
  }
  assert.ok(stopped.at - sentAt < 10_000, `stopped ${stopped.at - sentAt} ms after the signal`);
  assert.equal(stopped.code, 130, run.output().slice(-400));
  assert.match(run.output(), /^interrupted: features mobilenet_v1_0\.75 160px plain interrupted after [\d,]+ \/ [\d,]+ images/m);
  const saved = [model, path.join(work, 'models')].filter((d) => fs.existsSync(d)).flatMap((d) => (fs.readdirSync(d, { recursive: true }) as string[]).filter((f) => f.endsWith('model.json')));
  assert.deepEqual(saved, [], 'an interrupted run saves no model');
  assert.ok(node.every((p) => !fs.existsSync(`/proc/${p}`)), 'node is gone');
});

/** A runCli tool that waits for ever (a server, a long job outside any interruptible operation). */
function waitingTool(): string {
  const file = path.join(work, 'waiting-tool.ts');
  fs.writeFileSync(file, `
    import { runCli } from ${JSON.stringify(path.join(PROJECT_ROOT, 'lib', 'util', 'cli'))};
    runCli(async () => { console.log('ready'); await new Promise(() => setInterval(() => {}, 1000)); }, 'npm run waiting');
  `);
  return file;
}

for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
  test(`a runCli tool (predict, report, demo, bench:*, export:keras) stopped by ${sig} outside any operation: one line, ${code}`, async () => {
    const child = spawn(process.execPath, ['-r', TS_NODE, waitingTool()], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    assert.ok(await waitFor(() => out.includes('ready'), 30_000), out);
    child.kill(sig);
    const [status] = await new Promise<[number | null]>((r) => child.on('exit', (c) => r([c])));
    assert.equal(status, code);
    assert.equal(out.trim().split('\n').pop(), `interrupted: npm run waiting stopped by ${sig} before it finished`);
  });
}

test('npm run bench:load that finishes exits 0 (no signal, no "interrupted")', () => {
  const r = spawnSync('npm', ['run', '--silent', 'bench:load'], {
    cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000,
    env: { ...process.env, INIT_CWD: undefined, CIFAR10_DIR: path.join(work, 'cifar'), DATA_DIR: path.join(work, 'bench-data') },
  });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^saved .*load-.*\.json$/m);
  assert.doesNotMatch(r.stdout + r.stderr, /interrupted/);
});
