import { test, describe, before, after } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import {
  DecodedImage,
  DecodeResult,
  FolderScan,
  byteOrder,
  decodeImageFile,
  decodeImages,
  decodeStream,
  describeDuplicates,
  findDuplicates,
  formatSplitCounts,
  planSplits,
  scanImageFolder,
  sniffImage,
  splitOf,
} from '../lib/data/image-folder';
import { MAX_IMAGE_PIXELS } from '../lib/data/pixels';
import {
  BLUE, FORMAT_COLOURS, FORMAT_SIZES, GREEN, RED, Rgb, WHITE,
  bombPng, buildImageFolder, buildSplitFolder, removeFixtures, solid, tmpDir,
} from './image-folder-fixture';

/** The RGB of pixel (x, y) of a size x size decoded image. */
function px(pixels: Uint8Array, size: number, x: number, y: number): Rgb {
  const o = (y * size + x) * 3;
  return [pixels[o], pixels[o + 1], pixels[o + 2]];
}

function near(actual: Rgb, expected: Rgb, tol: number, what: string): void {
  const off = Math.max(...actual.map((v, i) => Math.abs(v - expected[i])));
  assert.ok(off <= tol, `${what}: got [${actual}], expected [${expected}] ± ${tol}`);
}

let root: string;
let scan: FolderScan;
/** Every fixture file decoded at 16x16 'cover', by relative path. */
const decoded = new Map<string, DecodeResult>();

before(async () => {
  root = await buildImageFolder();
  scan = await scanImageFolder(root);
  for await (const r of decodeStream(scan.files, { size: 16, concurrency: 2 })) decoded.set(r.file.rel, r);
});

after(removeFixtures);

function ok(rel: string): DecodedImage {
  const r = decoded.get(rel);
  assert.ok(r, `${rel} was not decoded at all`);
  assert.ok(r.ok, `${rel} failed: ${!r.ok && r.reason}`);
  return r;
}

