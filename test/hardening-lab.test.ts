// `npm run lab` as root (Docker, cloud VMs) used to exit 1 ("Running as root is not recommended. Use --allow-root to
// bypass."), and every start printed "UserWarning: Overriding existing pre_save_hook". Now, as root, it passes
// --allow-root with a one-line note (as Jupyter's Docker images do), passes extra arguments through, starts without
// the warning, still drops plotly PNG snapshots on save, and a SIGINT to npm's pid stops the server with 130.
// Skips loudly when JupyterLab is not installed or this is not root.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/settings/paths';

function skipLoudly(t: { skip: (m: string) => void }, why: string): void {
  console.log(`SKIPPED: ${why}`);
  t.skip(why);
}

const freePort = () => new Promise<number>((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const port = (s.address() as net.AddressInfo).port;
    s.close(() => resolve(port));
  });
});

const waitFor = async (pred: () => boolean, ms: number) => {
  for (const t0 = Date.now(); Date.now() - t0 < ms; await new Promise((r) => setTimeout(r, 200))) if (pred()) return true;
  return false;
};

test('npm run lab as root: starts (--allow-root, one note), passes --no-browser/--port through, no pre_save_hook warning; SIGINT to npm stops it, 130', async (t) => {
  if (spawnSync('jupyter', ['lab', '--version']).status !== 0) return skipLoudly(t, 'JupyterLab is not installed (pip install jupyterlab)');
  if (process.getuid!() !== 0) return skipLoudly(t, 'this case is about running as root; this process is not root');
  const port = await freePort();
  const token = crypto.randomBytes(12).toString('hex');
  const lab = spawn('npm', ['run', 'lab', '--', '--no-browser', '--port', String(port), `--IdentityProvider.token=${token}`], {
    cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, INIT_CWD: undefined },
  });
  let out = '';
  lab.stdout.on('data', (d) => (out += d));
  lab.stderr.on('data', (d) => (out += d));
  const exited = new Promise<{ code: number | null; at: number }>((r) => lab.on('exit', (code) => r({ code, at: Date.now() })));
  // A notebook saved through the server, under out/ (git-ignored), removed afterwards.
  const rel = `out/hardening-lab-${process.pid}`;
  try {
    const started = await waitFor(() => out.includes(`http://127.0.0.1:${port}/lab`) || lab.exitCode !== null, 90_000);
    assert.ok(started && lab.exitCode === null, `JupyterLab did not start; output: ${out.slice(-800)}`);
    assert.match(out, /^npm run lab: running as root \(uid 0, as in a container\): passing --allow-root, as the Jupyter Docker images do$/m);
    assert.doesNotMatch(out, /Running as root is not recommended/);
    assert.doesNotMatch(out, /Overriding existing pre_save_hook|UserWarning/);

    // The pre-save hook still works (it moved from the config trait to a server extension).
    const nb = {
      nbformat: 4, nbformat_minor: 5, metadata: {},
      cells: [{ cell_type: 'code', id: 'c1', execution_count: 1, metadata: {}, source: 'plot', outputs: [{
        output_type: 'display_data', metadata: {},
        data: { 'application/vnd.plotly.v1+json': { data: [] }, 'image/png': 'iVBORw0KGgo=', 'text/plain': 'figure' },
      }, { output_type: 'display_data', metadata: {}, data: { 'image/png': 'iVBORw0KGgo=' } }] }],
    };
    const url = (p: string) => `http://127.0.0.1:${port}/api/contents/${p}?token=${token}`;
    fs.mkdirSync(path.join(PROJECT_ROOT, 'out'), { recursive: true }); // a fresh clone has no out/ yet: the contents API makes one level only
    const mk = await fetch(url(rel), { method: 'PUT', body: JSON.stringify({ type: 'directory' }) });
    assert.ok(mk.ok, `mkdir: ${mk.status}`);
    const put = await fetch(url(`${rel}/t.ipynb`), { method: 'PUT', body: JSON.stringify({ type: 'notebook', content: nb }) });
    assert.ok(put.ok, `save: ${put.status}`);
    const saved = JSON.parse(fs.readFileSync(path.join(PROJECT_ROOT, rel, 't.ipynb'), 'utf8'));
    assert.deepEqual(Object.keys(saved.cells[0].outputs[0].data).sort(), ['application/vnd.plotly.v1+json', 'text/plain'], 'the snapshot beside the figure is dropped');
    assert.deepEqual(Object.keys(saved.cells[0].outputs[1].data), ['image/png'], 'a plain image is kept');

    const sentAt = Date.now();
    process.kill(lab.pid!, 'SIGINT'); // npm's pid only
    const stopped = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 20_000))]);
    assert.ok(stopped, `npm run lab still running 20 s after SIGINT to npm; output: ${out.slice(-400)}`);
    assert.equal(stopped.code, 130, out.slice(-400));
    assert.ok(stopped.at - sentAt < 15_000);
    assert.match(out, /^npm run lab: interrupted by SIGINT; JupyterLab stopped$/m);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(await fetch(url('')).then(() => false, () => true), 'the server is down');
  } finally {
    if (lab.exitCode === null) {
      spawnSync('pkill', ['-TERM', '-P', String(lab.pid)]); // children of this npm only (its lab.js), by parent pid
      lab.kill('SIGTERM');
    }
    fs.rmSync(path.join(PROJECT_ROOT, rel), { recursive: true, force: true });
  }
});
