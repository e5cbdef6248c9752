import { test, before } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../lib/engine/backend';
import { backboneArtifacts, BACKBONES, compileExtractor, loadBackbone } from '../lib/features/backbones';
import { DEFAULT_RESOLUTION, pixelsToTensor, preprocess, ResizeNormalize } from '../lib/data/preprocess';
import { withRuntimeContext } from '../lib/settings/context';
import { fakeImages, writeFakeBackbone } from './fake-backbone';

const REAL = process.env.BACKBONES_DIR;
const SKIP_REAL = REAL && fs.existsSync(path.join(REAL, BACKBONES.mobilenet_v2.folder))
  ? false
  : 'real weights absent: set BACKBONES_DIR to the folder holding mobilenet_v2_1.0_224/ and mobilenet_v1_0.75_224/ (e.g. ../shared/models) to enable';

let fakeDir: string;
before(async () => {
  await initBackend({ log: () => {} });
  fakeDir = await writeFakeBackbone();
});

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function features(model: tf.LayersModel, x: tf.Tensor4D): Promise<Float32Array> {
  const y = model.predict(x) as tf.Tensor;
  const d = (await y.data()) as Float32Array;
  y.dispose();
  return d;
}

function copyFake(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'broken-backbone-'));
  fs.cpSync(fakeDir, dir, { recursive: true });
  return path.join(dir, BACKBONES['mobilenet_v1_0.75'].folder);
}

test('loader cuts the classifier, frees the input size and pools to the feature size', async () => {
  const m = await loadBackbone('mobilenet_v1_0.75', { dir: fakeDir });
  assert.deepEqual(m.inputs[0].shape, [null, null, null, 3]);
  assert.deepEqual(m.outputs[0].shape, [null, 768]);
  assert.ok(!m.layers.some((l) => l.name === 'preds'), 'classifier layer should be cut');
  const y = m.predict(tf.zeros([2, 40, 56, 3])) as tf.Tensor;
  assert.deepEqual(y.shape, [2, 768]);
});

test('BN folding removes BN layers and keeps features within 1e-4 (fake model)', async () => {
  const folded = await loadBackbone('mobilenet_v1_0.75', { dir: fakeDir });
  const plain = await loadBackbone('mobilenet_v1_0.75', { dir: fakeDir, fold: false });
  assert.equal(folded.layers.filter((l) => l.getClassName() === 'BatchNormalization').length, 0);
  assert.equal(plain.layers.filter((l) => l.getClassName() === 'BatchNormalization').length, 3);
  const x = preprocess(pixelsToTensor(fakeImages(3), 3), 48);
  const a = await features(folded, x);
  const b = await features(plain, x);
  assert.ok(b.some((v) => v > 0.01), 'features should not be all zero');
  assert.ok(maxAbsDiff(a, b) < 1e-4, `folded vs unfolded differ by ${maxAbsDiff(a, b)}`);
});

test('compiled fused extractor equals the LayersModel within 1e-4 (fake model)', async () => {
  const model = await loadBackbone('mobilenet_v1_0.75', { dir: fakeDir });
  const ex = compileExtractor(await backboneArtifacts('mobilenet_v1_0.75', { dir: fakeDir }));
  const x = preprocess(pixelsToTensor(fakeImages(3, 2), 3), 64);
  const y = ex.predict(x);
  assert.ok(maxAbsDiff(await y.data(), await features(model, x)) < 1e-4);
  ex.dispose();
});

test('missing shard: clear error naming the file', async () => {
  const folder = copyFake();
  fs.rmSync(path.join(folder, 'group1-shard2of2.bin'));
  await assert.rejects(loadBackbone('mobilenet_v1_0.75', { dir: path.dirname(folder) }),
    (e: Error) => /weight shard missing/.test(e.message) && e.message.includes(path.join(folder, 'group1-shard2of2.bin')));
});

test('short shard: clear error naming the file', async () => {
  const folder = copyFake();
  const f = path.join(folder, 'group1-shard2of2.bin');
  fs.truncateSync(f, fs.statSync(f).size - 10);
  await assert.rejects(loadBackbone('mobilenet_v1_0.75', { dir: path.dirname(folder) }),
    (e: Error) => /too short/.test(e.message) && e.message.includes(f));
});

test('corrupt model.json: clear error naming the file', async () => {
  const folder = copyFake();
  const f = path.join(folder, 'model.json');
  fs.writeFileSync(f, fs.readFileSync(f, 'utf8').slice(0, 200));
  await assert.rejects(loadBackbone('mobilenet_v1_0.75', { dir: path.dirname(folder) }),
    (e: Error) => e.message.includes(f) && /JSON/.test(e.message));
});

