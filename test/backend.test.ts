import { test, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/backend';

function capture() {
  const lines: string[] = [];
  const warnings: string[] = [];
  return { lines, warnings, log: (l: string) => lines.push(l), warn: (l: string) => warnings.push(l) };
}

describe('backend ladder', () => {
  test('falls back to wasm when tfjs-node-gpu is not installed, saying why in one line', async () => {
    const out = capture();
    const choice = await initBackend({
      reset: true,
      prefer: 'auto',
      ...out,
      loadNodeGpu: () => {
        throw new Error("Cannot find module '@tensorflow/tfjs-node-gpu'\nRequire stack: ...");
      },
    });
    assert.equal(choice.name, 'wasm');
    assert.equal(tf.getBackend(), 'wasm');
    assert.equal(out.lines.length, 1);
    assert.match(out.lines[0], /^tfjs backend: wasm \(SIMD.*skipped tensorflow: Cannot find module '@tensorflow\/tfjs-node-gpu'$/);
    assert.deepEqual(out.warnings, []);
  });

  test('a broken tfjs-node-gpu (libcudart missing) never crashes: it falls back', async () => {
    const out = capture();
    const choice = await initBackend({
      reset: true,
      prefer: 'auto',
      ...out,
      loadNodeGpu: () => {
        throw new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory');
      },
    });
    assert.equal(choice.name, 'wasm');
    assert.deepEqual(choice.skipped, [{ name: 'tensorflow', reason: 'libcudart.so.11.0: cannot open shared object file: No such file or directory' }]);
  });

  test('the real install: tfjs-node-gpu is used when it loads, otherwise skipped with a reason', async () => {
    const out = capture();
    const choice = await initBackend({ reset: true, prefer: 'auto', ...out });
    let installed = true;
    try {
      require.resolve('@tensorflow/tfjs-node-gpu');
    } catch {
      installed = false;
    }
    if (installed) assert.ok(choice.name === 'tensorflow' || choice.skipped[0].name === 'tensorflow');
    else {
      assert.equal(choice.name, 'wasm');
      assert.match(choice.skipped[0].reason, /Cannot find module '@tensorflow\/tfjs-node-gpu'/);
    }
  });

  test('tensorflow wins when it registers (top of the ladder)', async () => {
    // Stand-in for tfjs-node-gpu: registering a backend named 'tensorflow' is all its import does.
    const { MathBackendCPU } = require('@tensorflow/tfjs-backend-cpu');
    const out = capture();
    try {
      const choice = await initBackend({
        reset: true,
        prefer: 'auto',
        ...out,
        loadNodeGpu: () => tf.registerBackend('tensorflow', () => new MathBackendCPU(), 0),
      });
      assert.equal(choice.name, 'tensorflow');
      assert.match(out.lines[0], /^tfjs backend: tensorflow \(tfjs-node-gpu/);
    } finally {
      tf.removeBackend('tensorflow');
    }
  });

  test('TFJS_BACKEND=cpu is obeyed, with a loud warning', async () => {
    const saved = process.env.TFJS_BACKEND;
    process.env.TFJS_BACKEND = 'cpu';
    const out = capture();
    try {
      const choice = await initBackend({ reset: true, ...out });
      assert.equal(choice.name, 'cpu');
      assert.match(out.lines[0], /forced by TFJS_BACKEND/);
      assert.match(out.warnings[0], /about 40x slower than wasm/);
    } finally {
      if (saved === undefined) delete process.env.TFJS_BACKEND;
      else process.env.TFJS_BACKEND = saved;
    }
  });

  test('a bad TFJS_BACKEND value is a clear error', async () => {
    const saved = process.env.TFJS_BACKEND;
    process.env.TFJS_BACKEND = 'webgpu';
    try {
      await assert.rejects(initBackend({ reset: true, ...capture() }), /TFJS_BACKEND="webgpu" is not a backend: expected one of auto, tensorflow, wasm, cpu/);
    } finally {
      if (saved === undefined) delete process.env.TFJS_BACKEND;
      else process.env.TFJS_BACKEND = saved;
    }
  });

  test('a forced tensorflow backend that cannot load is an error, not a silent fallback', async () => {
    await assert.rejects(
      initBackend({ reset: true, prefer: 'tensorflow', ...capture(), loadNodeGpu: () => { throw new Error('no libtensorflow'); } }),
      /no tfjs backend could start: tensorflow: no libtensorflow/,
    );
  });
});
