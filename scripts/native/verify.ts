// Loading a built native package in a child process (probe.js) and reading what it says: used by the installer to
// verify a build and to confirm a cached one still loads, and by check-gpu.ts.
import { spawn } from 'child_process';
import * as path from 'path';
import { Flavour, gpuFallbackReason, oneLine } from './manifest';

const PROBE_TIMEOUT_MS = 3 * 60_000;

export interface Probe {
  ok: boolean;
  backend: string | null;
  tfVersion: string | null;
  gpu: boolean | null;
  /** Why a GPU build is not using a GPU, in TensorFlow's words. */
  gpuNote: string | null;
  error: string | null;
  /** Everything TensorFlow printed while loading and running one kernel. */
  tfLog: string;
  /** Why the stderr-capture addon did not load (null: it did, or none was given). */
  captureError: string | null;
  /** tfLog came through the stderr-capture addon (else from the child's stderr). */
  captured: boolean;
}

/** Load `packageDir` in a fresh Node (a crash or hang there cannot take the caller down) and report. */
export function probe(packageDir: string, captureAddon: string | null): Promise<Probe> {
  const args = [path.join(__dirname, 'probe.js'), packageDir, ...(captureAddon ? [captureAddon] : [])];
  // TF_CPP_MIN_LOG_LEVEL=0: "Could not find cuda drivers ... GPU will not be used" is an INFO line.
  const env = { ...process.env, TF_CPP_MIN_LOG_LEVEL: '0' };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = stdout.trim().split('\n').pop() ?? '';
      let report: Omit<Probe, 'gpuNote' | 'tfLog' | 'captured'> & { noise?: string | null };
      try {
        report = JSON.parse(last);
      } catch {
        const why = signal === 'SIGKILL' ? `did not load within ${PROBE_TIMEOUT_MS / 1000} s` : `exited with ${signal ?? code}: ${oneLine(stderr) || 'no output'}`;
        report = { ok: false, backend: null, tfVersion: null, gpu: null, error: `loading the package ${why}`, captureError: null };
      }
      const tfLog = `${report.noise ?? ''}${stderr}`;
      const captured = typeof report.noise === 'string';
      delete report.noise;
      resolve({ ...report, tfLog, captured, gpuNote: report.gpu ? null : gpuFallbackReason(tfLog) });
    });
  });
}

/** "TF 2.21.0, CPU" / "TF 2.21.0, GPU" / "TF 2.21.0, GPU build, no GPU used: <TensorFlow's reason>". */
export function describe(p: Probe, flavour: Flavour): string {
  if (flavour === 'cpu') return `TF ${p.tfVersion}, CPU`;
  return p.gpu ? `TF ${p.tfVersion}, GPU` : `TF ${p.tfVersion}, GPU build, no GPU used${p.gpuNote ? `: ${p.gpuNote}` : ''}`;
}
