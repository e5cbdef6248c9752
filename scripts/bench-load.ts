// How long loading all 60,000 CIFAR-10 images from the binary files takes (target: under 2 s).
// Prints the figures and saves them under data/bench/. Run: npm run bench:load
import * as os from 'os';
import { loadCifar10 } from '../lib/data/cifar10';
import { writeJsonAtomic } from '../lib/util/atomic';
import { dataDir } from '../lib/settings/paths';
import { runCli } from '../lib/util/cli';

async function main() {
  const times: number[] = [];
  let n = 0;
  for (let i = 0; i < 3; i++) {
    const t0 = process.hrtime.bigint();
    const data = await loadCifar10();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
    n = data.train.n + data.test.n;
  }
  const best = Math.min(...times);
  console.log(`loaded ${n} images in ${times.map((t) => t.toFixed(2)).join(' / ')} s (best ${best.toFixed(2)} s, ${(n / best / 1000).toFixed(0)}k images/s)`);
  const file = dataDir('bench', `load-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  writeJsonAtomic(file, { what: 'load CIFAR-10 (60,000 images) from binary files', images: n, seconds: times, best, cpu: os.cpus()[0]?.model, node: process.version });
  console.log(`saved ${file}`);
}

runCli(main, 'npm run bench:load');
