import { test, describe } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import * as crypto from 'crypto';
import * as tar from 'tar';
import {
  ARCHIVE_URL,
  META_FILE,
  RECORD_BYTES,
  TEST_FILE,
  TRAIN_FILES,
  classCounts,
  loadCifar10,
  parseBatch,
  readCifar10Dir,
  splitTrainVal,
  testRange,
} from '../lib/data/cifar10';
import { downloadAndExtract } from '../lib/data/download';
import { withRuntimeContext } from '../lib/settings/context';

const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'cifar-test-'));
}

/** A record whose planes hold known values: R = (p + seed) % 256, G = 100 + label, B = 255 - (p % 256). */
function record(label: number, seed: number): Buffer {
  const b = Buffer.alloc(RECORD_BYTES);
  b[0] = label;
  for (let p = 0; p < 1024; p++) {
    b[1 + p] = (p + seed) % 256;
    b[1 + 1024 + p] = 100 + label;
    b[1 + 2048 + p] = 255 - (p % 256);
  }
  return b;
}

/** A tiny CIFAR folder: `perBatch` records per file, labels cycling 0..9. */
function writeTinyCifar(dir: string, perBatch = 20): void {
  fs.mkdirSync(dir, { recursive: true });
  [...TRAIN_FILES, TEST_FILE].forEach((f, b) => {
    const recs = Array.from({ length: perBatch }, (_, i) => record((i + b) % 10, i + b * perBatch));
    fs.writeFileSync(path.join(dir, f), Buffer.concat(recs));
  });
  fs.writeFileSync(path.join(dir, META_FILE), CLASSES.join('\n') + '\n\n');
}

describe('parseBatch', () => {
  test('turns R, G, B planes into NHWC pixels in row-major order', () => {
    const { images, labels, n } = parseBatch(Buffer.concat([record(3, 0), record(7, 5)]), 'mem');
    assert.equal(n, 2);
    assert.deepEqual([...labels], [3, 7]);
    for (const p of [0, 1, 31, 32, 500, 1023]) {
      assert.equal(images[p * 3], p % 256, `R at pixel ${p}`);
      assert.equal(images[p * 3 + 1], 103, `G at pixel ${p}`);
      assert.equal(images[p * 3 + 2], 255 - (p % 256), `B at pixel ${p}`);
    }
    // second image starts 3,072 bytes later and carries its own values
    assert.equal(images[3072 + 10 * 3], 15);
    assert.equal(images[3072 + 1], 107);
  });

  test('rejects a size that is not a multiple of 3,073', () => {
    assert.throws(() => parseBatch(Buffer.alloc(RECORD_BYTES * 2 - 1), '/x/data_batch_1.bin'), /data_batch_1\.bin: size 6145 bytes is not a positive multiple of 3073/);
  });

  test('rejects a label byte above 9', () => {
    const buf = Buffer.concat([record(1, 0), record(1, 0)]);
    buf[RECORD_BYTES] = 12;
    assert.throws(() => parseBatch(buf, 'b.bin'), /b\.bin: record 1 \(byte offset 3073\) has label 12, expected 0-9/);
  });

  test('rejects a wrong record count', () => {
    assert.throws(() => parseBatch(record(0, 0), 'c.bin', 10000), /c\.bin: holds 1 records, expected 10000/);
  });
});

describe('readCifar10Dir', () => {
  test('reads train batches in order, test batch and class names', () => {
    const dir = tmpDir();
    writeTinyCifar(dir);
    const data = readCifar10Dir(dir, 20);
    assert.equal(data.train.n, 100);
    assert.equal(data.test.n, 20);
    assert.deepEqual(data.classNames, CLASSES);
    // record i of batch b has label (i + b) % 10 and red value at pixel 0 = (i + b*20) % 256
    assert.equal(data.train.labels[20], 1);
    assert.equal(data.train.images[20 * 3072], 20);
    assert.equal(data.train.indices[99], 99);
  });

  test('names a missing batch file', () => {
    const dir = tmpDir();
    writeTinyCifar(dir);
    fs.rmSync(path.join(dir, 'data_batch_3.bin'));
    assert.throws(() => readCifar10Dir(dir, 20), /data_batch_3\.bin: missing batch file/);
  });

  test('names a truncated batch file', () => {
    const dir = tmpDir();
    writeTinyCifar(dir);
    const f = path.join(dir, TEST_FILE);
    fs.truncateSync(f, fs.statSync(f).size - 100);
    assert.throws(() => readCifar10Dir(dir, 20), /test_batch\.bin: size \d+ bytes is not a positive multiple of 3073/);
  });

  test('names a meta file without ten classes', () => {
    const dir = tmpDir();
    writeTinyCifar(dir);
    fs.writeFileSync(path.join(dir, META_FILE), 'cat\ndog\n');
    assert.throws(() => readCifar10Dir(dir, 20), /batches\.meta\.txt: has 2 class names, expected 10/);
  });
});