describe('scanImageFolder', () => {
  test('class names come from folder names in byte order, not locale order', () => {
    assert.equal(scan.layout, 'classes');
    assert.deepEqual(scan.classNames, ['Cat', 'bird', 'dog']); // localeCompare would give bird, Cat, dog
    assert.deepEqual(scan.splits, ['train']);
    assert.ok(byteOrder('Zebra', 'apple') < 0 && byteOrder('apple', 'Äpfel') < 0);
  });

  test('images are found by content, including nested folders; labels follow the class order', () => {
    const rels = scan.files.map((f) => f.rel);
    for (const name of Object.keys(FORMAT_COLOURS)) assert.ok(rels.includes(`bird/${name}`), `bird/${name} missing`);
    assert.ok(rels.includes('dog/nested/d5.png'));
    assert.equal(scan.files.find((f) => f.rel === 'bird/b5.bmp')?.format, 'bmp');
    assert.equal(scan.files.find((f) => f.rel === 'bird/b7.avif')?.format, 'avif');
    for (const f of scan.files) assert.equal(scan.classNames[f.label], f.rel.split('/')[0], f.rel);
    assert.deepEqual(scan.counts.train, [9, 7, 5]);
  });

  test('hidden and system entries are skipped, with one summary line', () => {
    assert.deepEqual(scan.skipped, ['.DS_Store', '.ipynb_checkpoints/', 'Cat/.DS_Store', '__MACOSX/']);
    assert.equal(scan.skippedSummary.split('\n').length, 1);
    assert.match(scan.skippedSummary, /^skipped 4 hidden\/system entries.*\.DS_Store ×2.*\.ipynb_checkpoints\/ ×1.*__MACOSX\/ ×1/);
    assert.ok(!scan.files.some((f) => f.rel.includes('checkpoint') || f.rel.includes('__MACOSX')));
  });

  test('non-images, empty files, stray files and symlink loops are listed with reasons', () => {
    const reasons = Object.fromEntries(scan.rejected.map((r) => [r.rel, r.reason]));
    assert.match(reasons['bird/notes.jpg'], /^not an image: looks like text/);
    assert.equal(reasons['bird/empty.png'], 'empty file (0 bytes)');
    assert.match(reasons['README.txt'], /outside any class folder/);
    assert.match(reasons['dog/loop'], /symlink loop/);
    assert.match(reasons['dog/self'], /symlink loop/);
    assert.equal(scan.rejected.length, 5);
  });

  test('the split layout: train/ defines the classes, val/ is read as given', async () => {
    const s = await scanImageFolder(await buildSplitFolder());
    assert.equal(s.layout, 'splits');
    assert.deepEqual(s.classNames, ['ant', 'bee']);
    assert.deepEqual(s.splits, ['train', 'val']);
    assert.deepEqual(s.counts, { train: [4, 4], val: [2, 2], test: [0, 0] });
    assert.deepEqual(s.files.filter((f) => f.split === 'val').map((f) => f.rel), ['val/ant/copy.webp', 'val/ant/v1.png', 'val/bee/v2.png', 'val/bee/v3.png']);
    assert.deepEqual(s.warnings, []);
    // A class missing from val/ is allowed, and said.
    fs.rmSync(path.join(s.root, 'val/bee'), { recursive: true });
    const partial = await scanImageFolder(s.root);
    assert.deepEqual(partial.warnings, ['val/ has no folder for class bee: val accuracy will not cover it']);
  });

  test('a train/ folder of plain images is a class called "train", not the split layout', async () => {
    const r = tmpDir();
    for (const c of ['train', 'other']) fs.mkdirSync(path.join(r, c));
    fs.writeFileSync(path.join(r, 'train/a.png'), await solid(4, 4, RED).png().toBuffer());
    fs.writeFileSync(path.join(r, 'other/b.png'), await solid(4, 4, BLUE).png().toBuffer());
    const s = await scanImageFolder(r);
    assert.equal(s.layout, 'classes');
    assert.deepEqual(s.classNames, ['other', 'train']);
  });

  test('a class folder with no images is an error naming it', async () => {
    const r = tmpDir();
    fs.mkdirSync(path.join(r, 'cat'));
    fs.mkdirSync(path.join(r, 'dog'));
    fs.mkdirSync(path.join(r, 'emu'));
    fs.writeFileSync(path.join(r, 'cat/a.png'), await solid(4, 4, RED).png().toBuffer());
    fs.writeFileSync(path.join(r, 'dog/readme.jpg'), 'text');
    await assert.rejects(scanImageFolder(r), (err: Error) => {
      assert.match(err.message, /class folders with no images: dog\/ \(1 file, none an image we decode\), emu\/ \(empty\)/);
      assert.ok(err.message.startsWith(r), err.message);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
  });

  test('layout errors name the folder: one class, a stray folder beside train/, a val class unknown to train/', async () => {
    const one = tmpDir();
    fs.mkdirSync(path.join(one, 'cat'));
    fs.writeFileSync(path.join(one, 'cat/a.png'), await solid(4, 4, RED).png().toBuffer());
    await assert.rejects(scanImageFolder(one), /found 1 class folder \(cat\/\); a classifier needs at least 2/);

    const stray = await buildSplitFolder();
    fs.mkdirSync(path.join(stray, 'models'));
    await assert.rejects(scanImageFolder(stray), /unexpected folder models\/ beside train\//);

    const unknown = await buildSplitFolder();
    fs.mkdirSync(path.join(unknown, 'val/cow'));
    fs.writeFileSync(path.join(unknown, 'val/cow/c.png'), await solid(4, 4, RED).png().toBuffer());
    await assert.rejects(scanImageFolder(unknown), /class folder val\/cow\/ not in train\//);

    await assert.rejects(scanImageFolder(path.join(one, 'nope')), /nope: no such folder/);
  });

  test('sniffImage goes by content: a PNG named .jpg is a PNG; HEIC and SVG get a reason saying so', async () => {
    assert.deepEqual(sniffImage(await solid(4, 4, RED).png().toBuffer()), { format: 'png' });
    assert.match((sniffImage(Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>')) as { reason: string }).reason, /SVG/);
    const heic = Buffer.concat([Buffer.from([0, 0, 0, 24]), Buffer.from('ftypheic\0\0\0\0mif1heic')]);
    assert.match((sniffImage(heic) as { reason: string }).reason, /HEIC/);
    assert.match((sniffImage(Buffer.from([1, 2, 3, 4, 0, 0, 0, 0])) as { reason: string }).reason, /unknown format \(starts with bytes 0102030400000000\)/);
  });
});

describe('decoding', () => {
  test('every format decodes to its colour at the target size (sharp; BMP via bmp-ts)', () => {
    for (const [name, colour] of Object.entries(FORMAT_COLOURS)) {
      const d = ok(`bird/${name}`);
      assert.equal(d.pixels.length, 16 * 16 * 3, name);
      assert.deepEqual([d.width, d.height], FORMAT_SIZES[name], `${name} source size`);
      // Lossless formats exactly; JPEG, WebP and AVIF within their quantisation.
      const lossy = /\.(jpg|webp|avif)$/.test(name);
      for (const [x, y] of [[0, 0], [8, 8], [15, 15]]) near(px(d.pixels, 16, x, y), colour, lossy ? 6 : 0, `${name} (${x},${y})`);
    }
  });

  test('CMYK, 16-bit, greyscale and RGBA come out as 8-bit sRGB; alpha on white', () => {
    near(px(ok('Cat/cmyk.jpg').pixels, 16, 8, 8), RED, 40, 'CMYK red');
    const deep = px(ok('Cat/deep.png').pixels, 16, 8, 8);
    near(deep, [156, 156, 156], 1, '16-bit 40000/65535');
    assert.deepEqual(px(ok('Cat/grey.png').pixels, 16, 3, 3), [90, 90, 90]);
    const rgba = ok('Cat/rgba.png').pixels;
    assert.deepEqual(px(rgba, 16, 2, 8), [255, 255, 255], 'transparent half flattened on white');
    assert.deepEqual(px(rgba, 16, 13, 8), [...RED], 'opaque half kept');
  });

  test('GIF: the first frame only', async () => {
    assert.equal((await sharp(path.join(root, 'Cat/anim.gif')).metadata()).pages, 2, 'fixture has two frames');
    near(px(ok('Cat/anim.gif').pixels, 16, 8, 8), RED, 0, 'first frame');
  });

  test('EXIF orientation is honoured: the quadrants land where they are displayed', async () => {
    const meta = await sharp(path.join(root, 'Cat/rotated.jpg')).metadata();
    assert.deepEqual([meta.width, meta.height, meta.orientation], [32, 64, 6], 'fixture is stored portrait with orientation 6');
    const d = await decodeImageFile(path.join(root, 'Cat/rotated.jpg'), { size: 32, fit: 'contain' });
    assert.deepEqual([d.width, d.height], [64, 32]);
    // Displayed 64x32 in a 32x32 square: rows 8-23 hold the picture, 0-7 and 24-31 are black padding.
    near(px(d.pixels, 32, 4, 10), RED, 30, 'top-left');
    near(px(d.pixels, 32, 28, 10), GREEN, 30, 'top-right');
    near(px(d.pixels, 32, 4, 21), BLUE, 30, 'bottom-left');
    near(px(d.pixels, 32, 28, 21), WHITE, 30, 'bottom-right');
    assert.deepEqual(px(d.pixels, 32, 16, 2), [0, 0, 0]);
  });

  test("fit 'cover' centre-crops, 'contain' pads with black (or a chosen colour)", async () => {
    const file = path.join(root, 'Cat/wide.png'); // 90x30: red | green | blue thirds
    const cover = await decodeImageFile(file, { size: 30, fit: 'cover' });
    for (const [x, y] of [[0, 0], [15, 15], [29, 29]]) assert.deepEqual(px(cover.pixels, 30, x, y), [...GREEN], `cover keeps only the middle third (${x},${y})`);
    const contain = await decodeImageFile(file, { size: 30, fit: 'contain' });
    assert.deepEqual(px(contain.pixels, 30, 15, 0), [0, 0, 0], 'padding row');
    assert.deepEqual(px(contain.pixels, 30, 15, 29), [0, 0, 0], 'padding row');
    assert.deepEqual(px(contain.pixels, 30, 1, 15), [...RED]);
    assert.deepEqual(px(contain.pixels, 30, 15, 15), [...GREEN]);
    assert.deepEqual(px(contain.pixels, 30, 28, 15), [...BLUE]);
    const grey = await decodeImageFile(file, { size: 30, fit: 'contain', padColor: { r: 128, g: 128, b: 128 } });
    assert.deepEqual(px(grey.pixels, 30, 15, 0), [128, 128, 128]);
  });

  test('any source size resizes to exactly size x size x 3, odd sizes and upscaling included', async () => {
    for (const size of [7, 48]) {
      for (const rel of ['bird/b4.gif', 'dog/d4.jpg', 'dog/d3.png', 'bird/b5.bmp']) {
        const d = await decodeImageFile(path.join(root, rel), { size, fit: rel.endsWith('png') ? 'contain' : 'cover' });
        assert.equal(d.pixels.length, size * size * 3, `${rel} at ${size}`);
      }
    }
    await assert.rejects(decodeImageFile(path.join(root, 'dog/d1.png'), { size: 0 }), /decode size 0: expected a whole number of pixels/);
  });

  test('corrupt and truncated files fail with a reason; the run goes on', () => {
    const corrupt = decoded.get('Cat/corrupt.png');
    const truncated = decoded.get('Cat/truncated.jpg');
    assert.ok(corrupt && !corrupt.ok && truncated && !truncated.ok);
    assert.match(corrupt.reason, /^corrupt or truncated PNG \(.+\)$/);
    // libvips' words, or (when decodes in parallel overwrite its shared error text) what the generic line means.
    assert.match(truncated.reason, /^corrupt or truncated JPEG \((.*premature end.*|libvips warned while decoding it: damaged or incomplete data)\)$/i);
    // Everything else in the folder decoded.
    assert.equal([...decoded.values()].filter((r) => r.ok).length, scan.files.length - 2);
  });

  test('non-images handed to the decoder directly fail with one line naming the file', async () => {
    await assert.rejects(decodeImageFile(path.join(root, 'bird/notes.jpg'), { size: 8 }), (e: Error) => e.message === `${path.join(root, 'bird/notes.jpg')}: not an image: looks like text ("this is not a picture, j…")`);
    await assert.rejects(decodeImageFile(path.join(root, 'bird/empty.png'), { size: 8 }), /empty\.png: empty file \(0 bytes\)$/);
    await assert.rejects(decodeImageFile(path.join(root, 'bird/gone.png'), { size: 8 }), /gone\.png: cannot read \(ENOENT\)$/);
    // A BMP cut short: bmp-ts runs out of bytes; the message says which file and what kind.
    const cut = path.join(tmpDir(), 'cut.bmp');
    fs.writeFileSync(cut, fs.readFileSync(path.join(root, 'bird/b5.bmp')).subarray(0, 200));
    await assert.rejects(decodeImageFile(cut, { size: 8 }), /cut\.bmp: corrupt or truncated BMP \(.+\)$/);
    await assert.rejects(decodeImageFile(path.join(root, 'dog/d1.png'), { size: 8, maxPixels: 0.5 }), /maxPixels 0\.5: expected a whole number/);
  });

  test('a decompression bomb is refused from its header, before decoding', async () => {
    const dir = tmpDir();
    const bomb = path.join(dir, 'bomb.png');
    fs.writeFileSync(bomb, await bombPng(16_000, 16_000));
    const t0 = Date.now();
    await assert.rejects(decodeImageFile(bomb, { size: 8 }), (e: Error) => {
      assert.match(e.message, /bomb\.png: 16000x16000 PNG is 256\.0 megapixels, over the 40-megapixel limit/);
      return true;
    });
    assert.ok(Date.now() - t0 < 2000, 'refused without decoding');
    assert.equal(MAX_IMAGE_PIXELS, 40_000_000);
    // The limit is a setting: a 30x30 BMP (read by bmp-ts, not sharp) against a 500-pixel limit.
    const small = path.join(dir, 'small.bmp');
    fs.copyFileSync(path.join(root, 'bird/b5.bmp'), small);
    await assert.rejects(decodeImageFile(small, { size: 8, maxPixels: 500 }), /33x21 BMP is 0\.0 megapixels, over the 0\.0005-megapixel limit/);
  });

  test('streaming keeps input order with several in flight, and decodeImages reports failures', async () => {
    const order: number[] = [];
    const report = await decodeImages(scan.files, { size: 8, concurrency: 4 }, async (img) => {
      order.push(img.index);
      if (img.index % 3 === 0) await new Promise((r) => setTimeout(r, 5)); // a slow consumer
    });
    assert.deepEqual(order, [...order].sort((a, b) => a - b));
    assert.equal(report.decoded, scan.files.length - 2);
    assert.deepEqual(report.failed.map((f) => f.rel).sort(), ['Cat/corrupt.png', 'Cat/truncated.jpg']);
  });

  test('bounded: never more than `concurrency` images started ahead of the consumer; stopping stops decoding', async () => {
    let started = 0;
    // Each file's path is read once, when its decode starts: count those reads.
    const counted = scan.files.map((f) => ({ ...f, get path() { started++; return f.path; } }));
    let taken = 0;
    for await (const r of decodeStream(counted, { size: 8, concurrency: 3 })) {
      assert.equal(r.index, taken);
      taken++;
      assert.ok(started - taken <= 3, `${started} started, ${taken} taken`);
      if (taken === 5) break;
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(started <= 5 + 3, `${started} decodes started after taking 5 of ${scan.files.length} with concurrency 3`);
    await assert.rejects(decodeStream(scan.files, { size: 8, concurrency: 0 }).next(), /concurrency 0: expected a whole number >= 1/);
  });

  test('the pixel hash is of decoded pixels: same picture, different file format, same hash', async () => {
    const s = await scanImageFolder(await buildSplitFolder());
    const hashes = new Map<string, string>();
    await decodeImages(s.files, { size: 16 }, (img) => void hashes.set(img.file.rel, img.hash));
    assert.equal(hashes.get('val/ant/copy.webp'), hashes.get('train/ant/a0.png'));
    assert.notEqual(hashes.get('train/ant/a0.png'), hashes.get('train/ant/a2.png'));
    assert.match(hashes.get('train/ant/a0.png') as string, /^[0-9a-f]{64}$/);
  });
});

describe('splits and duplicates', () => {
  /** n[c] items of class c, all from train/. */
  const items = (n: number[]) => n.flatMap((k, c) => Array.from({ length: k }, (_, i) => ({ label: c, split: 'train' as const, rel: `c${c}/${i}.png` })));
  const names = ['a', 'b', 'c'];

  test('carved splits are stratified, disjoint, cover everything and keep a share of every class', () => {
    const it = items([100, 40, 7]);
    const plan = planSplits(it, names, { valFraction: 0.2, testFraction: 0.1, seed: 1 });
    assert.deepEqual(plan.counts.val, [20, 8, 1]);
    assert.deepEqual(plan.counts.test, [10, 4, 1]);
    assert.deepEqual(plan.counts.train, [70, 28, 5]);
    const all = [...plan.train, ...plan.val, ...plan.test].sort((a, b) => a - b);
    assert.deepEqual(all, it.map((_, i) => i));
    assert.deepEqual(plan.carved, { val: true, test: true });
    assert.match(formatSplitCounts(plan, names), /^class\s+train\s+val\s+test\na\s+70\s+20\s+10\n/);
  });

  test('seeded: the same seed gives the same split, another seed another', () => {
    const it = items([50, 50, 50]);
    const a = planSplits(it, names, { seed: 7 });
    assert.deepEqual(planSplits(it, names, { seed: 7 }), a);
    assert.notDeepEqual(planSplits(it, names, { seed: 8 }).val, a.val);
  });

  test('val/ and test/ folders are used as given, nothing carved from train', () => {
    const it = [...items([10, 10]), { label: 0, split: 'val' as const }, { label: 1, split: 'val' as const }, { label: 1, split: 'test' as const }];
    const plan = planSplits(it, ['a', 'b'], { valFraction: 0.3 });
    assert.deepEqual(plan.val, [20, 21]);
    assert.deepEqual(plan.test, [22]);
    assert.equal(plan.train.length, 20);
    assert.deepEqual(plan.carved, { val: false, test: false });
  });

  test('a class too small for the requested splits is an error naming it', () => {
    assert.throws(() => planSplits(items([10, 1, 5]), names, { testFraction: 0 }), (e: Error) => {
      assert.equal(e.message, 'too few images to hold out validation per class (each needs at least 2: one for training, one per held-out split): class "b" has 1');
      return true;
    });
    assert.throws(() => planSplits(items([2, 1, 5]), names), /needs at least 3: .*: class "a" has 2, class "b" has 1$/);
    assert.doesNotThrow(() => planSplits(items([2, 3, 5]), names, { testFraction: 0 }));
    assert.throws(() => planSplits(items([9, 9]), ['a', 'b'], { valFraction: 1 }), /valFraction 1: expected a share in \[0, 1\)/);
  });

  test('exact duplicates across splits and classes are reported by pixel hash', async () => {
    const s = await scanImageFolder(await buildSplitFolder());
    const hashes: string[] = new Array(s.files.length);
    await decodeImages(s.files, { size: 16 }, (img) => void (hashes[img.index] = img.hash));
    const plan = planSplits(s.files, s.classNames, { testFraction: 0 });
    const split = splitOf(plan, s.files.length);
    const groups = findDuplicates(s.files.map((f, i) => ({ hash: hashes[i], rel: f.rel, split: split[i], label: f.label })));
    assert.equal(groups.length, 2);
    assert.deepEqual(groups[0].members.map((m) => m.rel), ['train/ant/a0.png', 'val/ant/copy.webp']);
    assert.ok(groups[0].crossSplit && !groups[0].crossClass);
    assert.deepEqual(groups[1].members.map((m) => m.rel), ['train/ant/a1.png', 'train/bee/b3.png']);
    assert.ok(!groups[1].crossSplit && groups[1].crossClass);
    assert.deepEqual(describeDuplicates(groups, s.classNames), [
      'same pixels in train and val: train/ant/a0.png, val/ant/copy.webp',
      'same pixels within train, labelled ant and bee: train/ant/a1.png, train/bee/b3.png',
    ]);
  });
});

test('fixture sanity: the formats on disk are what their names say (so the format tests test something)', async () => {
  const formats: Record<string, string> = {};
  for (const name of Object.keys(FORMAT_COLOURS)) {
    if (name.endsWith('.bmp')) continue; // sharp cannot read BMP: that is the point of bmp-ts
    formats[name] = (await sharp(path.join(root, 'bird', name)).metadata()).format as string;
  }
  assert.deepEqual(formats, { 'b1.png': 'png', 'b2.jpg': 'jpeg', 'b3.webp': 'webp', 'b4.gif': 'gif', 'b6.tiff': 'tiff', 'b7.avif': 'heif' });
  await assert.rejects(sharp(path.join(root, 'bird/b5.bmp')).metadata(), /unsupported image format/);
  const m = await sharp(path.join(root, 'Cat/cmyk.jpg')).metadata();
  assert.equal(m.space, 'cmyk');
  assert.equal((await sharp(path.join(root, 'Cat/deep.png')).metadata()).depth, 'ushort');
  assert.equal((await sharp(path.join(root, 'Cat/grey.png')).metadata()).channels, 1);
  assert.equal((await sharp(path.join(root, 'Cat/rgba.png')).metadata()).hasAlpha, true);
});
