import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { paramEnvName, params } from '../lib/settings/params';

test('env names: the key in UPPER_SNAKE_CASE, the same as npm start reads', () => {
  assert.equal(paramEnvName('trainLimit'), 'TRAIN_LIMIT');
  assert.equal(paramEnvName('sweepImages'), 'SWEEP_IMAGES');
  assert.equal(paramEnvName('useTTA'), 'USE_TTA');
  assert.equal(paramEnvName('top5'), 'TOP5');
  assert.equal(paramEnvName('HTTPServer'), 'HTTP_SERVER');
  assert.equal(paramEnvName('models'), 'MODELS_DIR', 'a setting may name its own variable');
});

test('experiment settings are parsed by the schema, a notebook\'s own keys by their default\'s type', () => {
  const env = { TRAIN_LIMIT: '2000', LR_FIND_STEPS: '50', BACKBONES: 'mobilenet_v2', TTA: 'no', NOTE: 'hi' };
  const p = params({ trainLimit: 0, lrFindSteps: 200, backbones: ['mobilenet_v1_0.75', 'mobilenet_v2'], tta: true, note: 'x', epochs: 20 }, { env, quiet: true });
  assert.deepEqual(p, { trainLimit: 2000, lrFindSteps: 50, backbones: ['mobilenet_v2'], tta: false, note: 'hi', epochs: 20 });
  assert.ok(Object.isFrozen(p));
});

test('bad values fail with one clear line naming the variable', () => {
  assert.throws(() => params({ trainLimit: 0 }, { env: { TRAIN_LIMIT: '2k' }, quiet: true }), /^Error: TRAIN_LIMIT="2k": expected a whole number >= 0$/);
  assert.throws(() => params({ trainLimit: 0 }, { env: { TRAIN_LIMIT: '' }, quiet: true }), /^Error: TRAIN_LIMIT="": expected a whole number/);
  assert.throws(() => params({ tta: true }, { env: { TTA: 'maybe' }, quiet: true }), /TTA="maybe": expected true\/false/);
  assert.throws(() => params({ lrFindSteps: 1 }, { env: { LR_FIND_STEPS: '0x10' }, quiet: true }), /^Error: parameter lrFindSteps: LR_FIND_STEPS="0x10" is not a decimal number \(default 1\)$/);
});

test('prints the effective values, marking where each non-default came from', (t) => {
  const lines: string[] = [];
  t.mock.method(console, 'log', (s: string) => lines.push(s));
  params({ a: 1, b: 'x', views: ['plain'] }, { env: { A: '2' } });
  assert.equal(lines[0], 'parameters: a=2 (env A), b="x", views=plain');
  assert.match(lines[1], /^  from the environment: A=2; set in the notebook: none; 2 defaults\. Env vars are read when the kernel starts: .*\{ set: /);
});
