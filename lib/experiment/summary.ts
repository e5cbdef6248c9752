// The summary of one experiment, as `npm start` prints it and notebook 05 shows it: the model, where it was saved
// and what it replaced, the accuracy table, per-class scores and confusion on test 0-999, the sweep, timings.
import { formatConfusion, formatEvaluation } from '../evaluate/evaluate';
import { formatTable, percent } from '../util/format';
import { Evaluations } from './pipeline';
import { ExperimentResult } from './experiment';

/** The accuracy table: one row per labelled split, plain and (when measured) with TTA. Notebook 06 prints the same. */
export function accuracyTable(evals: Evaluations, tta: boolean): string {
  return formatTable(
    ['split', 'images', 'accuracy', ...(tta ? ['accuracy + TTA'] : [])],
    evals.all.map((e) => [e.label, String(e.plain.n), percent(e.plain.accuracy), ...(tta ? [e.tta ? percent(e.tta.accuracy) : '-'] : [])]),
  );
}

export function summaryText(r: ExperimentResult): string {
  const { exp, evals, saved } = r;
  const exact = evals.testExact.tta ?? evals.testExact.plain;
  const timings: [string, number][] = [...exp.timings, ['total', (Date.now() - exp.startedAt) / 1000]];
  return [
    '\n================ summary ================',
    exp.backend.summary,
    `model: ${r.model}`,
    `regime: ${r.regime.name} (${r.regime.how}); rates: ${r.rates.how}`,
    `saved as ${saved.id} in ${saved.dir} (end-to-end model vs head on cached features: max |dp| = ${saved.maxDiff.toExponential(2)})`,
    '',
    accuracyTable(evals, exp.settings.tta),
    `\nper class on ${exact.split}:\n${formatEvaluation(exact)}`,
    `\nconfusion matrix (${exact.split}):\n${formatConfusion(exact, exp.splits.classNames)}`,
    ...(r.rates.sweep ? [`\nsweep:\n${r.rates.sweep.table}`] : []),
    ...(r.comparison
      ? [`\ncached views vs end-to-end (${r.comparison.images} training images, ${r.comparison.epochs} epochs):\n` +
          formatTable(['regime', 'val accuracy', 'seconds'], r.comparison.rows.map((x) => [x.regime, percent(x.valAccuracy), x.seconds.toFixed(1)]))]
      : []),
    `\ntimings:\n${formatTable(['step', 'seconds'], timings.map(([k, s]) => [k, s.toFixed(1)]))}`,
  ].join('\n');
}