test('no weights anywhere: error says where to put them (BACKBONES_DIR)', async () => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'no-models-'));
  await withRuntimeContext({ backbonesDir: empty, dataDir: empty }, () =>
    assert.rejects(loadBackbone('mobilenet_v2'), (e: Error) => /BACKBONES_DIR/.test(e.message) && e.message.includes(BACKBONES.mobilenet_v2.url)));
});

test('ResizeNormalize layer equals preprocess() and survives a save/load round trip', async () => {
  const input = tf.input({ shape: [32, 32, 3] });
  const out = tf.layers.globalAveragePooling2d({}).apply(new ResizeNormalize({ size: 64 }).apply(input)) as tf.SymbolicTensor;
  const m = tf.model({ inputs: input, outputs: out });
  let artifacts: tf.io.ModelArtifacts | undefined;
  await m.save(tf.io.withSaveHandler(async (a) => { artifacts = a; return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } }; }));
  const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
  const px = pixelsToTensor(fakeImages(2, 3), 2);
  const want = await tf.mean(preprocess(px, 64), [1, 2]).data();
  assert.ok(maxAbsDiff(await (loaded.predict(px) as tf.Tensor).data(), want) < 1e-6);
  const pre = await preprocess(px, DEFAULT_RESOLUTION).data();
  assert.equal(pre.length, 2 * 160 * 160 * 3);
  assert.ok(pre.every((v) => v >= -1 && v <= 1));
  assert.throws(() => preprocess(px, 7), /resolution 7/);
});

test('real MobileNet v1: folded == unfolded within 1e-4; compiled == LayersModel', { skip: SKIP_REAL }, async () => {
  const x = preprocess(pixelsToTensor(fakeImages(2, 4), 2), 96);
  const folded = await loadBackbone('mobilenet_v1_0.75', { dir: REAL });
  const plain = await loadBackbone('mobilenet_v1_0.75', { dir: REAL, fold: false });
  const a = await features(folded, x);
  const d = maxAbsDiff(a, await features(plain, x));
  assert.ok(d < 1e-4, `folded vs unfolded differ by ${d}`);
  const ex = compileExtractor(await backboneArtifacts('mobilenet_v1_0.75', { dir: REAL }));
  assert.ok(maxAbsDiff(await ex.predict(x).data(), a) < 1e-4);
});

test('real MobileNetV2: [N,1280]; compiled == LayersModel within 1e-4', { skip: SKIP_REAL }, async () => {
  const x = preprocess(pixelsToTensor(fakeImages(2, 5), 2), 96);
  const m = await loadBackbone('mobilenet_v2', { dir: REAL });
  assert.deepEqual(m.outputs[0].shape, [null, 1280]);
  const a = await features(m, x);
  const ex = compileExtractor(await backboneArtifacts('mobilenet_v2', { dir: REAL }));
  assert.ok(maxAbsDiff(await ex.predict(x).data(), a) < 1e-4);
});

test('a backbone download goes through the checksummed downloader: a match is kept, a tampered shard is refused', async () => {
  const http = await import('http');
  const { BACKBONES: registry, backboneFingerprint: fingerprint, downloadBackbone } = await import('../lib/features/backbones');
  const src = path.join(await writeFakeBackbone(), registry['mobilenet_v1_0.75'].folder);
  let tamper = false;
  const server = http.createServer((req, res) => {
    const file = path.join(src, path.basename(req.url ?? ''));
    if (!fs.existsSync(file)) return void res.writeHead(404).end();
    const body = fs.readFileSync(file);
    if (tamper && file.endsWith('shard2of2.bin')) body[0] ^= 1;
    res.writeHead(200, { 'content-length': body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/model.json`;
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'dl-'));
  try {
    await withRuntimeContext({ dataDir: data }, async () => {
      const spec = { ...registry['mobilenet_v1_0.75'], url, fingerprint: fingerprint(src) };
      const got = await downloadBackbone(spec);
      assert.equal(fingerprint(got), spec.fingerprint);
      fs.rmSync(got, { recursive: true });
      tamper = true;
      await assert.rejects(downloadBackbone(spec), /checksum mismatch: the downloaded files hash to [0-9a-f]{16}, expected [0-9a-f]{16}/);
      assert.deepEqual(fs.readdirSync(path.join(data, 'models')), [], 'nothing kept from a bad download');
    });
  } finally {
    server.close();
  }
});
