// npm run report [-- executed.ipynb...] [--in DIR] [--out DIR]
// Turns executed notebooks (default out/notebooks/, written by `npm run notebooks`) into self-contained HTML pages
// plus an index in out/report/ — readable offline, this is how results are shared.
import * as fs from 'fs';
import * as path from 'path';
import { DEFAULT_REPORT_IN, DEFAULT_REPORT_OUT, buildReport, executedNotebooks } from '../lib/jupyter/report';

function main(argv: string[]): void {
  let inDir = DEFAULT_REPORT_IN;
  let outDir = DEFAULT_REPORT_OUT;
  const files: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--in' || a === '--out') {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a folder`);
      if (a === '--in') inDir = path.resolve(v);
      else outDir = path.resolve(v);
    } else if (a.startsWith('-')) throw new Error(`unknown option ${a}; usage: npm run report -- [files...] [--in DIR] [--out DIR]`);
    else {
      if (!fs.existsSync(a)) throw new Error(`${a}: no such notebook`);
      files.push(path.resolve(a));
    }
  }
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

try {
  main(process.argv.slice(2));
} catch (err) {
  console.error(`report: ${(err as Error).message}`);
  process.exit(1);
}
