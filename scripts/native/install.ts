// The project's native-backend install step, run by `npm install` / `npm ci` (postinstall) and `npm run setup:native`.
//
// Builds @tensorflow/tfjs-node-gpu 4.22.0's addon FROM SOURCE against libtensorflow taken from the PyPI TensorFlow
// 2.21.0 wheel, into <native dir>/tfjs-node-gpu-4.22.0-tf2.21.0-<flavour>/, and describes it in current.json
// (the layout and file formats are in manifest.ts). tfjs-node-gpu's own install script downloads a prebuilt
// libtensorflow from a storage bucket, which fails offline and which npm 10/11 handle differently for dependencies;
// this step only needs the npm and PyPI registries, and runs the same on both npm versions.
//
// Env: TFJS_NATIVE=off|auto|cpu|gpu (default auto: gpu when an NVIDIA driver is visible), TFJS_NATIVE_DIR (default
// data/native; must stay inside the project). Never fails `npm install`: any problem is one line, status.json, exit 0.
import * as fs from 'fs';
import * as path from 'path';
import * as tar from 'tar';
import {
  BuildManifest, CurrentManifest, Flavour, PROJECT_ROOT, TENSORFLOW_VERSION, TFJS_NODE_VERSION,
  nativeRoot, nodeMajor, oneLine, packageDirName, readJson, writeCurrent, writeStatus,
} from './manifest';
import { Tools, checkDiskSpace, findTools, nvidiaEvidence } from './prereqs';
import { InstallError, InstallLog, killActiveChild, run } from './run';
import { Probe, describe, probe } from './verify';
import { extractFromWheel, extraRequirements, wheelMetadata } from './wheel';

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};
const rel = (p: string) => path.relative(PROJECT_ROOT, p) || '.';
const seconds = (t0: number) => `${((Date.now() - t0) / 1000).toFixed(1)} s`;
const mib = (bytes: number) => `${Math.round(bytes / 2 ** 20)} MiB`;

const BUILD_TIMEOUT_MS = 20 * 60_000;
// What the addon compiles against, relative to the wheel's tensorflow/include/ (the C API and what it includes).
const HEADER_PREFIXES = ['tensorflow/c/', 'tensorflow/core/platform/', 'tsl/platform/', 'xla/tsl/c/'];
const LIBRARIES = ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'];

// ---- choosing what to build --------------------------------------------------------------------------------------

type Mode = 'off' | 'auto' | Flavour;

function parseMode(value: string | undefined): Mode {
  const v = (value ?? '').trim().toLowerCase();
  if (v === '' || v === 'auto') return 'auto';
  if (v === 'off' || v === 'cpu' || v === 'gpu') return v;
  throw new InstallError(`TFJS_NATIVE="${value}" is not one of off, auto, cpu, gpu`);
}

function chooseFlavour(mode: Exclude<Mode, 'off'>): { flavour: Flavour; why: string } {
  if (mode !== 'auto') return { flavour: mode, why: `TFJS_NATIVE=${mode}` };
  const evidence = nvidiaEvidence();
  return evidence ? { flavour: 'gpu', why: evidence } : { flavour: 'cpu', why: 'no NVIDIA driver found' };
}

/** The CUDA build of TensorFlow is the `tensorflow` wheel; `tensorflow-cpu` is the same code without CUDA. */
const wheelProject = (flavour: Flavour) => (flavour === 'gpu' ? 'tensorflow' : 'tensorflow-cpu');

// ---- the native dir ------------------------------------------------------------------------------------------------

