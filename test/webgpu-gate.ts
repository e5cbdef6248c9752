// One rule for every webgpu test: when webgpu cannot start here, skip and say why — except in CI (CI=true), where
// SwiftShader comes with the chromium package .ci/run installs, so not starting is a failure.
import assert from 'node:assert/strict';

export const IN_CI = process.env.CI === 'true';

/** True when the test may run; otherwise skips `t` (or fails, in CI) with `why`. */
export function webgpuGate(t: { skip(msg: string): void }, why: string | null): boolean {
  if (!why) return true;
  if (IN_CI) assert.fail(`${why} (CI=true: SwiftShader comes with Debian's chromium package, which .ci/run installs)`);
  t.skip(`SKIPPED, NOT RUN: ${why}`);
  return false;
}
