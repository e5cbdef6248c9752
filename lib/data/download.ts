// Download an archive with a progress bar, verify its md5 while streaming, and extract it so that the
// target folder appears whole or not at all (extract into a temp dir, then rename into place).
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as http from 'http';
import * as https from 'https';
import * as path from 'path';
import * as tar from 'tar';
import { tempPath } from '../util/atomic';
import { progress } from '../util/progress';

export interface DownloadSpec {
  url: string;
  md5: string;
  /** Where the verified archive is kept (so a failed extraction does not mean downloading again). */
  archive: string;
  /** The folder to create, e.g. data/cifar-10-batches-bin. */
  target: string;
  /** The folder inside the archive that becomes `target`. */
  folderInArchive: string;
  label: string;
}

function md5File(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = crypto.createHash('md5');
    fs.createReadStream(file)
      .on('data', (c) => hash.update(c))
      .on('end', () => resolve(hash.digest('hex')))
      .on('error', reject);
  });
}

function get(url: string, redirects = 5): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    const req = client.get(url, { timeout: 30_000 }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location && redirects > 0) {
        res.resume();
        resolve(get(new URL(res.headers.location, url).toString(), redirects - 1));
      } else if (status !== 200) {
        res.resume();
        reject(new Error(`${url}: HTTP ${status}`));
      } else resolve(res);
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer for 30 s`)));
    req.on('error', (err) => reject(new Error(`${url}: ${err.message}`)));
  });
}

/**
 * Stream `url` into `file` (atomically: a .part file renamed at the end), hashing on the way; a checksum mismatch
 * deletes the partial file. `md5: null` when the caller verifies the result itself (a backbone folder is checked
 * as a whole against its pinned fingerprint).
 */
export async function download(url: string, file: string, md5: string | null, label: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const part = `${file}.part`;
  const res = await get(url);
  const total = Number(res.headers['content-length'] ?? 0);
  const bar = progress(`download ${label}`, total > 0 ? total / 1e6 : 0, 'MB');
  const hash = crypto.createHash('md5');
  try {
    await new Promise<void>((resolve, reject) => {
      const out = fs.createWriteStream(part);
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bar.tick(chunk.length / 1e6);
      });
      res.on('error', reject);
      out.on('error', reject);
      out.on('finish', () => resolve());
      res.pipe(out);
    });
  } catch (err) {
    fs.rmSync(part, { force: true });
    throw err;
  } finally {
    bar.done();
  }
  const got = hash.digest('hex');
  if (md5 !== null && got !== md5) {
    fs.rmSync(part, { force: true });
    throw new Error(`${url}: checksum mismatch, md5 ${got}, expected ${md5} (partial download deleted)`);
  }
  fs.renameSync(part, file);
}

/** Refuse archives with entries that would land outside `dir` (path traversal, absolute paths, links). */
async function checkEntries(archive: string, dir: string): Promise<void> {
  const bad: string[] = [];
  await tar.t({
    file: archive,
    onReadEntry: (entry) => {
      const dest = path.resolve(dir, entry.path);
      const linkOut = entry.linkpath && !path.resolve(path.dirname(dest), entry.linkpath).startsWith(dir + path.sep);
      if (path.isAbsolute(entry.path) || !dest.startsWith(dir + path.sep) || linkOut) bad.push(entry.path);
    },
  });
  if (bad.length) throw new Error(`${archive}: archive entry "${bad[0]}" would land outside the target directory; refusing to extract`);
}

/** Download (unless a verified copy is already there), then extract atomically into `spec.target`. */
export async function downloadAndExtract(spec: DownloadSpec): Promise<void> {
  const have = fs.existsSync(spec.archive) && (await md5File(spec.archive)) === spec.md5;
  if (!have) await download(spec.url, spec.archive, spec.md5, spec.label);
  const parent = path.dirname(spec.target);
  const tmp = tempPath(path.join(parent, '.extract'));
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await checkEntries(spec.archive, tmp);
    await tar.x({ file: spec.archive, cwd: tmp, strict: true });
    const extracted = path.join(tmp, spec.folderInArchive);
    if (!fs.existsSync(extracted)) throw new Error(`${spec.archive}: archive has no folder ${spec.folderInArchive}/`);
    fs.rmSync(spec.target, { recursive: true, force: true });
    fs.renameSync(extracted, spec.target);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
