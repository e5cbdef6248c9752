// `npm run regimes`: the regime table — frozen, frozen + flip views, and fine-tuning the top k blocks of
// MobileNetV2 for a few k — each trained and evaluated on the same splits (lib/experiment/experiment.ts compareTrainingRegimes: the experiment's own steps per row, as notebook 05 does),
// printed as Markdown and saved to data/bench/regimes.{md,json}. Takes the same options as `npm start`
// (e.g. --train-limit for a quick look); `--regimes "0,0:plain;0,4:plain,flip"` picks the rows.
import * as path from 'path';
import { writeFileAtomic, writeJsonAtomic } from '../lib/util/atomic';
import { helpText, resolveConfig } from '../lib/settings/config';
import { initRuntimeContext } from '../lib/settings/context';
import { terminateFeaturePool } from '../lib/features/features';
import { dataDir } from '../lib/settings/paths';
import { compareTrainingRegimes, openExperiment } from '../lib/experiment/experiment';
import { regimeTable, regimeTableSpecs, RegimeSpec } from '../lib/experiment/regimes';
import { exitOnInterrupt } from '../lib/util/cancel';

function parseRegimes(s: string, nBackbones: number): RegimeSpec[] {
  return s.split(';').map((part) => {
    const [b, v] = part.split(':');
    const blocks = (b ?? '').split(',').map(Number);
    if (blocks.length !== nBackbones || blocks.some((k) => !Number.isInteger(k) || k < 0) || !v) {
      throw new Error(`--regimes ${JSON.stringify(part)}: expected <blocks per backbone>:<views>, e.g. 0,4:plain,flip`);
    }
    return { blocks, views: v.split(',') };
  });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('npm run regimes -- [--regimes "0,0:plain;0,4:plain,flip"] [options]'));
    return;
  }
  // --regimes is this script's own option; everything else is the experiment's (lib/settings/config.ts).
  let regimesArg: string | undefined;
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--regimes') regimesArg = argv[++i] ?? '';
    else if (argv[i].startsWith('--regimes=')) regimesArg = argv[i].slice('--regimes='.length);
    else rest.push(argv[i]);
  }
  const { config: p, sources } = resolveConfig(rest);
  initRuntimeContext(process.env, p); // the folders and backend (--data-dir, CIFAR10_DIR, ...), once, for lib/
  const regimes = regimesArg === undefined ? regimeTableSpecs(p.backbones) : parseRegimes(regimesArg, p.backbones.length);
  const exp = await openExperiment(p, { sources });
  const { backend, splits } = exp;
  const rows = await compareTrainingRegimes(exp, regimes);
  const table = regimeTable(rows, { train: splits.train.n, val: splits.val.n, test: splits.testExact.n });
  console.log(`\n${table}\n\n${backend.summary}`);
  const out = dataDir('bench');
  writeFileAtomic(path.join(out, 'regimes.md'), `${table}\n\n${backend.summary}; ${new Date().toISOString()}\n`);
  writeJsonAtomic(path.join(out, 'regimes.json'), { date: new Date().toISOString(), backend: backend.summary, config: p, rows });
  console.log(`saved ${path.join(out, 'regimes.md')}`);
  await terminateFeaturePool();
}

// Ctrl-C, SIGTERM (and npm's, through `exec` in package.json): one `interrupted:` line and 130/143.
exitOnInterrupt('npm run regimes');
main().catch((err) => {
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