describe('splits', () => {
  const dir = tmpDir();
  writeTinyCifar(dir, 200); // 1,000 training images, 100 per class
  const { train, test: testSet } = readCifar10Dir(dir, 200);

  test('validation is stratified, disjoint from training and reproducible', () => {
    const a = splitTrainVal(train, { valSize: 200, seed: 1 });
    const b = splitTrainVal(train, { valSize: 200, seed: 1 });
    const c = splitTrainVal(train, { valSize: 200, seed: 2 });
    assert.equal(a.val.n, 200);
    assert.equal(a.train.n, 800);
    assert.deepEqual(classCounts(a.val), new Array(10).fill(20));
    assert.deepEqual(classCounts(a.train), new Array(10).fill(80));
    const valIdx = new Set(a.val.indices);
    assert.ok([...a.train.indices].every((i) => !valIdx.has(i)), 'no image in both splits');
    assert.deepEqual([...a.val.indices], [...b.val.indices]);
    assert.notDeepEqual([...a.val.indices], [...c.val.indices]);
    // pixels travel with their index
    const k = a.val.indices[5];
    assert.deepEqual(a.val.images.subarray(5 * 3072, 6 * 3072), train.images.subarray(k * 3072, (k + 1) * 3072));
  });

  test('limits take stratified subsets of each side', () => {
    const s = splitTrainVal(train, { valSize: 200, trainLimit: 300, valLimit: 50, seed: 3 });
    assert.deepEqual(classCounts(s.train), new Array(10).fill(30));
    assert.deepEqual(classCounts(s.val), new Array(10).fill(5));
    const full = splitTrainVal(train, { valSize: 200, seed: 3 });
    const fullVal = new Set(full.val.indices);
    assert.ok([...s.val.indices].every((i) => fullVal.has(i)), 'the limited validation set is part of the full one');
  });

  test('validation is carved from training images, never the test set', () => {
    const s = splitTrainVal(train, { valSize: 100 });
    for (let i = 0; i < s.val.n; i++) {
      const k = s.val.indices[i];
      assert.deepEqual(s.val.images.subarray(i * 3072, (i + 1) * 3072), train.images.subarray(k * 3072, (k + 1) * 3072));
    }
  });

  test('testRange picks a contiguous range and checks bounds', () => {
    const r = testRange(testSet, 10, 30);
    assert.equal(r.n, 20);
    assert.equal(r.indices[0], 10);
    assert.deepEqual(r.images.subarray(0, 3072), testSet.images.subarray(10 * 3072, 11 * 3072));
    assert.throws(() => testRange(testSet, 0, 5000), /test range \[0, 5000\) must lie within \[0, 200\)/);
  });

  test('a sample larger than the data is refused', () => {
    assert.throws(() => splitTrainVal(train, { valSize: 5000 }), /sample size 5000 is larger than the 1000 images available/);
  });
});

// ---- download + extraction, against a local HTTP server -----------------------------------------

