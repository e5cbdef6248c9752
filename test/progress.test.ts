import test from 'node:test';
import assert from 'node:assert/strict';
import { fmtRate, progress } from '../lib/util/progress';

test('a rate reads as units per second, or seconds per unit when a unit takes longer than a second', () => {
  assert.equal(fmtRate(331.24, 'img'), '331.2 img/s');
  assert.equal(fmtRate(1, 'img'), '1.0 img/s');
  assert.equal(fmtRate(1 / 43.8, 'epoch'), '43.8 s/epoch'); // was "0.0 epoch/s" for a 44 s epoch
  assert.equal(fmtRate(0, 'epoch'), '? epoch/s');
  assert.equal(fmtRate(NaN, 'img'), '? img/s');
});

test('the final plain progress line carries the slow rate, not 0.0', async () => {
  const lines: string[] = [];
  const log = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    const p = progress('fine-tune', 12, 'epoch');
    await new Promise((r) => setTimeout(r, 1100));
    p.tick(1);
    p.done();
  } finally {
    console.log = log;
  }
  assert.equal(lines.length, 1, lines.join('\n'));
  assert.match(lines[0], /^fine-tune: 1\/12 epoch \(8%\) \d+\.\d s\/epoch in 1s$/);
});
