import { test, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import * as fs from 'fs';
import * as path from 'path';
import { initBackend } from '../lib/engine/backend';
import { nativeRoot } from '../lib/engine/native';
import { resolveContext, withRuntimeContext } from '../lib/settings/context';

function capture() {
  const lines: string[] = [];
  const warnings: string[] = [];
  return { lines, warnings, log: (l: string) => lines.push(l), warn: (l: string) => warnings.push(l) };
}

describe('backend ladder', () => {
  test('falls back to wasm when the native backend is not installed, saying why in one line', async () => {
    const out = capture();
    const choice = await initBackend({
      reset: true,
      prefer: 'auto',
      ...out,
      loadNative: () => {
        throw new Error('native TensorFlow not installed: python3 not found on PATH (install Python 3 with pip, then `npm run setup:native`)');
      },
      probeWebgpu: async () => { throw new Error('no WebGPU adapter here (test stand-in)'); },
    });
    assert.equal(choice.name, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
    assert.equal(out.lines.length, 1);
    assert.match(out.lines[0], /^tfjs backend: wasm \(SIMD, [^;]*\); the native TensorFlow backend is not installed: python3 not found on PATH \(install Python 3 with pip, then `npm run setup:native`\); webgpu skipped: no WebGPU adapter here \(test stand-in\)$/);
    assert.doesNotMatch(out.lines[0], /not used|error/i, 'a normal fallback reads as information');
    assert.deepEqual(out.warnings, []);
  });

  test('a broken native install (libcudart missing) never crashes: it falls back', async () => {
    const out = capture();
    const choice = await initBackend({
      reset: true,
      prefer: 'auto',
      ...out,
      loadNative: () => {
        throw new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory');
      },
      probeWebgpu: async () => { throw new Error('no WebGPU adapter here (test stand-in)'); },
    });
    assert.equal(choice.name, 'wasm');
    assert.deepEqual(choice.skipped, [
      { name: 'tensorflow', reason: 'libcudart.so.11.0: cannot open shared object file: No such file or directory' },
      { name: 'webgpu', reason: 'no WebGPU adapter here (test stand-in)' },
    ]);
  });

  test('the real install: the native backend is used when npm install built it, otherwise skipped with a reason', async () => {
    const out = capture();
    const choice = await initBackend({ reset: true, prefer: 'auto', ...out });
    const installed = fs.existsSync(path.join(nativeRoot(), 'current.json'));
    if (installed) {
      assert.equal(choice.name, 'tensorflow', choice.summary);
      assert.match(out.lines[0], /^tfjs backend: tensorflow \(libtensorflow 2\.\d+\.\d+, (GPU|CPU, (oneDNN, )?\d+ threads)/);
      assert.equal((tf.backend() as any).binding.TF_Version, '2.21.0');
    } else {
      assert.equal(choice.name, 'wasm');
      assert.match(choice.skipped[0].reason, /^native TensorFlow (not installed|skipped)/);
    }
  });

  test('tensorflow wins when it registers (top of the ladder)', async () => {
    // Stand-in for the native addon: registering a backend named 'tensorflow' is all its import does.
    const { MathBackendCPU } = require('@tensorflow/tfjs-backend-cpu');
    const out = capture();
    try {
      const choice = await initBackend({
        reset: true,
        prefer: 'auto',
        ...out,
        loadNative: () => tf.registerBackend('tensorflow', () => new MathBackendCPU(), 0),
        // A machine with a hardware WebGPU adapter would (rightly) prefer it to a CPU tensorflow: keep this one GPU-less.
        probeWebgpu: async () => { throw new Error('no WebGPU adapter here (test stand-in)'); },
      });
      assert.equal(choice.name, 'tensorflow');
      assert.match(out.lines[0], /^tfjs backend: tensorflow \(libtensorflow /);
    } finally {
      tf.removeBackend('tensorflow');
    }
  });

  test('TFJS_BACKEND=cpu is obeyed, with a loud warning', async () => {
    const out = capture();
    const backend = resolveContext({ ...process.env, TFJS_BACKEND: 'cpu' }).backend;
    const choice = await withRuntimeContext({ backend }, () => initBackend({ reset: true, ...out }));
    assert.equal(choice.name, 'cpu');
    assert.match(out.lines[0], /forced by TFJS_BACKEND/);
    assert.match(out.warnings[0], /about 40x slower than wasm/);
  });

  test('a bad TFJS_BACKEND value is a clear error; an empty one means auto', () => {
    assert.throws(() => resolveContext({ TFJS_BACKEND: 'webgl' }), /^Error: TFJS_BACKEND="webgl" is not a backend: expected one of auto, tensorflow, webgpu, wasm, cpu$/);
    assert.equal(resolveContext({ TFJS_BACKEND: 'webgpu' }).backend, 'webgpu');
    assert.equal(resolveContext({ TFJS_BACKEND: '' }).backend, 'auto');
    assert.equal(resolveContext({}).backend, 'auto');
  });

  test('a forced tensorflow backend that cannot load is an error, not a silent fallback', async () => {
    await assert.rejects(
      initBackend({ reset: true, prefer: 'tensorflow', ...capture(), loadNative: () => { throw new Error('no libtensorflow'); } }),
      /no tfjs backend could start: tensorflow: no libtensorflow/,
    );
  });
});