async function serve(body: Buffer): Promise<{ url: string; close: () => void }> {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}/cifar-10-binary.tar.gz`, close: () => server.close() };
}

async function makeArchive(entries: string[], cwd: string): Promise<Buffer> {
  const file = path.join(cwd, 'a.tar.gz');
  await tar.c({ gzip: true, file, cwd, preservePaths: true }, entries);
  return fs.readFileSync(file);
}

const md5 = (b: Buffer) => crypto.createHash('md5').update(b).digest('hex');

describe('download', () => {
  test('downloads, verifies and extracts the folder into place', async () => {
    const src = tmpDir();
    writeTinyCifar(path.join(src, 'cifar-10-batches-bin'));
    const body = await makeArchive(['cifar-10-batches-bin'], src);
    const srv = await serve(body);
    const out = tmpDir();
    try {
      const target = path.join(out, 'cifar-10-batches-bin');
      await downloadAndExtract({ url: srv.url, md5: md5(body), archive: path.join(out, 'c.tar.gz'), target, folderInArchive: 'cifar-10-batches-bin', label: 't' });
      assert.equal(readCifar10Dir(target, 20).train.n, 100);
      assert.deepEqual(fs.readdirSync(out).sort(), ['c.tar.gz', 'cifar-10-batches-bin'], 'no temp folders or partial files left');
    } finally {
      srv.close();
    }
  });

  test('a checksum mismatch deletes the partial download', async () => {
    const srv = await serve(Buffer.from('not the archive'));
    const out = tmpDir();
    try {
      await assert.rejects(
        downloadAndExtract({ url: srv.url, md5: 'c32a1d4ab5d03f1284b67883e8d87530', archive: path.join(out, 'c.tar.gz'), target: path.join(out, 'x'), folderInArchive: 'x', label: 't' }),
        /checksum mismatch, md5 [0-9a-f]{32}, expected c32a1d4ab5d03f1284b67883e8d87530 \(partial download deleted\)/,
      );
      assert.deepEqual(fs.readdirSync(out), []);
    } finally {
      srv.close();
    }
  });

  test('an archive entry outside the target directory is refused and nothing is extracted', async () => {
    const src = tmpDir();
    fs.mkdirSync(path.join(src, 'inner'));
    fs.writeFileSync(path.join(src, 'evil.txt'), 'x');
    const body = await makeArchive(['inner/../../evil.txt'], path.join(src, 'inner'));
    const srv = await serve(body);
    const out = tmpDir();
    try {
      await assert.rejects(
        downloadAndExtract({ url: srv.url, md5: md5(body), archive: path.join(out, 'c.tar.gz'), target: path.join(out, 'x'), folderInArchive: 'x', label: 't' }),
        /archive entry "[^"]*\.\.\/evil\.txt" would land outside the target directory/,
      );
      assert.ok(!fs.existsSync(path.join(out, 'x')));
      assert.ok(!fs.existsSync(path.join(out, '..', 'evil.txt')));
    } finally {
      srv.close();
    }
  });

  test('offline with no data: one error naming the URL, CIFAR10_DIR and the layout', async () => {
    await withRuntimeContext({ cifar10Dir: undefined, dataDir: tmpDir() }, async () => {
      await assert.rejects(loadCifar10({ url: 'http://127.0.0.1:9/none.tar.gz' }), (err: Error) => {
        assert.match(err.message, /CIFAR-10 not found and could not be downloaded/);
        assert.ok(err.message.includes(ARCHIVE_URL), 'names the official URL');
        assert.match(err.message, /CIFAR10_DIR/);
        assert.match(err.message, /data_batch_1\.bin.*test_batch\.bin.*batches\.meta\.txt/);
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      });
    });
  });
});

// ---- the real dataset -------------------------------------------------------------------------

const realDir = process.env.CIFAR10_DIR;
describe('the real CIFAR-10', { skip: realDir ? false : 'set CIFAR10_DIR to a cifar-10-batches-bin folder (e.g. ../shared/datasets/cifar-10-batches-bin) to run' }, () => {
  test('50,000 / 10,000 records, 5,000 / 1,000 per class, known first test labels', async () => {
    const data = await loadCifar10({ dir: realDir });
    assert.equal(data.train.n, 50000);
    assert.equal(data.test.n, 10000);
    assert.deepEqual(classCounts(data.train), new Array(10).fill(5000));
    assert.deepEqual(classCounts(data.test), new Array(10).fill(1000));
    assert.deepEqual([...data.test.labels.subarray(0, 10)], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    assert.deepEqual(data.classNames, CLASSES);
    const { train, val } = splitTrainVal(data.train);
    assert.equal(val.n, 5000);
    assert.equal(train.n, 45000);
    assert.deepEqual(classCounts(val), new Array(10).fill(500));
  });
});
