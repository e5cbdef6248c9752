// `npm run predict`: decodes PNG and JPEG of any size to 32x32, prints top-3 per image; a bad file gets a clear
// error line while the others still run, and the exit code says something failed.
import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { assembleModel, buildHead, saveModel } from '../lib/model/classifier';
import { decodeImage, resizeTo } from '../lib/model/predict';
import { writeFakeBackbone } from './fake-backbone';

const ROOT = path.resolve(__dirname, '..');
const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
let dir: string;
let modelDir: string;

/** RGBA buffer of a W x H image whose 2x2 blocks have one colour each. */
function blocky(W: number, H: number): Buffer {
  const b = Buffer.alloc(W * H * 4);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      const o = (y * W + x) * 4;
      b[o] = ((x >> 1) * 8) & 255;
      b[o + 1] = ((y >> 1) * 8) & 255;
      b[o + 2] = 100;
      b[o + 3] = 255;
    }
  return b;
}

before(async () => {
  await initBackend({ log: () => {} });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'predict-'));
  const fake = await writeFakeBackbone();
  const head = buildHead({ inputDim: 768, units: 8, dropout: 0.1, seed: 2 });
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 32, head, backbonesDir: fake });
  modelDir = path.join(dir, 'model');
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 32, classNames: NAMES, head: { inputDim: 768, units: 8, dropout: 0.1 },
    metrics: {}, date: new Date().toISOString(), gitCommit: null,
  }, modelDir);
  const png = new PNG({ width: 64, height: 64 });
  blocky(64, 64).copy(png.data);
  fs.writeFileSync(path.join(dir, 'a.png'), PNG.sync.write(png));
  fs.writeFileSync(path.join(dir, 'b.jpg'), jpeg.encode({ data: blocky(50, 40), width: 50, height: 40 }, 90).data);
  const good = fs.readFileSync(path.join(dir, 'a.png'));
  fs.writeFileSync(path.join(dir, 'truncated.png'), good.subarray(0, 60));
  fs.writeFileSync(path.join(dir, 'text.jpg'), 'not an image at all');
  tf.dispose([head, model] as any);
});

test('area resize of a 64x64 image of 2x2 blocks gives the block colours', () => {
  const img = decodeImage(path.join(dir, 'a.png'));
  assert.equal(img.width, 64);
  const small = resizeTo(img, 32);
  for (const [x, y] of [[0, 0], [5, 7], [31, 31]]) {
    const o = (y * 32 + x) * 3;
    assert.deepEqual(Array.from(small.subarray(o, o + 3)), [(x * 8) & 255, (y * 8) & 255, 100]);
  }
});

test('corrupt, non-image and missing files fail with one line naming the file', () => {
  assert.throws(() => decodeImage(path.join(dir, 'truncated.png')), /truncated\.png: corrupt or unsupported image/);
  assert.throws(() => decodeImage(path.join(dir, 'text.jpg')), /text\.jpg: not a PNG or JPEG/);
  assert.throws(() => decodeImage(path.join(dir, 'nope.png')), /nope\.png: cannot read \(no such file\)/);
});

test('the predict script labels a PNG and a JPEG, reports the bad file, and exits 1', () => {
  const files = ['a.png', 'truncated.png', 'b.jpg'].map((f) => path.join(dir, f));
  const r = spawnSync(process.execPath, ['--require', 'ts-node/register/transpile-only', 'scripts/predict.ts', '--model', modelDir, ...files], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' },
  });
  const out = r.stdout.trim().split('\n');
  assert.equal(r.status, 1, `stdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(out.length, 2, r.stdout);
  for (const [line, f] of [[out[0], 'a.png'], [out[1], 'b.jpg']]) {
    assert.ok(line.startsWith(path.join(dir, f) + ': '), line);
    const parts = line.slice(line.indexOf(': ') + 2).split(', ');
    assert.equal(parts.length, 3);
    for (const p of parts) assert.match(p, new RegExp(`^(${NAMES.join('|')}) \\d+\\.\\d%$`));
  }
  assert.match(r.stderr, /error: .*truncated\.png: corrupt or unsupported image/);
});
