// `npm run typecheck` compiles the notebooks' cells as tslab runs them; a broken call fails there, naming the cell.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PROJECT_ROOT } from '../lib/settings/paths';

const SCRIPT = path.join(PROJECT_ROOT, 'scripts', 'typecheck-notebooks.ts');
const TS = require.resolve('ts-node/register/transpile-only');

function notebook(cells: [string, string][]): string {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nbcheck-')), 'check.ipynb');
  fs.writeFileSync(file, JSON.stringify({ nbformat: 4, nbformat_minor: 5, metadata: {}, cells: cells.map(([t, s]) => ({ cell_type: t, metadata: {}, source: s, outputs: [], execution_count: null })) }));
  return file;
}
const check = (file: string) => spawnSync(process.execPath, ['-r', TS, SCRIPT, file], { encoding: 'utf8' });

test('cells share one scope, in order, with top-level await and imports from the project root', () => {
  const r = check(notebook([
    ['markdown', '# t'],
    ['code', "import { percent } from './lib/util/format';\nconst x = await Promise.resolve(0.5);"],
    ['code', 'console.log(percent(x));'],
  ]));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /1 notebook\(s\), 0 error\(s\)/);
});

test('a renamed lib function fails, naming the notebook, the cell and the line in it', () => {
  const r = check(notebook([
    ['markdown', '# t'],
    ['code', "import { percent } from './lib/util/format';"],
    ['code', "console.log(percent(0.5));\nconsole.log(percentage(0.5));"],
  ]));
  assert.equal(r.status, 1);
  assert.match(r.stderr, /check\.ipynb: cell 3, line 2:13: Cannot find name 'percentage'/);
});
