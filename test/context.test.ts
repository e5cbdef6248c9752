// The runtime context (lib/settings/context.ts): resolved once from the env (and flags), passed down, and handed
// to children as an environment that resolves to the same context.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'path';
import { resolveConfig } from '../lib/settings/config';
import { childEnv, initRuntimeContext, resolveContext, runtimeContext, setRuntimeContext, withRuntimeContext } from '../lib/settings/context';
import { params } from '../lib/settings/params';
import { dataDir, PROJECT_ROOT } from '../lib/settings/paths';

test('defaults: data/ under the project, no CIFAR-10 or backbone folder, the backend ladder', () => {
  const c = resolveContext({});
  assert.equal(c.dataDir, path.join(PROJECT_ROOT, 'data'));
  assert.equal(c.cifar10Dir, undefined);
  assert.equal(c.backbonesDir, undefined);
  assert.equal(c.backend, 'auto');
  assert.equal(c.nativeDir, path.join(PROJECT_ROOT, 'data', 'native'));
  assert.equal(c.nativeOff, false);
  assert.equal(c.oneDnnOff, false);
  assert.equal(c.plotDir, undefined);
  assert.ok(Object.isFrozen(c));
});

test('env vars: folders relative to the folder the user typed them in, blanks mean the default', () => {
  const c = resolveContext({ INIT_CWD: '/home/u', DATA_DIR: 'd', CIFAR10_DIR: '/x/cifar', BACKBONES_DIR: '', TFJS_BACKEND: 'wasm', TFJS_NATIVE_DIR: 'data/n2', TFJS_NATIVE: 'off', TF_ENABLE_ONEDNN_OPTS: '0' });
  assert.equal(c.dataDir, '/home/u/d');
  assert.equal(c.cifar10Dir, '/x/cifar');
  assert.equal(c.backbonesDir, undefined);
  assert.equal(c.backend, 'wasm');
  assert.equal(c.nativeDir, path.join(PROJECT_ROOT, 'data', 'n2'));
  assert.ok(c.nativeOff && c.oneDnnOff);
});

test('flags win over env vars; bad values fail with the schema\'s one line', () => {
  const env = { INIT_CWD: '/home/u', DATA_DIR: 'env-data', TFJS_BACKEND: 'cpu' };
  const { config } = resolveConfig(['--data-dir', 'flag-data', '--backend=wasm'], env);
  const c = resolveContext(env, config);
  assert.equal(c.dataDir, '/home/u/flag-data');
  assert.equal(c.backend, 'wasm');
  assert.throws(() => resolveConfig(['--backend', 'gpu'], {}), /^Error: --backend=gpu is not a backend: expected one of auto, tensorflow, webgpu, wasm, cpu$/);
  assert.throws(() => resolveContext({ TFJS_BACKEND: 'webgl' }), /^Error: TFJS_BACKEND="webgl" is not a backend/);
});

test('childEnv resolves to the same context (absolute paths), defaults left unset', () => {
  const c = resolveContext({ INIT_CWD: '/home/u', PATH: '/bin', DATA_DIR: 'd', BACKBONES_DIR: 'b', TFJS_BACKEND: 'auto', PLOT_DIR: '/p' });
  const env = childEnv(c, { EXTRA: '1' });
  assert.equal(env.PATH, '/bin');
  assert.equal(env.EXTRA, '1');
  assert.equal(env.DATA_DIR, '/home/u/d');
  assert.equal(env.BACKBONES_DIR, '/home/u/b');
  assert.ok(!('TFJS_BACKEND' in env) && !('CIFAR10_DIR' in env));
  const again = resolveContext({ ...env, INIT_CWD: '/elsewhere' });
  for (const k of ['dataDir', 'cifar10Dir', 'backbonesDir', 'backend', 'plotDir'] as const) assert.equal(again[k], c[k], k);
  assert.ok(!('DATA_DIR' in childEnv(resolveContext({ PATH: '/bin' }))), 'the default data folder is not written out');
});

test('the process\'s context: set once, overridden for a call (sync, async, throwing), dataDir() follows it', async () => {
  const saved = runtimeContext();
  try {
    initRuntimeContext({ DATA_DIR: '/tmp/ctx-a' });
    assert.equal(dataDir('runs'), '/tmp/ctx-a/runs');
    assert.equal(withRuntimeContext({ dataDir: '/tmp/ctx-b' }, () => dataDir()), '/tmp/ctx-b');
    assert.equal(await withRuntimeContext({ dataDir: '/tmp/ctx-c' }, async () => dataDir()), '/tmp/ctx-c');
    assert.throws(() => withRuntimeContext({ dataDir: '/tmp/ctx-d' }, () => { throw new Error('boom'); }), /boom/);
    await assert.rejects(withRuntimeContext({ dataDir: '/tmp/ctx-e' }, async () => { throw new Error('boom'); }), /boom/);
    assert.equal(dataDir(), '/tmp/ctx-a', 'restored after each');
  } finally {
    setRuntimeContext(saved);
  }
});

test('params(): blank context settings are the default, and only the process\'s own env sets the context', () => {
  const saved = runtimeContext();
  try {
    const p = params({ dataDir: null as string | null, backend: 'auto' }, { env: { DATA_DIR: '', TFJS_BACKEND: 'cpu' }, quiet: true });
    assert.deepEqual({ ...p }, { dataDir: null, backend: 'cpu' });
    assert.equal(runtimeContext(), saved, 'a given env leaves the process\'s context alone');
  } finally {
    setRuntimeContext(saved);
  }
});
