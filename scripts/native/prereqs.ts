// What the native build needs from the machine, found (or reported missing, with how to get it) before any download.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Flavour } from './manifest';
import { InstallError } from './run';

const RETRY = 'then `npm run setup:native`';

export interface Tools {
  /** A Python 3 with pip: downloads the wheels, and runs gyp inside node-gyp. */
  python: string;
  /** Command prefix for npm (`npm pack`), e.g. [node, npm-cli.js]. */
  npm: string[];
  /** Command prefix for node-gyp, e.g. [node, node-gyp.js]. */
  nodeGyp: string[];
  /** Node's install prefix: its headers are in <nodeDir>/include/node (so node-gyp needs no download). */
  nodeDir: string;
  /** `strip`, to drop ~250 MB of symbols from libtensorflow; optional. */
  strip: string | null;
}

/** An executable named `cmd` on PATH (or `cmd` itself when it is a path), else null. */
export function which(cmd: string, envPath = process.env.PATH ?? ''): string | null {
  const candidates = cmd.includes('/') ? [cmd] : envPath.split(path.delimiter).filter(Boolean).map((d) => path.join(d, cmd));
  for (const file of candidates) {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      if (fs.statSync(file).isFile()) return file;
    } catch {
      // not here
    }
  }
  return null;
}

function succeeds(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 30_000 });
  return r.status === 0;
}

function findPython(): string {
  const pythons = ['python3', 'python'].map((p) => which(p)).filter((p): p is string => p !== null);
  const python = pythons.find((p) => succeeds(p, ['-c', 'import sys; sys.exit(0 if sys.version_info[0] == 3 else 1)']));
  if (!python) throw new InstallError(`python3 not found on PATH (install Python 3 with pip, ${RETRY})`);
  if (!succeeds(python, ['-m', 'pip', '--version'])) {
    throw new InstallError(`pip is not available for ${python} (\`${python} -m ensurepip --upgrade\` or apt-get install python3-pip, ${RETRY})`);
  }
  return python;
}

function checkToolchain(): void {
  // node-gyp's Makefiles use $CXX (make's default: g++) for the addon and $CC (default: cc) for the stderr helper.
  const cxx = process.env.CXX ? process.env.CXX.split(' ')[0] : 'g++';
  const missing = [which(cxx) ? null : cxx, which('make') ? null : 'make'].filter(Boolean);
  if (missing.length) {
    throw new InstallError(`C++ toolchain not found: ${missing.join(' and ')} missing on PATH (apt-get install build-essential, ${RETRY})`);
  }
}

function findNodeDir(): string {
  // Official and distro builds put headers beside the binary: <prefix>/bin/node -> <prefix>/include/node.
  const prefix = path.dirname(path.dirname(fs.realpathSync(process.execPath)));
  const headers = path.join(prefix, 'include', 'node');
  if (!fs.existsSync(path.join(headers, 'node_api.h')) || !fs.existsSync(path.join(headers, 'common.gypi'))) {
    throw new InstallError(`Node.js headers not found in ${headers} (use an official Node build, or apt-get install libnode-dev, ${RETRY})`);
  }
  return prefix;
}

/** npm's own CLI script: npm_execpath while npm runs us (npm 10 and 11), else the `npm` on PATH. */
function npmCli(): string | null {
  const fromEnv = process.env.npm_execpath;
  if (fromEnv && /npm-cli\.js$/.test(fromEnv) && fs.existsSync(fromEnv)) return fromEnv;
  const npm = which('npm');
  if (!npm) return null;
  const cli = path.join(path.dirname(fs.realpathSync(npm)), 'npm-cli.js');
  return fs.existsSync(cli) ? cli : npm;
}

function findNodeGyp(cli: string | null): string[] {
  // npm exports its bundled node-gyp to lifecycle scripts as npm_config_node_gyp; outside npm, look beside npm.
  const candidates = [
    process.env.npm_config_node_gyp,
    cli && path.join(path.dirname(cli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ];
  const script = candidates.find((c): c is string => !!c && fs.existsSync(c));
  if (script) return [process.execPath, script];
  const global = which('node-gyp');
  if (global) return [global];
  throw new InstallError(`node-gyp not found (it ships with npm; run \`npm run setup:native\` through npm, or npm install -g node-gyp)`);
}

/** Every tool the build needs, or an InstallError naming the first one missing and how to get it. */
export function findTools(): Tools {
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new InstallError(`only linux-x64 is supported by the native installer (this is ${process.platform}-${process.arch})`);
  }
  const python = findPython();
  checkToolchain();
  const nodeDir = findNodeDir();
  const cli = npmCli();
  if (!cli) throw new InstallError(`npm not found on PATH (needed for \`npm pack\`; it comes with Node.js, ${RETRY})`);
  const npm = cli.endsWith('.js') ? [process.execPath, cli] : [cli];
  return { python, npm, nodeGyp: findNodeGyp(cli), nodeDir, strip: which('strip') };
}

/** Free bytes on the filesystem that will hold `dir` (its nearest existing ancestor). */
function freeBytes(dir: string): number {
  let d = dir;
  while (!fs.existsSync(d)) d = path.dirname(d);
  const s = fs.statfsSync(d);
  return s.bavail * s.bsize;
}

// Peak use while building: wheel + extracted libraries before strip (+ CUDA wheels, downloaded and installed).
const NEEDED_GB: Record<Flavour, number> = { cpu: 2, gpu: 12 };

export function checkDiskSpace(dir: string, flavour: Flavour): void {
  const free = freeBytes(dir) / 2 ** 30;
  if (free < NEEDED_GB[flavour]) {
    throw new InstallError(`not enough disk space in ${dir}: ${free.toFixed(1)} GiB free, the ${flavour} build needs ~${NEEDED_GB[flavour]} GiB (free some space, ${RETRY})`);
  }
}

/** Why we think an NVIDIA GPU is usable here, or null. */
export function nvidiaEvidence(): string | null {
  if (fs.existsSync('/proc/driver/nvidia/version')) return 'NVIDIA driver loaded (/proc/driver/nvidia/version)';
  if (which('nvidia-smi')) return 'nvidia-smi on PATH';
  for (const ldconfig of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const r = spawnSync(ldconfig, ['-p'], { encoding: 'utf8', timeout: 10_000 });
    if (r.status === 0) return /\blibcuda\.so\.1\b/.test(r.stdout) ? 'libcuda.so.1 in the linker cache' : null;
  }
  return null;
}
