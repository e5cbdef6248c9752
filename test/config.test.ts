// The experiment's settings schema: strict parsing, validation before any work, errors naming what the user set,
// --help from the schema, and the README's table generated from it.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { defaultConfig, helpText, markdownTable, resolveConfig, SETTINGS } from '../lib/settings/config';
import { PROJECT_ROOT } from '../lib/settings/paths';

const none = {};

test('defaults are typed: arrays, booleans, numbers, null for "decided later"', () => {
  const c = defaultConfig();
  assert.deepEqual(c.backbones, ['mobilenet_v1_0.75', 'mobilenet_v2']);
  assert.deepEqual(c.views, ['plain']);
  assert.equal(c.tta, true);
  assert.equal(c.resolution, 160);
  assert.equal(c.lr, null);
});

test('flags win over env vars; both are parsed by type', () => {
  const { config, sources } = resolveConfig(['--epochs', '3', '--tta=no', '--views', 'plain,flip'], { EPOCHS: '9', TRAIN_LIMIT: '2000' });
  assert.equal(config.epochs, 3);
  assert.equal(config.trainLimit, 2000);
  assert.equal(config.tta, false);
  assert.deepEqual(config.views, ['plain', 'flip']);
  assert.deepEqual(sources, { epochs: '--epochs', trainLimit: 'TRAIN_LIMIT', tta: '--tta', views: '--views' });
});

test('booleans take true/false/yes/no/on/off/1/0 and nothing else', () => {
  for (const [raw, want] of [['false', false], ['no', false], ['0', false], ['off', false], ['true', true], ['YES', true], ['1', true]] as const) {
    assert.equal(resolveConfig(['--tta', raw], none).config.tta, want, raw);
  }
  assert.throws(() => resolveConfig(['--tta', 'maybe'], none), /^Error: --tta=maybe: expected true\/false, yes\/no, on\/off or 1\/0$/);
});

test('each bad value of the issue fails, naming what the user set', () => {
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--train-limit='], none, /^Error: --train-limit=: expected a whole number >= 0$/],
    [['--train-limit=0x10'], none, /^Error: --train-limit=0x10: expected a whole number >= 0$/],
    [['--train-limit', '2.5'], none, /^Error: --train-limit=2\.5: expected a whole number >= 0$/],
    [[], { TRAIN_LIMIT: 'abc' }, /^Error: TRAIN_LIMIT="abc": expected a whole number >= 0$/],
    [['--lr=-1'], none, /^Error: --lr=-1: expected a number > 0$/],
    [['--dropout', '1.5'], none, /^Error: --dropout=1\.5: expected a number >= 0 and <= 0\.95$/],
    [['--resolution', '16'], none, /^Error: --resolution=16: expected a whole number >= 32 and <= 1024$/],
    [['--backbones', 'resnet50'], none, /^Error: --backbones=resnet50: expected a comma list of mobilenet_v2, mobilenet_v1_0\.75$/],
    [['--views', 'sideways'], none, /^Error: --views=sideways: expected a comma list of views/],
    [['--epochs'], none, /^Error: --epochs: needs a value$/],
    [['--frobnicate', '1'], none, /^Error: --frobnicate: unknown option \(see --help\)$/],
    [['stray'], none, /^Error: stray: unexpected argument/],
  ];
  for (const [argv, env, re] of cases) assert.throws(() => resolveConfig(argv, env), re, `${argv.join(' ')} ${JSON.stringify(env)}`);
});

// Not timed (speed is the bench's job; a loaded CI machine once took 6.8 s for this): "before any data" is shown by
// what the process printed — no backend line, no data line — and by the error naming the value, not the missing data.
test('npm start rejects a bad value before loading the backend or any data, with a non-zero exit', () => {
  const ts = require.resolve('ts-node/register/transpile-only');
  for (const [args, env] of [[['--tta', 'maybe'], {}], [['--dropout', '1.5'], {}], [[], { TRAIN_LIMIT: 'abc' }], [['-x'], {}]] as const) {
    const r = spawnSync(process.execPath, ['-r', ts, path.join(PROJECT_ROOT, 'scripts', 'main.ts'), ...args], {
      encoding: 'utf8', env: { ...process.env, ...env, CIFAR10_DIR: '/nonexistent-so-loading-would-fail-differently' },
    });
    assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr.trim(), /^error: (--tta=maybe|--dropout=1\.5|TRAIN_LIMIT="abc"|-x): /);
    assert.doesNotMatch(r.stdout + r.stderr, /CIFAR-10|tfjs backend/, 'failed before the backend or the data were touched');
  }
});

test('--help and -h list every setting with its default and env var', () => {
  const help = helpText('usage');
  for (const key of Object.keys(SETTINGS)) assert.match(help, new RegExp(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} `), key);
  assert.match(help, /--train-limit <int>\s+TRAIN_LIMIT\s+0 = all 45,000/);
  const ts = require.resolve('ts-node/register/transpile-only');
  const r = spawnSync(process.execPath, ['-r', ts, path.join(PROJECT_ROOT, 'scripts', 'main.ts'), '-h'], { encoding: 'utf8' });
  assert.equal(r.status, 0);
  assert.equal(r.stdout.trim(), helpText('npm start -- [options]   (each also settable by its env var; flags win)').trim());
});

test('the README\'s settings table is the schema\'s', () => {
  const readme = fs.readFileSync(path.join(PROJECT_ROOT, 'README.md'), 'utf8');
  assert.ok(readme.includes(markdownTable()), 'README.md must contain lib/settings/config.ts markdownTable() verbatim (regenerate it)');
});
