// Atomic file writes: a reader never sees a half-written file, and a crash leaves the old file intact.
import * as fs from 'fs';
import * as path from 'path';

let counter = 0;

/** A temp name beside `file` (same filesystem, so rename is atomic). */
export function tempPath(file: string): string {
  return `${file}.tmp-${process.pid}-${Date.now()}-${counter++}`;
}

/** Write `data` to `file` via a temp file + rename; creates the parent folder. */
export function writeFileAtomic(file: string, data: string | NodeJS.ArrayBufferView): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tempPath(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/** JSON variant, pretty-printed so runs and metadata stay readable in a diff. */
export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}
