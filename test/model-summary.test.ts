// modelSummary: every layer's full name and type (tfjs' own summary cuts them at a fixed column width).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { modelSummary } from '../lib/model/model-summary';

test('full names, types, shapes, parameters and totals; "input from" for graphs', () => {
  const x = tf.input({ shape: [4], name: 'pixels' });
  const a = tf.layers.dense({ units: 3, name: 'resize_normalize_with_a_long_name' }).apply(x) as tf.SymbolicTensor;
  const b = tf.layers.dense({ units: 2, name: 'frozen', trainable: false }).apply(x) as tf.SymbolicTensor;
  const m = tf.model({ inputs: x, outputs: tf.layers.concatenate({ name: 'concat' }).apply([a, b]) as tf.SymbolicTensor, name: 'classifier' });
  const s = modelSummary(m);
  const lines = s.split('\n');
  assert.equal(lines[0], 'classifier: 4 layers');
  assert.match(lines[1], /^layer\s+type\s+output shape\s+parameters\s+input from$/);
  assert.match(s, /^resize_normalize_with_a_long_name\s+Dense\s+\[batch, 3\]\s+15\s+pixels$/m);
  assert.match(s, /^concat\s+Concatenate\s+\[batch, 5\]\s+0\s+resize_normalize_with_a_long_name, frozen$/m);
  assert.equal(lines[lines.length - 1], 'parameters: 25 · trainable 15 · frozen 10');
  m.dispose();
  const seq = tf.sequential({ layers: [tf.layers.dense({ inputShape: [2], units: 1000, name: 'wide' })] });
  assert.match(modelSummary(seq), /^wide\s+Dense\s+\[batch, 1000\]\s+3,000$/m);
  assert.doesNotMatch(modelSummary(seq), /input from/, 'a plain stack needs no "input from" column');
});