/** The built package resolves its run-time dependencies upwards; refuse a native dir from which they cannot be found. */
function checkResolvable(root: string): void {
  for (const dep of ['@tensorflow/tfjs', '@mapbox/node-pre-gyp', 'progress', 'google-protobuf']) {
    try {
      require.resolve(`${dep}/package.json`, { paths: [root] });
    } catch {
      throw new InstallError(`${dep} does not resolve from ${root} (keep TFJS_NATIVE_DIR inside the project, and run npm install first)`);
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove what interrupted installs left behind (`*.tmp-<pid>`, `*.old-<pid>`), unless that process still runs. */
function cleanStale(root: string): void {
  if (!fs.existsSync(root)) return;
  for (const name of fs.readdirSync(root)) {
    const m = /\.(?:tmp|old)-(\d+)(?:-|$)/.exec(name);
    if (m && Number(m[1]) !== process.pid && !isAlive(Number(m[1]))) fs.rmSync(path.join(root, name), { recursive: true, force: true });
  }
}

/** Builds of other tfjs-node / TensorFlow versions: replaced, so they only take disk space. */
function pruneOldVersions(root: string): void {
  const keep = new Set((['cpu', 'gpu'] as Flavour[]).map(packageDirName));
  for (const name of fs.readdirSync(root)) {
    if (/^tfjs-node-gpu-[\d.]+-tf[\d.]+-(cpu|gpu)$/.test(name) && !keep.has(name)) fs.rmSync(path.join(root, name), { recursive: true, force: true });
  }
}

/** N-API version node-pre-gyp will look for: the highest the package lists that this Node supports. */
function napiVersion(packageDir: string): number {
  const pkg = readJson<{ binary: { napi_versions: number[] } }>(path.join(packageDir, 'package.json'));
  const supported = (pkg?.binary.napi_versions ?? []).filter((v) => v <= Number(process.versions.napi));
  if (supported.length === 0) throw new InstallError(`Node ${process.version} (N-API ${process.versions.napi}) is older than tfjs-node-gpu supports`);
  return Math.max(...supported);
}

function currentFor(root: string, target: string, build: BuildManifest): CurrentManifest {
  const { flavour, tensorflow, tfjsNode, node, napi, builtAt, captureAddon } = build;
  return {
    dir: path.relative(root, target), flavour, tensorflow, tfjsNode, node, napi, builtAt,
    captureAddon: captureAddon ? path.relative(root, path.join(target, captureAddon)) : null,
  };
}

// ---- the cached path ---------------------------------------------------------------------------------------------

/** The target was built for this flavour, these versions and this Node major, and still loads: nothing to do. */
async function upToDate(root: string, target: string, flavour: Flavour): Promise<boolean> {
  const build = readJson<BuildManifest>(path.join(target, 'native-build.json'));
  if (!build) return false;
  let napi: number;
  try {
    napi = napiVersion(target);
  } catch {
    return false; // a damaged folder: rebuild it
  }
  const same = build.flavour === flavour && build.tensorflow === TENSORFLOW_VERSION && build.tfjsNode === TFJS_NODE_VERSION &&
    nodeMajor(build.node) === nodeMajor(process.version) && build.napi === napi;
  if (!same) return false;
  const capture = build.captureAddon ? path.join(target, build.captureAddon) : null;
  const p = await probe(target, capture);
  if (!p.ok || p.tfVersion !== TENSORFLOW_VERSION || (capture && !p.captured)) return false;
  writeCurrent(root, currentFor(root, target, build));
  writeStatus(root, { ok: true, at: new Date().toISOString(), dir: path.relative(root, target), flavour, tensorflow: TENSORFLOW_VERSION, gpuUsed: !!p.gpu, note: p.gpuNote });
  say(`native backend: up to date (${rel(target)}, ${describe(p, flavour)})`);
  return true;
}

// ---- the build stages --------------------------------------------------------------------------------------------

/** Prints one line per stage: "native backend [2/5] <label> … ok (<detail>, 3.1 s)". */
class Stages {
  private n = 0;
  current = '';

  constructor(private readonly total: number, private readonly log: InstallLog) {}

  async run<T>(label: string, fn: () => Promise<T>, detail: (value: T) => string = () => ''): Promise<T> {
    this.n++;
    this.current = label;
    const t0 = Date.now();
    process.stdout.write(`native backend [${this.n}/${this.total}] ${label} … `);
    this.log.write(`\n==== [${this.n}/${this.total}] ${label}\n`);
    try {
      const value = await fn();
      process.stdout.write(`ok (${[detail(value), seconds(t0)].filter(Boolean).join(', ')})\n`);
      return value;
    } catch (err) {
      process.stdout.write('failed\n');
      throw err;
    }
  }
}

const pipEnv = () => ({ ...process.env, PIP_DISABLE_PIP_VERSION_CHECK: '1', PIP_NO_INPUT: '1' });

/** `npm pack` the package (from npm's cache when it has it) and unpack it as the new package folder. */
async function fetchPackage(log: InstallLog, tools: Tools, tmp: string): Promise<void> {
  const spec = `@tensorflow/tfjs-node-gpu@${TFJS_NODE_VERSION}`;
  const [npm, ...npmArgs] = tools.npm;
  const out = await run(log, 'npm pack', npm, [...npmArgs, 'pack', spec, '--json', '--prefer-offline', '--pack-destination', tmp], { cwd: PROJECT_ROOT, captureStdout: true });
  const tgz = path.join(tmp, (JSON.parse(out) as { filename: string }[])[0].filename);
  await tar.x({ file: tgz, cwd: tmp, strip: 1 }); // the tarball's top folder is package/
  fs.rmSync(tgz);
}

function findWheel(dir: string, project: string, version: string): string | null {
  const prefix = `${project.replace(/-/g, '_')}-${version}-`;
  const name = fs.existsSync(dir) ? fs.readdirSync(dir).find((f) => f.startsWith(prefix) && f.endsWith('.whl')) : undefined;
  return name ? path.join(dir, name) : null;
}

/** The TensorFlow wheel, reused from the wheels folder when a complete one is there, else downloaded by pip. */
async function ensureWheel(log: InstallLog, tools: Tools, wheels: string, flavour: Flavour): Promise<{ file: string; cached: boolean }> {
  const project = wheelProject(flavour);
  const cached = findWheel(wheels, project, TENSORFLOW_VERSION);
  if (cached) {
    try {
      await wheelMetadata(cached); // a truncated download has no readable central directory
      return { file: cached, cached: true };
    } catch {
      log.write(`${cached} is unreadable; downloading it again\n`);
      fs.rmSync(cached, { force: true });
    }
  }
  await run(log, 'pip download', tools.python, ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--progress-bar', 'off', '--dest', wheels, `${project}==${TENSORFLOW_VERSION}`], { env: pipEnv() });
  const file = findWheel(wheels, project, TENSORFLOW_VERSION);
  if (!file) throw new InstallError(`pip download finished but no ${project} ${TENSORFLOW_VERSION} wheel is in ${rel(wheels)}`);
  return { file, cached: false };
}

/**
 * The nvidia-*-cu12 wheels of TensorFlow's "and-cuda" extra, installed into deps/nvidia/<name>/lib: libtensorflow
 * (in deps/lib) has $ORIGIN/../nvidia/<name>/lib in its RUNPATH, so it finds them there without LD_LIBRARY_PATH.
 */
async function installCudaWheels(log: InstallLog, tools: Tools, wheel: string, wheels: string, tmp: string): Promise<string[]> {
  const requirements = extraRequirements(await wheelMetadata(wheel), 'and-cuda');
  if (requirements.length === 0) throw new InstallError(`${path.basename(wheel)} declares no "and-cuda" requirements`);
  const pip = (what: string, args: string[]) => run(log, what, tools.python, ['-m', 'pip', ...args, '--no-deps', '--only-binary=:all:', '--progress-bar', 'off', ...requirements], { env: pipEnv() });
  try {
    // Offline first: an earlier build may have left every one of them in the wheels folder.
    await pip('pip download (cached)', ['download', '--no-index', '--find-links', wheels, '--dest', wheels]);
  } catch {
    await pip('pip download', ['download', '--dest', wheels]);
  }
  const staging = path.join(tmp, '.cuda-wheels'); // pip --target wants a folder of its own
  fs.mkdirSync(path.join(tmp, 'deps'), { recursive: true });
  await pip('pip install', ['install', '--no-index', '--find-links', wheels, '--target', staging, '--no-compile', '--no-warn-script-location']);
  fs.renameSync(path.join(staging, 'nvidia'), path.join(tmp, 'deps', 'nvidia'));
  // "nvidia_cublas_cu12-12.9.1.4.dist-info" -> "nvidia-cublas-cu12==12.9.1.4": what went in, for the manifest.
  const installed = fs.readdirSync(staging)
    .map((d) => /^(.+)-([^-]+)\.dist-info$/.exec(d))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => `${m[1].replace(/_/g, '-')}==${m[2]}`);
  fs.rmSync(staging, { recursive: true, force: true });
  return installed;
}

/** libtensorflow's two libraries into deps/lib (plus the link names -ltensorflow expects), the C API headers into deps/include. */
async function extractLibtensorflow(log: InstallLog, tools: Tools, wheel: string, tmp: string): Promise<number> {
  const deps = path.join(tmp, 'deps');
  await extractFromWheel(wheel, deps, (name) => {
    if (LIBRARIES.some((lib) => name === `tensorflow/${lib}`)) return path.join('lib', path.basename(name));
    const header = name.startsWith('tensorflow/include/') ? name.slice('tensorflow/include/'.length) : null;
    return header && HEADER_PREFIXES.some((p) => header.startsWith(p)) ? path.join('include', header) : null;
  });
  const lib = path.join(deps, 'lib');
  fs.symlinkSync('libtensorflow_cc.so.2', path.join(lib, 'libtensorflow.so'));
  fs.symlinkSync('libtensorflow_framework.so.2', path.join(lib, 'libtensorflow_framework.so'));
  // The wheel's libraries keep their symbol tables (~250 MB); the dynamic symbols the addon links against stay.
  if (tools.strip) {
    for (const l of LIBRARIES) await run(log, 'strip', tools.strip, ['--strip-unneeded', path.join(lib, l)]);
  } else {
    log.write('strip not found: keeping the libraries unstripped\n');
  }
  return LIBRARIES.reduce((sum, l) => sum + fs.statSync(path.join(lib, l)).size, 0);
}

function nodeGypArgs(tools: Tools, extra: string[]): [string, string[]] {
  const [cmd, ...pre] = tools.nodeGyp;
  // --nodedir: headers from the Node install itself, so node-gyp never tries to download them.
  return [cmd, [...pre, 'rebuild', `--nodedir=${tools.nodeDir}`, `--python=${tools.python}`, '--jobs=max', ...extra]];
}

/** tfjs-node-gpu's binding.gyp, as node-pre-gyp would drive it: the addon lands in lib/napi-v<napi>/. */
async function buildAddon(log: InstallLog, tools: Tools, tmp: string, napi: number): Promise<void> {
  const [cmd, args] = nodeGypArgs(tools, ['--module_name=tfjs_binding', `--module_path=${path.join(tmp, 'lib', `napi-v${napi}`)}`, `--napi_build_version=${napi}`]);
  await run(log, 'node-gyp (tfjs_binding)', cmd, args, { cwd: tmp, timeoutMs: BUILD_TIMEOUT_MS });
  // Only needed to compile: the headers and the object files.
  fs.rmSync(path.join(tmp, 'deps', 'include'), { recursive: true, force: true });
  fs.rmSync(path.join(tmp, 'build'), { recursive: true, force: true });
}

/** Our fd-2 redirect addon (scripts/native/stderr-capture). Optional: returns its path in the package, or null. */
async function buildCaptureAddon(log: InstallLog, tools: Tools, tmp: string): Promise<string | null> {
  const src = path.join(__dirname, 'stderr-capture');
  const work = path.join(tmp, '.stderr-capture-build'); // built in a copy: the source tree stays clean
  fs.cpSync(src, work, { recursive: true });
  try {
    const [cmd, args] = nodeGypArgs(tools, []);
    await run(log, 'node-gyp (stderr_capture)', cmd, args, { cwd: work, timeoutMs: BUILD_TIMEOUT_MS });
    const dest = path.join('stderr-capture', 'stderr_capture.node');
    fs.mkdirSync(path.join(tmp, 'stderr-capture'));
    fs.copyFileSync(path.join(work, 'build', 'Release', 'stderr_capture.node'), path.join(tmp, dest));
    return dest;
  } catch (err) {
    log.write(`stderr capture addon not built (not fatal): ${(err as Error).message}\n`);
    return null;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Put the verified build in place. An old folder of the same name is moved aside first (rename cannot replace a non-empty dir). */
function moveIntoPlace(tmp: string, target: string): void {
  if (fs.existsSync(target)) {
    const old = `${target}.old-${process.pid}`;
    fs.renameSync(target, old);
    fs.renameSync(tmp, target); // killed between these two renames: no target, so the next install rebuilds
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(tmp, target);
  }
}

let inProgress: { tmp: string; root: string } | undefined;

async function build(root: string, target: string, flavour: Flavour, tools: Tools, log: InstallLog): Promise<Probe> {
  const wheels = path.join(root, 'wheels');
  const tmp = `${target}.tmp-${process.pid}`;
  inProgress = { tmp, root };
  fs.mkdirSync(tmp, { recursive: true });
  fs.mkdirSync(wheels, { recursive: true });
  const stages = new Stages(flavour === 'gpu' ? 6 : 5, log);
  try {
    await stages.run(`tfjs-node-gpu ${TFJS_NODE_VERSION} package`, () => fetchPackage(log, tools, tmp));
    const napi = napiVersion(tmp);
    const wheel = await stages.run(`${wheelProject(flavour)} ${TENSORFLOW_VERSION} wheel`, () => ensureWheel(log, tools, wheels, flavour),
      (w) => `${mib(fs.statSync(w.file).size)}, ${w.cached ? 'cached' : 'downloaded'}`);
    const cudaWheels = flavour === 'gpu'
      ? await stages.run('CUDA libraries (nvidia-*-cu12 wheels)', () => installCudaWheels(log, tools, wheel.file, wheels, tmp), (w) => `${w.length} wheels`)
      : [];
    await stages.run('libtensorflow from the wheel', () => extractLibtensorflow(log, tools, wheel.file, tmp),
      (bytes) => `${mib(bytes)}${tools.strip ? ' stripped' : ''}`);
    let captureAddon = await stages.run(`addon (node-gyp, N-API ${napi})`, async () => {
      await buildAddon(log, tools, tmp, napi);
      return buildCaptureAddon(log, tools, tmp);
    }, (c) => (c ? 'with stderr capture' : 'stderr capture failed, see log'));
    const result = await stages.run('verify', async () => {
      const p = await probe(tmp, captureAddon && path.join(tmp, captureAddon));
      log.write(`probe: ${JSON.stringify(p)}\n`);
      if (!p.ok) throw new InstallError(`the built package does not load: ${p.error}`);
      if (p.tfVersion !== TENSORFLOW_VERSION) throw new InstallError(`the built package reports TensorFlow ${p.tfVersion}, expected ${TENSORFLOW_VERSION}`);
      if (captureAddon && !p.captured) {
        log.write(`stderr capture addon does not load (not fatal, recorded as null): ${p.captureError}\n`);
        captureAddon = null;
      }
      return p;
    }, (p) => describe(p, flavour));
    const manifest: BuildManifest = {
      flavour, tensorflow: TENSORFLOW_VERSION, tfjsNode: TFJS_NODE_VERSION, node: process.version, napi,
      builtAt: new Date().toISOString(), captureAddon, wheel: path.basename(wheel.file), cudaWheels,
    };
    // Written last: a folder without it (or a *.tmp-* folder) is never taken for a finished build.
    fs.writeFileSync(path.join(tmp, 'native-build.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    moveIntoPlace(tmp, target);
    writeCurrent(root, currentFor(root, target, manifest));
    inProgress = undefined;
    return result;
  } catch (err) {
    // Name the stage; drop the temporary folder's path from compiler messages (it is gone by the time anyone reads them).
    if (err instanceof InstallError) throw new InstallError(`${stages.current}: ${err.message.split(`${tmp}${path.sep}`).join('')}`);
    throw err;
  } finally {
    if (inProgress) fs.rmSync(tmp, { recursive: true, force: true });
    inProgress = undefined;
  }
}

// ---- main ----------------------------------------------------------------------------------------------------------

/** When the build fails, a still-valid current.json (another flavour) keeps working; otherwise it is wasm. */
function fallbackNote(root: string): string {
  const current = readJson<CurrentManifest>(path.join(root, 'current.json'));
  return current && fs.existsSync(path.join(root, current.dir, 'native-build.json')) ? `keeping ${current.dir}` : 'using wasm';
}

function fail(root: string, reason: string, log?: InstallLog): void {
  const where = log ? ` (log: ${rel(log.file)})` : '';
  say(`native backend: ${log ? 'build failed' : 'skipped'} — ${reason}${where}; ${fallbackNote(root)}`);
  try {
    writeStatus(root, { ok: false, reason: `${reason}${where}`, at: new Date().toISOString() });
  } catch {
    // an unwritable native dir: the line above is all we can do
  }
}

/** Ctrl-C or `kill` mid-build: stop the child, remove the half-built folder, say so. SIGKILL leaves it to cleanStale. */
function onInterrupt(signal: NodeJS.Signals): void {
  killActiveChild();
  if (inProgress) {
    fs.rmSync(inProgress.tmp, { recursive: true, force: true });
    writeStatus(inProgress.root, { ok: false, reason: `install interrupted by ${signal} (run \`npm run setup:native\`)`, at: new Date().toISOString() });
  }
  process.stdout.write(`\nnative backend: interrupted by ${signal}; nothing half-built was kept\n`);
  process.exit(130);
}

async function main(): Promise<void> {
  const root = nativeRoot();
  let mode: Mode;
  try {
    mode = parseMode(process.env.TFJS_NATIVE);
  } catch (err) {
    return fail(root, (err as Error).message);
  }
  if (mode === 'off') return say('native backend: skipped (TFJS_NATIVE=off)');
  const t0 = Date.now();
  const { flavour, why } = chooseFlavour(mode);
  const target = path.join(root, packageDirName(flavour));
  let log: InstallLog | undefined;
  try {
    checkResolvable(root);
    fs.mkdirSync(root, { recursive: true });
    cleanStale(root);
    if (await upToDate(root, target, flavour)) return;
    // From here on current.json must not name the folder we are about to replace.
    const current = readJson<CurrentManifest>(path.join(root, 'current.json'));
    if (current && path.resolve(root, current.dir) === target) fs.rmSync(path.join(root, 'current.json'));
    // Everything the build needs, before downloading anything.
    const tools = findTools();
    checkDiskSpace(root, flavour);
    // Until the build ends, status.json says one is under way: a SIGKILLed install leaves this, not a stale "ok".
    const startedAt = new Date().toISOString();
    writeStatus(root, { ok: false, reason: `an install started at ${startedAt} (pid ${process.pid}) is running or was interrupted (run \`npm run setup:native\`)`, at: startedAt });
    log = new InstallLog(path.join(root, 'install.log'));
    log.write(`native backend install, ${new Date().toISOString()}: ${flavour} (${why}), node ${process.version}, tools ${JSON.stringify(tools)}\n`);
    say(`native backend: building tfjs-node-gpu ${TFJS_NODE_VERSION} against TensorFlow ${TENSORFLOW_VERSION}, ${flavour} (${why}); log: ${rel(log.file)}`);
    const p = await build(root, target, flavour, tools, log);
    writeStatus(root, { ok: true, at: new Date().toISOString(), dir: path.relative(root, target), flavour, tensorflow: TENSORFLOW_VERSION, gpuUsed: !!p.gpu, note: p.gpuNote });
    pruneOldVersions(root);
    say(`native backend: ready in ${seconds(t0)} — ${rel(target)} (${describe(p, flavour)})`);
  } catch (err) {
    const reason = err instanceof InstallError ? err.message : `unexpected error: ${oneLine(String((err as Error)?.stack ?? err))}`;
    fail(root, reason, log);
  } finally {
    log?.close();
  }
}

/** Last resort for a throw outside main()'s try (an event handler): still one line, status.json, exit 0. */
function onCrash(err: unknown): void {
  killActiveChild();
  if (inProgress) fs.rmSync(inProgress.tmp, { recursive: true, force: true });
  fail(nativeRoot(), `unexpected error: ${oneLine(String((err as Error)?.stack ?? err))}`);
  process.exit(0);
}

process.on('uncaughtException', onCrash);
process.on('unhandledRejection', onCrash);
process.on('SIGINT', onInterrupt);
process.on('SIGTERM', onInterrupt);
process.on('SIGHUP', onInterrupt);
main().then(() => process.exit(0), onCrash);
