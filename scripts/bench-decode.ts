// Decode + resize throughput of the image-folder reader (lib/data/image-folder.ts): a folder of 640x480 JPEGs (made
// here, in a temp folder, unless --dir names one) to 160x160, in input order, as the experiment would read it.
// Prints images/s per concurrency. Run: node --require ts-node/register/transpile-only scripts/bench-decode.ts
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { decodeImages, scanImageFolder } from '../lib/data/image-folder';
import { parseCli, runCli, UsageError } from '../lib/util/cli';

const CLI = {
  usage: 'node --require ts-node/register/transpile-only scripts/bench-decode.ts [options]',
  options: {
    dir: { type: 'string', arg: 'folder', help: 'an image folder to read instead of generated JPEGs' },
    images: { type: 'string', arg: 'n', default: '300', help: 'generated JPEGs (640x480, 3 classes)' },
    size: { type: 'string', arg: 'px', default: '160', help: 'square output side' },
    concurrency: { type: 'string', arg: 'n', multiple: true, help: `images in flight (default: 1 and ${os.availableParallelism()})` },
  },
} as const;

/** A photo-like 640x480 frame: smooth gradients plus texture that differs per image (JPEG size ~ a real photo's). */
function frame(seed: number, width = 640, height = 480): Buffer {
  const b = Buffer.alloc(width * height * 3);
  for (let y = 0, o = 0; y < height; y++) {
    for (let x = 0; x < width; x++, o += 3) {
      const t = Math.sin((x + seed * 13) / 37) * Math.cos((y - seed * 7) / 23);
      b[o] = (x * 255) / width;
      const grain = (Math.imul(x, 73856093) ^ Math.imul(y, 19349663) ^ Math.imul(seed, 83492791)) >>> 0;
      b[o + 1] = 128 + 100 * t + ((grain % 25) - 12); // sensor-like grain: real photos are not smooth
      b[o + 2] = ((x ^ y) + seed * 31) & 255;
    }
  }
  return b;
}

/** `n` photo-like 640x480 JPEGs in three class folders under a new temp folder (the caller removes it). */
export async function generate(n: number, log: (line: string) => void = (l) => console.log(l)): Promise<string> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-decode-'));
  const t0 = Date.now();
  for (let i = 0; i < n; i++) {
    const dir = path.join(root, `class${i % 3}`);
    fs.mkdirSync(dir, { recursive: true });
    await sharp(frame(i), { raw: { width: 640, height: 480, channels: 3 } }).jpeg({ quality: 90 }).toFile(path.join(dir, `img${String(i).padStart(4, '0')}.jpg`));
  }
  log(`generated ${n} 640x480 JPEGs in ${root} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  return root;
}

export interface DecodeBench { images: number; size: number; concurrency: number; seconds: number; imagesPerSec: number; cpuMsPerImage: number; kibPerImage: number }

/** Decode + resize every image of `root` to size x size, `concurrency` in flight, after a short warm-up. */
export async function measureDecode(root: string, size: number, concurrency: number): Promise<DecodeBench> {
  const scan = await scanImageFolder(root);
  const bytes = scan.files.reduce((s, f) => s + fs.statSync(f.path).size, 0);
  await decodeImages(scan.files.slice(0, 8), { size }, () => undefined); // warm-up: libvips' first-use setup
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const report = await decodeImages(scan.files, { size, concurrency }, () => undefined);
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  if (report.failed.length) throw new Error(`bench images failed to decode: ${report.failed[0].rel}: ${report.failed[0].reason}`);
  return {
    images: report.decoded, size, concurrency, seconds, imagesPerSec: report.decoded / seconds,
    cpuMsPerImage: (cpu.user + cpu.system) / 1000 / report.decoded, kibPerImage: bytes / scan.files.length / 1024,
  };
}

async function main() {
  const { values } = parseCli(CLI);
  const n = Number(values.images);
  const size = Number(values.size);
  if (!(Number.isInteger(n) && n >= 3)) throw new UsageError(`--images ${values.images}: expected a whole number >= 3`);
  const levels = (values.concurrency.length ? values.concurrency : ['1', String(os.availableParallelism())]).map(Number);
  if (levels.some((c) => !(Number.isInteger(c) && c >= 1))) throw new UsageError(`--concurrency ${values.concurrency.join(',')}: expected whole numbers >= 1`);
  const root = values.dir ?? (await generate(n));
  try {
    const scan = await scanImageFolder(root);
    const bytes = scan.files.reduce((s, f) => s + fs.statSync(f.path).size, 0);
    console.log(`${scan.files.length} images, ${(bytes / scan.files.length / 1024).toFixed(0)} KiB each on average; ${os.availableParallelism()} cores, ${os.cpus()[0]?.model ?? '?'}; sharp ${sharp.versions.sharp}, libvips ${sharp.versions.vips}`);
    await decodeImages(scan.files.slice(0, 8), { size }, () => undefined); // warm-up: libvips' first-use setup
    for (const concurrency of levels) {
      const t0 = process.hrtime.bigint();
      const cpu0 = process.cpuUsage();
      let checksum = 0;
      const report = await decodeImages(scan.files, { size, concurrency }, (img) => void (checksum += img.pixels[0]));
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      // CPU time per image (all threads) barely depends on what else the machine runs; images/s does.
      const cpuMs = (cpu.user + cpu.system) / 1000 / report.decoded;
      console.log(
        `concurrency ${concurrency}: ${report.decoded} decoded + resized to ${size}x${size} in ${s.toFixed(2)} s = ${(report.decoded / s).toFixed(0)} images/s, ${cpuMs.toFixed(2)} ms CPU per image` +
          (report.failed.length ? ` (${report.failed.length} failed, e.g. ${report.failed[0].rel}: ${report.failed[0].reason})` : ''),
      );
    }
  } finally {
    if (!values.dir) fs.rmSync(root, { recursive: true, force: true });
  }
}

if (require.main === module) runCli(main);
