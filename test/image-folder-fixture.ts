// A small image folder for tests, written from synthetic pixels with sharp itself (and bmp-ts for the one format
// libvips cannot write here): every format, the awkward colour models, an EXIF-rotated photo, broken files, and the
// hidden clutter that notebooks and macOS leave behind. No network.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import sharp from 'sharp';
import * as bmp from 'bmp-ts';

export type Rgb = readonly [number, number, number];

export const RED: Rgb = [220, 30, 30];
export const GREEN: Rgb = [30, 200, 40];
export const BLUE: Rgb = [30, 40, 220];
export const WHITE: Rgb = [255, 255, 255];

/** The solid colour each format's file in bird/ is drawn in (all distinct, so a mix-up shows). */
export const FORMAT_COLOURS: Record<string, Rgb> = {
  'b1.png': [200, 60, 60],
  'b2.jpg': [60, 180, 60],
  'b3.webp': [60, 60, 200],
  'b4.gif': [200, 200, 40],
  'b5.bmp': [40, 200, 200],
  'b6.tiff': [200, 40, 200],
  'b7.avif': [120, 90, 30],
};
/** Source sizes (width x height) of the bird/ files: mixed sizes and aspect ratios. */
export const FORMAT_SIZES: Record<string, [number, number]> = {
  'b1.png': [40, 30],
  'b2.jpg': [64, 48],
  'b3.webp': [50, 50],
  'b4.gif': [30, 60],
  'b5.bmp': [33, 21],
  'b6.tiff': [20, 20],
  'b7.avif': [48, 32],
};

const made: string[] = [];

export function tmpDir(prefix = 'image-folder-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  made.push(dir);
  return dir;
}

/** Remove every folder tmpDir made (call from the test file's after()). */
export function removeFixtures(): void {
  for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true });
}

/** Raw RGB pixels: `paint(x, y)` gives each pixel's colour. */
export function rawRgb(width: number, height: number, paint: (x: number, y: number) => Rgb): Buffer {
  const b = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) b.set(paint(x, y), (y * width + x) * 3);
  }
  return b;
}

export const fromRaw = (data: Buffer, width: number, height: number, channels: 1 | 2 | 3 | 4 = 3) => sharp(data, { raw: { width, height, channels } });
export const solid = (width: number, height: number, c: Rgb) => fromRaw(rawRgb(width, height, () => c), width, height);

/** Quadrants: top-left red, top-right green, bottom-left blue, bottom-right white (every rotation/flip differs). */
export function quadrants(width: number, height: number): Buffer {
  return rawRgb(width, height, (x, y) => (y < height / 2 ? (x < width / 2 ? RED : GREEN) : x < width / 2 ? BLUE : WHITE));
}

/** Vertical thirds: red, green, blue. */
export function thirds(width: number, height: number): Buffer {
  return rawRgb(width, height, (x) => (x < width / 3 ? RED : x < (2 * width) / 3 ? GREEN : BLUE));
}

/** A 24-bit BMP, written by bmp-ts (libvips has no BMP saver either). bmp-ts takes pixels as ABGR. */
export function bmpFile(width: number, height: number, paint: (x: number, y: number) => Rgb): Buffer {
  const abgr = Buffer.alloc(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [r, g, b] = paint(x, y);
      abgr.set([255, b, g, r], (y * width + x) * 4);
    }
  }
  return bmp.encode({ width, height, data: abgr, bitPP: 24 } as bmp.BmpImage).data;
}

/** A PNG whose IHDR claims width x height (CRC recomputed, so it parses): a decompression bomb's header. */
export async function bombPng(width: number, height: number): Promise<Buffer> {
  const png = Buffer.from(await solid(8, 8, RED).png().toBuffer());
  png.writeUInt32BE(width, 16);
  png.writeUInt32BE(height, 20);
  png.writeUInt32BE(zlib.crc32(png.subarray(12, 29)) >>> 0, 29); // CRC over "IHDR" + its 13 data bytes
  return png;
}

function write(file: string, data: Buffer | string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, data);
}

/**
 * The main fixture, `classes` layout. Classes in byte order: Cat, bird, dog (localeCompare would say bird, Cat, dog).
 *   bird/  one file per format (FORMAT_COLOURS, FORMAT_SIZES), plus notes.jpg (text) and empty.png (0 bytes)
 *   Cat/   cmyk.jpg, deep.png (16-bit), grey.png (1 channel), rgba.png (left half transparent), rotated.jpg (EXIF 6),
 *          wide.png (thirds, 90x30), anim.gif (2 frames: red then blue), corrupt.png, truncated.jpg, .DS_Store
 *   dog/   d1-d4 (PNG/JPEG), nested/d5.png, loop -> .. (symlink loop), self -> self (ELOOP)
 *   .ipynb_checkpoints/ (a PNG inside), .DS_Store, __MACOSX/bird/._b1.png, README.txt (outside any class folder)
 */
