// npm run report [-- executed.ipynb...] [--in DIR] [--out DIR]
// Turns executed notebooks (default out/notebooks/, written by `npm run notebooks`) into self-contained HTML pages
// plus an index in out/report/ — readable offline, this is how results are shared.
import * as fs from 'fs';
import * as path from 'path';
import { parseCli, runCli } from '../lib/cli';
import { DEFAULT_REPORT_IN, DEFAULT_REPORT_OUT, buildReport, executedNotebooks } from '../lib/jupyter/report';
import { userPath } from '../lib/paths';

const CLI = {
  usage: 'npm run report -- [executed.ipynb...] [--in DIR] [--out DIR]',
  options: {
    in: { type: 'string', arg: 'dir', help: 'where the executed notebooks are', default: 'out/notebooks' },
    out: { type: 'string', arg: 'dir', help: 'where the HTML goes', default: 'out/report' },
  },
  positionals: true,
} as const;

async function main(): Promise<void> {
  const { values, positionals } = parseCli(CLI);
  const inDir = values.in && values.in !== 'out/notebooks' ? userPath(values.in) : DEFAULT_REPORT_IN;
  const outDir = values.out && values.out !== 'out/report' ? userPath(values.out) : DEFAULT_REPORT_OUT;
  const files = positionals.map((a) => {
    if (!fs.existsSync(userPath(a))) throw new Error(`${a}: no such notebook`);
    return userPath(a);
  });
  const inputs = files.length ? files : executedNotebooks(inDir);
  if (inputs.length === 0) throw new Error(`no executed notebooks in ${path.relative(process.cwd(), inDir) || inDir}; run \`npm run notebooks\` first`);
  const t0 = Date.now();
  const r = buildReport(inputs, outDir);
  for (const p of r.pages) {
    const mb = (fs.statSync(p.file).size / 1e6).toFixed(1);
    console.log(`${path.relative(process.cwd(), p.file)}  ${p.stats.figures} plots, ${p.stats.images} images, ${mb} MB  (${p.status})`);
  }
  console.log(`index: ${path.relative(process.cwd(), r.index)}  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

runCli(main);
