// Decompression bombs: an image's pixel count is checked from its header before any decoder runs, with one limit
// (MAX_IMAGE_PIXELS) for PNG and JPEG and for every entry point: `npm run predict` (lib/model/predict.ts, also
// notebook 6) and the demo page (pixels.js, the same lib/data/pixels.ts code, transpiled by scripts/demo.ts). Before,
// a 746 KB PNG claiming 16000x16000 pixels was decoded in full: 3.9 GB resident, 11.7 s.
import { test, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { PNG } from 'pngjs';
import * as jpeg from 'jpeg-js';
import * as tf from '@tensorflow/tfjs';
import * as ts from 'typescript';
import { initBackend } from '../lib/engine/backend';
import { assembleModel, buildHead, saveModel } from '../lib/model/classifier';
import { decodeImage } from '../lib/model/predict';
import { imageHeaderSize, MAX_IMAGE_PIXELS } from '../lib/data/pixels';
import { PROJECT_ROOT } from '../lib/settings/paths';
import { writeFakeBackbone } from './fake-backbone';

const NAMES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
let dir: string;
let modelDir: string;

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(zlib.crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/**
 * A valid all-zero PNG of W x H pixels, built chunk by chunk: 1-bit greyscale rows deflate to almost nothing (a
 * 16000 x 16000 one is ~32 KB), yet a decoder expands it to W x H x 4 bytes of RGBA (1 GB).
 */
function zeroPng(W: number, H: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(W, 0);
  ihdr.writeUInt32BE(H, 4);
  ihdr[8] = 1; // bit depth
  ihdr[9] = 0; // greyscale
  const raw = Buffer.alloc((1 + Math.ceil(W / 8)) * H); // each row: filter byte 0, then W bits
  const sig = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([sig, pngChunk('IHDR', ihdr), pngChunk('IDAT', zlib.deflateSync(raw, { level: 9 })), pngChunk('IEND', Buffer.alloc(0))]);
}

/** A real JPEG whose frame header is patched to claim W x H (the decoder would believe it). */
function jpegClaiming(W: number, H: number): Buffer {
  const small = Buffer.from(jpeg.encode({ data: Buffer.alloc(16 * 16 * 4, 128), width: 16, height: 16 }, 90).data);
  for (let o = 2; o < small.length;) {
    const m = small[o + 1];
    if (m === 0xc0) {
      small.writeUInt16BE(H, o + 5);
      small.writeUInt16BE(W, o + 7);
      return small;
    }
    o += 2 + small.readUInt16BE(o + 2);
  }
  throw new Error('jpeg-js wrote no SOF0 marker');
}

before(async () => {
  await initBackend({ log: () => {} });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hardening-predict-'));
  const head = buildHead({ inputDim: 768, units: 8, dropout: 0.1, seed: 2 });
  const model = await assembleModel({ backbones: ['mobilenet_v1_0.75'], resolution: 32, head, backbonesDir: await writeFakeBackbone() });
  modelDir = path.join(dir, 'model');
  await saveModel(model, {
    backbones: ['mobilenet_v1_0.75'], resolution: 32, classNames: NAMES, head: { inputDim: 768, units: 8, dropout: 0.1 },
    metrics: {}, date: new Date().toISOString(), gitCommit: null,
  }, modelDir);
  tf.dispose([head, model] as any);
  const png = new PNG({ width: 40, height: 30 });
  png.data.fill(200);
  fs.writeFileSync(path.join(dir, 'good.png'), PNG.sync.write(png));
  fs.writeFileSync(path.join(dir, 'good.jpg'), jpeg.encode({ data: Buffer.alloc(50 * 40 * 4, 90), width: 50, height: 40 }, 90).data);
  fs.writeFileSync(path.join(dir, 'bomb.png'), zeroPng(16000, 16000));
  fs.writeFileSync(path.join(dir, 'big.jpg'), jpegClaiming(8000, 6000)); // 48 MP: under jpeg-js's own 100 MP cap
  fs.writeFileSync(path.join(dir, 'corrupt.png'), fs.readFileSync(path.join(dir, 'good.png')).subarray(0, 60));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('the header reader finds PNG and JPEG dimensions, and nothing in other bytes', () => {
  assert.deepEqual(imageHeaderSize(fs.readFileSync(path.join(dir, 'bomb.png'))), { format: 'PNG', width: 16000, height: 16000 });
  assert.deepEqual(imageHeaderSize(fs.readFileSync(path.join(dir, 'good.jpg'))), { format: 'JPEG', width: 50, height: 40 });
  assert.deepEqual(imageHeaderSize(fs.readFileSync(path.join(dir, 'big.jpg'))), { format: 'JPEG', width: 8000, height: 6000 });
  assert.equal(imageHeaderSize(Buffer.from('not an image at all')), undefined);
  assert.equal(imageHeaderSize(Buffer.from([0xff, 0xd8, 0xff])), undefined, 'a truncated JPEG header');
});

test('decodeImage refuses an image over the limit from its header, in one line, without decoding it', () => {
  const rssBefore = process.memoryUsage().rss;
  const t0 = Date.now();
  assert.throws(() => decodeImage(path.join(dir, 'bomb.png')), (err: Error) => {
    assert.equal(err.message, `${path.join(dir, 'bomb.png')}: 16000x16000 PNG is 256.0 megapixels, over the ${MAX_IMAGE_PIXELS / 1e6}-megapixel limit for images (not decoded)`);
    return true;
  });
  assert.throws(() => decodeImage(path.join(dir, 'big.jpg')), /big\.jpg: 8000x6000 JPEG is 48\.0 megapixels, over the 40-megapixel limit for images \(not decoded\)$/);
  // Decoding would have allocated 1 GB of RGBA (and taken seconds); the header check allocates nothing of the kind.
  assert.ok(process.memoryUsage().rss - rssBefore < 200e6, `rss grew by ${((process.memoryUsage().rss - rssBefore) / 1e6).toFixed(0)} MB`);
  assert.ok(Date.now() - t0 < 2000, `took ${Date.now() - t0} ms`);
  assert.equal(decodeImage(path.join(dir, 'good.png')).width, 40, 'images under the limit still decode');
});

test('npm run predict: the bomb gets one error line, the other files are still labelled, exit 1 (as for a corrupt file)', () => {
  const files = ['good.png', 'bomb.png', 'corrupt.png', 'big.jpg', 'good.jpg'].map((f) => path.join(dir, f));
  const timed = fs.existsSync('/usr/bin/time');
  const cmd = ['npm', 'run', '--silent', 'predict', '--', '--model', modelDir, ...files];
  const r = spawnSync(timed ? '/usr/bin/time' : cmd[0], timed ? ['-f', 'maxrss-kb %M', ...cmd] : cmd.slice(1), {
    cwd: PROJECT_ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, INIT_CWD: undefined },
  });
  assert.equal(r.status, 1, r.stderr);
  const labelled = r.stdout.trim().split('\n');
  assert.deepEqual(labelled.map((l) => l.split(':')[0]), [files[0], files[4]], r.stdout);
  for (const l of labelled) assert.match(l, /: \w+ \d+\.\d%, \w+ \d+\.\d%, \w+ \d+\.\d%$/);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.deepEqual(errors.map((l) => l.replace(/\(.*$/, '(…')), [
    `error: ${files[1]}: 16000x16000 PNG is 256.0 megapixels, over the 40-megapixel limit for images (…`,
    `error: ${files[2]}: corrupt or unsupported image (…`,
    `error: ${files[3]}: 8000x6000 JPEG is 48.0 megapixels, over the 40-megapixel limit for images (…`,
  ]);
  const rss = /maxrss-kb (\d+)/.exec(r.stderr);
  if (rss) assert.ok(Number(rss[1]) < 1_500_000, `peak RSS ${Number(rss[1]) / 1e3} MB: the bomb was decoded`);
});

test('the demo page runs the same check: pixels.js (lib/data/pixels.ts transpiled as scripts/demo.ts does) refuses the bomb', async () => {
  // The page imports imageHeaderSize/oversizeReason from pixels.js before createImageBitmap; this is that module.
  const js = ts.transpileModule(fs.readFileSync(path.join(PROJECT_ROOT, 'lib', 'data', 'pixels.ts'), 'utf8'), {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2020 },
  }).outputText;
  const mod: any = { exports: {} };
  new Function('module', 'exports', js)(mod, mod.exports);
  const header = mod.exports.imageHeaderSize(new Uint8Array(fs.readFileSync(path.join(dir, 'bomb.png')).subarray(0, 256 * 1024)));
  assert.equal(mod.exports.oversizeReason('bomb.png', header), 'bomb.png: 16000x16000 PNG is 256.0 megapixels, over the 40-megapixel limit for images (not decoded)');
  assert.equal(mod.exports.oversizeReason('good.png', { format: 'PNG', width: 40, height: 30 }), undefined);
  const page = fs.readFileSync(path.join(PROJECT_ROOT, 'scripts', 'demo-page', 'demo.js'), 'utf8');
  assert.ok(page.indexOf('oversizeReason(') < page.indexOf('createImageBitmap('), 'the page checks before the browser decodes');
});