export async function buildImageFolder(root = tmpDir()): Promise<string> {
  const w = (rel: string, data: Buffer | string) => write(path.join(root, rel), data);

  for (const [name, c] of Object.entries(FORMAT_COLOURS)) {
    const [width, height] = FORMAT_SIZES[name];
    const img = solid(width, height, c);
    const ext = name.split('.').pop();
    if (ext === 'png') w(`bird/${name}`, await img.png().toBuffer());
    if (ext === 'jpg') w(`bird/${name}`, await img.jpeg({ quality: 95 }).toBuffer());
    if (ext === 'webp') w(`bird/${name}`, await img.webp({ quality: 95 }).toBuffer());
    if (ext === 'gif') w(`bird/${name}`, await img.gif().toBuffer());
    if (ext === 'bmp') w(`bird/${name}`, bmpFile(width, height, () => c));
    if (ext === 'tiff') w(`bird/${name}`, await img.tiff().toBuffer());
    if (ext === 'avif') w(`bird/${name}`, await img.avif({ quality: 90 }).toBuffer());
  }
  w('bird/notes.jpg', 'this is not a picture, just notes saved with the wrong name\n');
  w('bird/empty.png', Buffer.alloc(0));

  // CMYK JPEG of a red square: converting back must give red, not the inverted or cyan garbage of a naive reader.
  w('Cat/cmyk.jpg', await solid(24, 24, RED).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer());
  // 16-bit PNG: 40000 (0x9c40) of 65535 is 155.6 in 8 bits; a reader that took the low byte would give 64.
  const deep = new Uint16Array(20 * 20 * 3).fill(40000);
  w('Cat/deep.png', await sharp(deep, { raw: { width: 20, height: 20, channels: 3 } }).toColourspace('rgb16').png().toBuffer());
  // Greyscale PNG (colour type 0, one channel): sharp writes sRGB unless told the output is b-w.
  w('Cat/grey.png', await fromRaw(Buffer.alloc(16 * 16, 90), 16, 16, 1).toColourspace('b-w').png().toBuffer());
  // RGBA: left half fully transparent blue (must come out white), right half opaque red.
  const rgba = Buffer.alloc(32 * 32 * 4);
  for (let i = 0; i < 32 * 32; i++) rgba.set((i % 32) < 16 ? [0, 0, 255, 0] : [...RED, 255], i * 4);
  w('Cat/rgba.png', await fromRaw(rgba, 32, 32, 4).png().toBuffer());
  // Displayed: 64x32 quadrants. Stored: that image turned 90° counter-clockwise (32x64) with EXIF orientation 6
  // ("rotate 90° clockwise to display"), as a phone held upright writes it.
  const stored = await fromRaw(quadrants(64, 32), 64, 32).rotate(-90).png().toBuffer();
  w('Cat/rotated.jpg', await sharp(stored).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer());
  w('Cat/wide.png', await fromRaw(thirds(90, 30), 90, 30).png().toBuffer());
  // Two frames, red then blue: only the first is the image.
  const frames = Buffer.concat([rawRgb(20, 20, () => RED), rawRgb(20, 20, () => BLUE)]);
  w('Cat/anim.gif', await sharp(frames, { raw: { width: 20, height: 40, channels: 3, pageHeight: 20 } as never }).gif().toBuffer());
  // Corrupt: a real PNG whose pixel data (IDAT) is overwritten; the signature and header still say PNG.
  const good = Buffer.from(await sharp(quadrants(40, 40), { raw: { width: 40, height: 40, channels: 3 } }).png({ compressionLevel: 0 }).toBuffer());
  const idat = good.indexOf('IDAT');
  good.fill(0xaa, idat + 4 + 10, idat + 4 + 400);
  w('Cat/corrupt.png', good);
  const noisy = await sharp({ create: { width: 64, height: 64, channels: 3, background: 'grey', noise: { type: 'gaussian', mean: 128, sigma: 40 } } }).jpeg().toBuffer();
  w('Cat/truncated.jpg', noisy.subarray(0, Math.floor(noisy.length / 2)));
  w('Cat/.DS_Store', Buffer.from('Bud1\0\0\0\x01', 'binary'));

  w('dog/d1.png', await solid(30, 30, [90, 60, 30]).png().toBuffer());
  w('dog/d2.jpg', await solid(45, 30, [80, 70, 50]).jpeg().toBuffer());
  w('dog/d3.png', await solid(10, 70, [70, 50, 40]).png().toBuffer());
  w('dog/d4.jpg', await solid(128, 96, [60, 40, 20]).jpeg().toBuffer());
  w('dog/nested/d5.png', await solid(12, 12, [100, 80, 60]).png().toBuffer());
  fs.symlinkSync('..', path.join(root, 'dog/loop'));
  fs.symlinkSync('self', path.join(root, 'dog/self'));

  w('.ipynb_checkpoints/b1-checkpoint.png', await solid(8, 8, RED).png().toBuffer());
  w('.DS_Store', Buffer.from('Bud1\0\0\0\x01', 'binary'));
  w('__MACOSX/bird/._b1.png', Buffer.from([0, 5, 22, 7, 0, 2, 0, 0]));
  w('README.txt', 'my pictures\n');
  return root;
}

/**
 * The `splits` layout with exact duplicates: train/{ant,bee}/ 4 images each, val/{ant,bee}/ 2 each.
 * val/ant/copy.webp has the same pixels as train/ant/a0.png (lossless WebP vs PNG: equal pixels, different bytes),
 * and train/bee/b3.png the same pixels as train/ant/a1.png (a labelling mistake).
 */
export async function buildSplitFolder(root = tmpDir()): Promise<string> {
  const w = (rel: string, data: Buffer) => write(path.join(root, rel), data);
  const pic = (seed: number) => fromRaw(rawRgb(16, 16, (x, y) => [(x * 16 + seed * 37) % 256, (y * 16 + seed * 11) % 256, (seed * 53) % 256]), 16, 16);
  for (let i = 0; i < 4; i++) w(`train/ant/a${i}.png`, await pic(i).png().toBuffer());
  for (let i = 0; i < 3; i++) w(`train/bee/b${i}.png`, await pic(10 + i).png().toBuffer());
  w('train/bee/b3.png', await pic(1).png().toBuffer());
  w('val/ant/copy.webp', await pic(0).webp({ lossless: true }).toBuffer());
  w('val/ant/v1.png', await pic(20).png().toBuffer());
  w('val/bee/v2.png', await pic(21).png().toBuffer());
  w('val/bee/v3.png', await pic(22).png().toBuffer());
  return root;
}
