// Feature-extraction throughput: images/s for each backbone x resolution x worker count, and the achieved GFLOP/s
// (2 x multiply-adds x images/s), with the cache off. Prints a table, writes data/bench/features-<time>.json.
//
//   npm run bench                      # quick: 256 images per cell
//   npm run bench -- --n 2048          # steadier numbers
//   npm run bench -- --backbones mobilenet_v2 --res 160 --workers 1,2
import * as os from 'os';
import * as path from 'path';
import { writeJsonAtomic } from '../lib/atomic';
import { BACKBONES, BackboneName, backboneSpec } from '../lib/backbones';
import { initBackend } from '../lib/backend';
import { loadCifar10 } from '../lib/data/cifar10';
import { extractFeatures, PIXELS, terminateFeaturePool } from '../lib/features';
import { dataDir } from '../lib/paths';
import { rng } from '../lib/random';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : def;
}

async function images(n: number): Promise<{ images: Uint8Array; source: string }> {
  try {
    const c = await loadCifar10({ download: false });
    const out = new Uint8Array(n * PIXELS);
    for (let i = 0; i < n; i++) out.set(c.train.images.subarray((i % c.train.n) * PIXELS, ((i % c.train.n) + 1) * PIXELS), i * PIXELS);
    return { images: out, source: `CIFAR-10 train 0..${n - 1}` };
  } catch {
    // Speed does not depend on content; random pixels keep the bench runnable without the dataset.
    const r = rng(1);
    return { images: Uint8Array.from({ length: n * PIXELS }, () => Math.floor(r() * 256)), source: 'random pixels' };
  }
}

async function main(): Promise<void> {
  const n = Number(arg('n', '256'));
  const cores = os.cpus().length;
  const backbones = arg('backbones', Object.keys(BACKBONES).join(',')).split(',') as BackboneName[];
  const resolutions = arg('res', '96,160,224').split(',').map(Number);
  const workerCounts = [...new Set(arg('workers', `1,${cores}`).split(',').map(Number))];
  const batchSize = Number(arg('batch', '8'));
  backbones.forEach(backboneSpec);
  const backend = await initBackend();
  const data = await images(n);
  const load = () => os.loadavg().map((x) => x.toFixed(2)).join(' ');
  console.log(`bench: ${n} images per cell (${data.source}), batch ${batchSize}, ${cores} cores, load avg ${load()}`);

  const rows: Record<string, unknown>[] = [];
  for (const backbone of backbones) {
    const spec = backboneSpec(backbone);
    for (const resolution of resolutions) {
      let single = 0;
      for (const workers of workerCounts) {
        const opts = { backbone, resolution, workers, cache: false, progress: false, batchSize } as const;
        // Warm-up: worker start, model load and wasm kernel setup for this shape are not throughput.
        await extractFeatures({ images: data.images.subarray(0, Math.max(1, workers) * batchSize * PIXELS), n: Math.max(1, workers) * batchSize }, opts);
        const f = await extractFeatures({ images: data.images, n }, opts);
        const ips = n / f.stats!.seconds;
        if (workers === 1) single = ips;
        const macs = spec.macsAt224 * (resolution / 224) ** 2;
        const row = {
          backbone, resolution, workers: f.stats!.workers, imagesPerSec: +ips.toFixed(1), msPerImage: +(1000 / ips).toFixed(2),
          gflops: +((2 * macs * ips) / 1e9).toFixed(2), speedup: single ? +(ips / single).toFixed(2) : null,
          fullSet60kMinutes: +(60000 / ips / 60).toFixed(1),
          // 1-minute load average after the cell: above ~`workers` means someone else shared the cores.
          load1: +os.loadavg()[0].toFixed(2),
        };
        rows.push(row);
        console.log(
          `${backbone.padEnd(18)} ${String(resolution).padStart(4)}px  workers ${row.workers}  ${row.imagesPerSec.toFixed(1).padStart(7)} img/s  ` +
            `${row.msPerImage.toFixed(2).padStart(6)} ms/img  ${row.gflops.toFixed(2).padStart(6)} GFLOP/s  ` +
            `x${row.speedup ?? '-'} vs 1 worker  60k: ${row.fullSet60kMinutes} min  load ${row.load1}`,
        );
      }
    }
  }
  await terminateFeaturePool();
  const file = path.join(dataDir('bench'), `features-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeJsonAtomic(file, {
    date: new Date().toISOString(), backend: backend.summary, cores, cpu: os.cpus()[0]?.model, imagesPerCell: n, batchSize,
    source: data.source, loadAvgEnd: os.loadavg(), rows,
  });
  console.log(`load avg at end ${load()} (numbers are only meaningful when it was low); wrote ${file}`);
}

main().catch((err) => {
  console.error(`bench failed: ${err.message}`);
  process.exit(1);
});
