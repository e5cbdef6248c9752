// Stopping long work for real. A notebook's Interrupt (SIGINT to the kernel) and Ctrl-C in `npm start` must stop
// feature extraction, training, sweeps and the LR finder between batches — not just return from the cell while the
// work goes on. Each long operation runs inside `interruptible()`: while it runs, SIGINT aborts its signal; the
// operation checks the signal between batches (yielding to the event loop so the signal can arrive), stops its
// workers, keeps what it already finished, and throws an InterruptedError whose message says how far it got.
// Outside such an operation SIGINT keeps its usual meaning (tslab's own handler, or Node's default exit).

/** Thrown by an interrupted operation; the message is the one line a user sees. */
export class InterruptedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InterruptedError';
    // What a notebook shows for a thrown error is its stack: one line, not frames of the loop that stopped.
    this.stack = `${this.name}: ${message}`;
  }
}

export interface Interruptible {
  signal: AbortSignal;
  /** Throw the InterruptedError (with `progress`, e.g. "after 3,104 / 9,000 images") if an interrupt came. */
  check(progress?: () => string): void;
  /** Stop listening (call in `finally`). */
  release(): void;
}

/**
 * Start an interruptible operation. `outer` (a caller's AbortSignal) aborts it too. SIGINT is listened to only
 * while at least one operation runs.
 */
export function interruptible(what: string, outer?: AbortSignal): Interruptible {
  const controller = new AbortController();
  const onSigint = () => controller.abort();
  // The kernel launcher leaves an interrupt to us while an operation runs (see jupyter/kernels/*/launch.js):
  // the cell then ends with our one line, after the work has really stopped.
  active.count++;
  const onOuter = () => controller.abort();
  process.on('SIGINT', onSigint);
  outer?.addEventListener('abort', onOuter, { once: true });
  if (outer?.aborted) controller.abort();
  return {
    signal: controller.signal,
    check(progress) {
      if (controller.signal.aborted) throw new InterruptedError(`${what} interrupted${progress ? ` ${progress()}` : ''}`);
    },
    release() {
      process.off('SIGINT', onSigint);
      outer?.removeEventListener('abort', onOuter);
      active.count = Math.max(0, active.count - 1);
    },
  };
}

/** Interruptible operations running in this process, shared through globalThis with the kernel launcher. */
const active: { count: number } = ((globalThis as Record<string, unknown>).__cifar10ActiveOperations ??= { count: 0 }) as { count: number };

/** Let the event loop run (timers, signals, kernel messages) before the next batch: microtask chains never do. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * For a command-line script (not the notebook kernel, whose launcher owns SIGINT): make SIGINT and SIGTERM end the
 * run with one `interrupted:` line and the status a shell gives a command the signal killed (130, 143), so a
 * supervisor, CI cancellation or `timeout -s INT` never sees a run that was stopped report success, nor one that
 * finished report failure. While an interruptible operation runs, the first SIGINT is left to it: it stops between
 * batches and the script reports it (InterruptedError, 130); a second signal, or one outside any operation, exits at
 * once. npm passes signals to the script only when its package.json entry `exec`s node (otherwise `sh -c` holds
 * them and node never hears).
 */
export function exitOnInterrupt(what: string, write: (line: string) => void = (l) => console.error(l)): void {
  let deferred = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (sig === 'SIGINT' && active.count > 0 && !deferred) {
      deferred = true;
      return;
    }
    write(`interrupted: ${what} stopped by ${sig} before it finished`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}
