// `npm run make-image-folder -- --out <dir> [--per-class 300] [--classes cat,dog,...] [--bad]`: a folder of class
// subfolders to try `--dataset <folder>` on without photos of your own (and what the tests and the README's worked
// example use). CIFAR-10 training images are enlarged to varied sizes and aspect ratios (48-384 px a side) and written
// as JPEG, PNG, WebP, GIF, BMP, TIFF and AVIF, with a few greyscale, 16-bit, CMYK and EXIF-rotated files; --bad adds
// what real folders hold: truncated and corrupt images, a zero-byte file, a text file, .DS_Store and a stray
// .ipynb_checkpoints/ folder. Seeded: the same options give the same files.
import * as fs from 'fs';
import * as path from 'path';
import sharp from 'sharp';
import * as bmp from 'bmp-ts';
import { loadCifar10 } from '../lib/data/cifar10';
import { rng } from '../lib/util/random';
import { parseCli, runCli, UsageError } from '../lib/util/cli';
import { userPath } from '../lib/settings/paths';

const CLI = {
  usage: 'npm run make-image-folder -- --out <dir> [--per-class N] [--classes a,b,...] [--offset K] [--bad]',
  notes: ['Images come from the CIFAR-10 training set (CIFAR10_DIR or data/), each class from its own images in order, starting at --offset.'],
  options: {
    out: { type: 'string', arg: 'dir', help: 'folder to create (must not exist, or be empty)' },
    'per-class': { type: 'string', arg: 'n', help: 'images per class (default 300)' },
    classes: { type: 'string', arg: 'list', help: 'CIFAR-10 class names to include (default all 10)' },
    offset: { type: 'string', arg: 'k', help: "skip each class's first k images (default 0): a second folder of different images" },
    bad: { type: 'boolean', help: 'add corrupt, empty, non-image and hidden files' },
  },
} as const;

type Format = 'jpeg' | 'png' | 'webp' | 'gif' | 'bmp' | 'tiff' | 'avif';
/** Share of each format: mostly JPEG and PNG, as photo folders are. */
const FORMATS: [Format, number][] = [['jpeg', 0.4], ['png', 0.2], ['webp', 0.14], ['gif', 0.08], ['bmp', 0.07], ['tiff', 0.06], ['avif', 0.05]];
const EXT: Record<Format, string> = { jpeg: 'jpg', png: 'png', webp: 'webp', gif: 'gif', bmp: 'bmp', tiff: 'tif', avif: 'avif' };

function pickFormat(r: number): Format {
  let acc = 0;
  for (const [f, p] of FORMATS) if (r < (acc += p)) return f;
  return 'jpeg';
}

/** One CIFAR image enlarged to width x height and encoded; `variant` adds greyscale / 16-bit / CMYK / EXIF rotation. */
async function encode(pixels: Uint8Array, width: number, height: number, format: Format, variant: string): Promise<Buffer> {
  let img = sharp(Buffer.from(pixels), { raw: { width: 32, height: 32, channels: 3 } }).resize(width, height, { fit: 'fill', kernel: 'lanczos3' });
  if (variant === 'grey') img = img.greyscale();
  if (format === 'bmp') {
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    const abgr = Buffer.alloc(info.width * info.height * 4);
    const ch = info.channels;
    for (let i = 0; i < info.width * info.height; i++) {
      abgr[i * 4] = 0;
      abgr[i * 4 + 1] = data[i * ch + (ch >= 3 ? 2 : 0)];
      abgr[i * 4 + 2] = data[i * ch + (ch >= 3 ? 1 : 0)];
      abgr[i * 4 + 3] = data[i * ch];
    }
    return bmp.encode({ data: abgr, width: info.width, height: info.height, bitPP: 24 }).data;
  }
  if (format === 'jpeg' && variant === 'cmyk') return img.toColourspace('cmyk').jpeg({ quality: 90 }).toBuffer();
  if (format === 'jpeg' && variant === 'rotated') {
    // Stored rotated 90 degrees anticlockwise with EXIF orientation 6 ("rotate 90 clockwise to display"): upright
    // only for a reader that honours EXIF, as phone photos are.
    const upright = await img.png().toBuffer();
    return sharp(upright).rotate(-90).withMetadata({ orientation: 6 }).jpeg({ quality: 90 }).toBuffer();
  }
  if (format === 'png' && variant === '16bit') return img.toColourspace('rgb16').png().toBuffer();
  switch (format) {
    case 'jpeg': return img.jpeg({ quality: 88 }).toBuffer();
    case 'png': return img.png().toBuffer();
    case 'webp': return img.webp({ quality: 85 }).toBuffer();
    case 'gif': return img.gif().toBuffer();
    case 'tiff': return img.tiff({ compression: 'lzw' }).toBuffer();
    case 'avif': return img.avif({ quality: 60, effort: 0 }).toBuffer();
    default: throw new Error(`format ${format}`);
  }
}

