// Progress for long work, wherever it runs: a cli-progress bar (rate, ETA) in a terminal, occasional plain lines
// when output is not a TTY (CI logs stay short), a live in-place HTML line in a tslab notebook.
import * as cliProgress from 'cli-progress';
import { escapeHtml } from './format';
import { notebookDisplay } from '../jupyter/notebook';

export interface ProgressSink {
  tick(n: number, info?: string): void;
  done(summary?: string): void;
}

/** A sink that shows nothing (progress: false). */
export const silentProgress: ProgressSink = { tick: () => {}, done: () => {} };

function fmtTime(s: number): string {
  if (!isFinite(s)) return '?';
  s = Math.round(s);
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A rate the way people read it: "331.2 img/s", but "43.8 s/epoch" when each unit takes longer than a second. */
export function fmtRate(rate: number, unit: string): string {
  if (!(rate > 0) || !isFinite(rate)) return `? ${unit}/s`;
  return rate >= 1 ? `${rate.toFixed(1)} ${unit}/s` : `${(1 / rate).toFixed(1)} s/${unit}`;
}

export function progress(label: string, total: number, unit = 'img'): ProgressSink {
  const start = Date.now();
  let count = 0;
  let lastInfo = '';
  const stats = () => {
    const secs = (Date.now() - start) / 1000;
    const rate = count / Math.max(secs, 1e-3);
    return { secs, rate, eta: (total - count) / rate };
  };
  const line = (final = false) => {
    const { secs, rate, eta } = stats();
    const pct = total > 0 ? Math.floor((100 * count) / total) : 100;
    const tail = final ? `in ${fmtTime(secs)}` : `ETA ${fmtTime(eta)}`;
    return `${label}: ${count}/${total} ${unit} (${pct}%) ${fmtRate(rate, unit)} ${tail}${lastInfo ? ` ${lastInfo}` : ''}`;
  };

  const nb = notebookDisplay();
  if (nb) {
    const d = nb.newDisplay();
    let last = 0;
    const render = (text: string, pct: number) =>
      d.html(`<div style="font-family:monospace"><progress value="${pct}" max="100" style="width:20em"></progress> ${escapeHtml(text)}</div>`);
    render(line(), 0);
    return {
      tick(n, info) {
        count += n;
        if (info !== undefined) lastInfo = info;
        const now = Date.now();
        if (now - last >= 250) {
          last = now;
          render(line(), total ? (100 * count) / total : 100);
        }
      },
      done(summary) {
        // The bar shows what was done: an interrupted or failed run stops part-way ("67% — interrupted").
        render(summary ? `${line(true)} — ${summary}` : line(true), total ? Math.min(100, (100 * count) / total) : 100);
      },
    };
  }

  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: `${label} [{bar}] {value}/{total} ${unit} {percentage}% | {rate} | ETA {eta_formatted} {info}`, hideCursor: true, etaBuffer: 50, fps: 4 },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, { rate: fmtRate(0, unit), info: '' });
    return {
      tick(n, info) {
        count += n;
        if (info !== undefined) lastInfo = info;
        bar.update(count, { rate: fmtRate(stats().rate, unit), info: lastInfo });
      },
      done(summary) {
        bar.update(count, { rate: fmtRate(stats().rate, unit), info: lastInfo });
        bar.stop();
        process.stderr.write(`${line(true)}${summary ? ` — ${summary}` : ''}\n`);
      },
    };
  }

  // Plain output: at most one line every 10% or 30 s, none for work shorter than 5 s.
  let lastPrint = start;
  let lastPct = 0;
  return {
    tick(n, info) {
      count += n;
      if (info !== undefined) lastInfo = info;
      const pct = total ? Math.floor((10 * count) / total) : 10;
      const now = Date.now();
      if (count < total && now - start > 5_000 && (pct > lastPct || now - lastPrint > 30_000)) {
        lastPct = pct;
        lastPrint = now;
        console.log(line());
      }
    },
    done(summary) {
      console.log(`${line(true)}${summary ? ` — ${summary}` : ''}`);
    },
  };
}
