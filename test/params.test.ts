import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { paramEnvName, params } from '../lib/params';

test('env names: NB_ + UPPER_SNAKE of the key', () => {
  assert.equal(paramEnvName('trainLimit'), 'NB_TRAIN_LIMIT');
  assert.equal(paramEnvName('backbone'), 'NB_BACKBONE');
  assert.equal(paramEnvName('useTTA'), 'NB_USE_TTA');
  assert.equal(paramEnvName('top5'), 'NB_TOP5');
  assert.equal(paramEnvName('HTTPServer'), 'NB_HTTP_SERVER');
});

test('defaults overridden by env, parsed by the default type', () => {
  const env = { NB_TRAIN_LIMIT: '2000', NB_LR: '1e-3', NB_USE_TTA: 'yes', NB_BACKBONE: 'mobilenet_v2_1.0', NB_EPOCHS: '' };
  const p = params({ trainLimit: 0, lr: 0.01, useTta: false, backbone: 'mobilenet_v1_0.75', epochs: 20 }, { env, quiet: true });
  assert.deepEqual(p, { trainLimit: 2000, lr: 0.001, useTta: true, backbone: 'mobilenet_v2_1.0', epochs: 20 });
  assert.ok(Object.isFrozen(p));
});

test('bad values fail with one clear line', () => {
  assert.throws(() => params({ trainLimit: 0 }, { env: { NB_TRAIN_LIMIT: '2k' }, quiet: true }), /^Error: parameter trainLimit: NB_TRAIN_LIMIT="2k" is not a number \(default 0\)$/);
  assert.throws(() => params({ tta: true }, { env: { NB_TTA: 'maybe' }, quiet: true }), /NB_TTA="maybe" is not a boolean/);
});

test('prints the effective values, marking overrides', (t) => {
  const lines: string[] = [];
  t.mock.method(console, 'log', (s: string) => lines.push(s));
  params({ a: 1, b: 'x' }, { env: { NB_A: '2' } });
  assert.deepEqual(lines, ['parameters: a=2 (NB_A), b="x"']);
});
