// Row-batched inference: keep memory flat on large sets by running a model over slices of the rows and
// collecting each slice's [m, width] output into one flat array.
//
// Reads are asynchronous (`await data()`): webgpu in Node cannot read a GPU tensor synchronously (dataSync throws, see
// lib/engine/webgpu.ts), and on tensorflow/wasm/cpu `data()` returns the same values as `dataSync()`.
// test/async-reads.test.ts fails if a synchronous read comes back here.
import * as tf from '@tensorflow/tfjs';

/**
 * Call `run(start, m)` for consecutive slices of `n` rows (m <= batchSize), each returning an [m, width] tensor
 * (created inside a tidy scope, disposed here), and return all outputs as one Float32Array [n * width].
 */
export async function mapRowBatches(n: number, batchSize: number, width: number, run: (start: number, m: number) => tf.Tensor): Promise<Float32Array> {
  const out = new Float32Array(n * width);
  for (let s = 0; s < n; s += batchSize) {
    const m = Math.min(batchSize, n - s);
    const p = tf.tidy(() => run(s, m));
    try {
      out.set((await p.data()) as Float32Array, s * width);
    } finally {
      p.dispose();
    }
  }
  return out;
}

