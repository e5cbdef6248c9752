// The command-line tools share one parsing style (lib/util/cli.ts): --help/-h prints usage and exits 0, bad usage is one
// `error:` line with exit status 2.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/settings/paths';

const TS = require.resolve('ts-node/register/transpile-only');
const TOOLS = ['predict', 'notebooks', 'report', 'demo', 'export-keras', 'bench', 'bench-train'];
const run = (tool: string, args: string[]) =>
  spawnSync(process.execPath, ['-r', TS, path.join(PROJECT_ROOT, 'scripts', `${tool}.ts`), ...args], { encoding: 'utf8', timeout: 60_000 });

for (const tool of TOOLS) {
  test(`${tool}: -h shows usage (exit 0); an unknown option is one line, exit 2`, () => {
    const help = run(tool, ['-h']);
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^usage: npm run [\w:]+ --/);
    assert.match(help.stdout, /-h, --help\s+show this help/);
    const bad = run(tool, ['--no-such-option']);
    assert.equal(bad.status, 2, bad.stderr);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
    assert.match(bad.stderr, /unknown option '--no-such-option' \(see --help\)/);
  });
}