export interface MakeFolderOptions {
  out: string;
  perClass: number;
  classes?: string[];
  offset?: number;
  bad?: boolean;
  seed?: number;
  log?: (line: string) => void;
}

/** Write the folder; returns the files written per class and the bad files added. */
export async function makeImageFolder(o: MakeFolderOptions): Promise<{ images: number; bad: string[] }> {
  const data = await loadCifar10({ download: false });
  const names = o.classes ?? data.classNames;
  for (const c of names) if (!data.classNames.includes(c)) throw new UsageError(`--classes: ${c} is not a CIFAR-10 class (${data.classNames.join(', ')})`);
  if (fs.existsSync(o.out) && fs.readdirSync(o.out).length) throw new UsageError(`${o.out}: exists and is not empty`);
  const random = rng(o.seed ?? 7);
  const offset = o.offset ?? 0;
  let images = 0;
  const firstOf: Record<string, string> = {};
  for (const name of names) {
    const label = data.classNames.indexOf(name);
    const dir = path.join(o.out, name);
    fs.mkdirSync(dir, { recursive: true });
    let seen = 0;
    let made = 0;
    for (let i = 0; i < data.train.n && made < o.perClass; i++) {
      if (data.train.labels[i] !== label || seen++ < offset) continue;
      const side = 48 + Math.floor(random() * 336);
      const aspect = 0.6 + random() * 1.2;
      const [w, h] = aspect >= 1 ? [Math.round(side * aspect), side] : [side, Math.round(side / aspect)];
      const format = pickFormat(random());
      const v = random();
      const variant = v < 0.03 ? 'grey' : format === 'jpeg' && v < 0.05 ? 'cmyk' : format === 'jpeg' && v < 0.08 ? 'rotated' : format === 'png' && v < 0.1 ? '16bit' : '';
      const file = path.join(dir, `${name}_${String(i).padStart(5, '0')}${variant ? `_${variant}` : ''}.${EXT[format]}`);
      fs.writeFileSync(file, await encode(data.train.images.subarray(i * 3072, (i + 1) * 3072), w, h, format, variant));
      firstOf[name] ??= file;
      made++;
      images++;
    }
    o.log?.(`${name}: ${made} images`);
  }
  const bad: string[] = [];
  if (o.bad) {
    const [a, b, c] = [names[0], names[1 % names.length], names[2 % names.length]];
    const put = (rel: string, bytes: Buffer | string) => {
      fs.mkdirSync(path.dirname(path.join(o.out, rel)), { recursive: true });
      fs.writeFileSync(path.join(o.out, rel), bytes);
      bad.push(rel);
    };
    const jpeg = fs.readFileSync(Object.values(firstOf).find((f) => f.endsWith('.jpg'))!);
    put(`${a}/truncated.jpg`, jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    const png = await sharp({ create: { width: 64, height: 48, channels: 3, background: { r: 90, g: 120, b: 200 } } }).png().toBuffer();
    const broken = Buffer.from(png);
    broken.fill(0x55, 60, Math.min(broken.length - 12, 200)); // compressed data overwritten: bad CRC, bad zlib
    put(`${b}/corrupt.png`, broken);
    put(`${c}/empty.jpg`, Buffer.alloc(0));
    put(`${a}/notes.txt`, 'shot list, to sort later\n');
    put(`${b}/README.jpg`, 'this is text with an image extension\n');
    put(`${a}/.DS_Store`, Buffer.alloc(64, 1));
    put(`.ipynb_checkpoints/${path.basename(firstOf[a])}`, fs.readFileSync(firstOf[a]));
    put(`${c}/.ipynb_checkpoints/copy.png`, png);
  }
  return { images, bad };
}

async function main(): Promise<number> {
  const { values } = parseCli(CLI);
  if (!values.out) throw new UsageError('--out <dir> is required');
  const perClass = values['per-class'] === undefined ? 300 : Number(values['per-class']);
  if (!(Number.isInteger(perClass) && perClass >= 1)) throw new UsageError(`--per-class ${values['per-class']}: expected a whole number >= 1`);
  const offset = values.offset === undefined ? 0 : Number(values.offset);
  if (!(Number.isInteger(offset) && offset >= 0)) throw new UsageError(`--offset ${values.offset}: expected a whole number >= 0`);
  const out = userPath(values.out);
  const t0 = Date.now();
  const r = await makeImageFolder({ out, perClass, offset, classes: values.classes?.split(',').map((s) => s.trim()).filter(Boolean), bad: values.bad, log: (l) => console.log(l) });
  console.log(`wrote ${r.images} images${r.bad.length ? ` and ${r.bad.length} bad/stray files (${r.bad.join(', ')})` : ''} to ${out} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return 0;
}

if (require.main === module) runCli(main);
