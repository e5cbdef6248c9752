// Reading a Python wheel (a zip) with yauzl: it streams each entry, so the GPU wheel's 1.1 GB libtensorflow_cc
// never has to fit in memory (adm-zip would buffer the whole archive and each entry).
import * as fs from 'fs';
import * as path from 'path';
import { pipeline } from 'stream/promises';
import * as yauzl from 'yauzl';

/** Visit every file entry; `onEntry` may stream it with `open()`. Resolves once all entries were visited. */
async function eachFile(wheel: string, onEntry: (name: string, entry: yauzl.Entry, open: () => Promise<NodeJS.ReadableStream>) => Promise<boolean | void>): Promise<void> {
  const zip = await yauzl.openPromise(wheel, { lazyEntries: true, autoClose: false });
  try {
    for await (const entry of zip.eachEntry()) {
      if (entry.fileName.endsWith('/')) continue; // directory entry
      const stop = await onEntry(entry.fileName, entry, () => zip.openReadStreamPromise(entry));
      if (stop) break;
    }
  } finally {
    zip.close();
  }
}

/** The wheel's *.dist-info/METADATA text. */
export async function wheelMetadata(wheel: string): Promise<string> {
  let text: string | undefined;
  await eachFile(wheel, async (name, _entry, open) => {
    if (!/^[^/]+\.dist-info\/METADATA$/.test(name)) return false;
    const chunks: Buffer[] = [];
    for await (const chunk of await open()) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
    return true;
  });
  if (text === undefined) throw new Error(`${path.basename(wheel)} has no METADATA`);
  return text;
}

/** Requirement specs of an extra, e.g. extra "and-cuda" -> ["nvidia-cublas-cu12<13.0,>=12.5.3.2", ...]. */
export function extraRequirements(metadata: string, extra: string): string[] {
  const marker = new RegExp(`extra\\s*==\\s*["']${extra.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["']`);
  return metadata
    .split('\n')
    .filter((l) => l.startsWith('Requires-Dist:') && marker.test(l))
    .map((l) => l.slice('Requires-Dist:'.length).split(';')[0].trim());
}

/**
 * Extract the entries `destination(name)` maps to a path (relative to `destRoot`); others are skipped.
 * Returns the number of files and bytes written.
 */
export async function extractFromWheel(wheel: string, destRoot: string, destination: (name: string) => string | null): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  await eachFile(wheel, async (name, entry, open) => {
    const rel = destination(name);
    if (rel === null) return;
    const dest = path.resolve(destRoot, rel);
    if (!dest.startsWith(path.resolve(destRoot) + path.sep)) throw new Error(`wheel entry escapes the target: ${name}`);
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    // Keep the executable bit wheels record for shared libraries (unix mode in the high 16 bits).
    const mode = (entry.externalFileAttributes >>> 16) & 0o777 || 0o644;
    await pipeline(await open(), fs.createWriteStream(dest, { mode }));
    files++;
    bytes += entry.uncompressedSize;
  });
  return { files, bytes };
}
