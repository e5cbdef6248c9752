// Exercises the GPU flavour of the native backend as far as this machine allows. On a CPU-only machine that is
// everything except the GPU itself: the CUDA build of TensorFlow and its nvidia-*-cu12 wheels are downloaded and
// wired up, the addon is built and loaded, the CUDA libraries are dlopen()ed, and TensorFlow says in its own words
// why it falls back to the CPU.
//
// Run: npm run check:native-gpu   (first run downloads ~3-4 GB). It builds into data/native-gpu-check (or
// TFJS_NATIVE_DIR) so the main install in data/native stays current. Exit 0 when the GPU build loads and runs.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { BuildManifest, CurrentManifest, PROJECT_ROOT, Status, nativeRoot, readJson, tfMessages } from './manifest';
import { which } from './prereqs';
import { describe, probe } from './verify';

const root = nativeRoot({ TFJS_NATIVE_DIR: process.env.TFJS_NATIVE_DIR || path.join('data', 'native-gpu-check') });
const rel = (p: string) => path.relative(PROJECT_ROOT, p) || '.';
const size = (bytes: number) => (bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : `${Math.round(bytes / 2 ** 20)} MiB`);

function dirBytes(p: string): number {
  const st = fs.lstatSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((sum, name) => sum + dirBytes(path.join(p, name)), 0);
}

/** The real installer, forced to the GPU flavour, printing its usual stage lines. */
function runInstaller(): void {
  const install = path.join(__dirname, 'install.ts');
  spawnSync(process.execPath, ['--require', 'ts-node/register/transpile-only', install], {
    cwd: PROJECT_ROOT,
    stdio: 'inherit',
    env: { ...process.env, TFJS_NATIVE: 'gpu', TFJS_NATIVE_DIR: root },
  });
}

/** "nvidia-cuda-runtime-cu12==12.9.79" -> ["cuda_runtime", "12.9.79"]: the wheel's folder under nvidia/. */
function wheelDir(spec: string): [string, string] {
  const [name, version] = spec.split('==');
  return [name.replace(/^nvidia-/, '').replace(/-cu\d+$/, '').replace(/-/g, '_'), version];
}

function sharedLibs(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => /^lib.+\.so(\.\d+)*$/.test(f)).sort() : [];
}

/** The $ORIGIN/../nvidia/<name>/lib entries of a library's RUNPATH, and whether each exists. */
function nvidiaRunpath(lib: string): { entry: string; exists: boolean }[] | null {
  const readelf = which('readelf');
  if (!readelf) return null;
  const out = spawnSync(readelf, ['-d', lib], { encoding: 'utf8' }).stdout ?? '';
  const runpath = /\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*)\]/.exec(out)?.[1] ?? '';
  const entries = [...new Set(runpath.split(':').filter((e) => /^\$ORIGIN\/\.\.\/nvidia\//.test(e)))];
  return entries.map((entry) => ({ entry, exists: fs.existsSync(entry.replace('$ORIGIN', path.dirname(lib))) }));
}

/** dlopen() each library in a child process. A library that is not a Node addon but loads fine fails with
 *  "did not self-register", so that counts as loaded; anything else (a missing dependency) is the error. */
function dlopenAll(files: string[]): { file: string; error: string | null }[] {
  const script = `
    const out = [];
    for (const file of JSON.parse(process.argv[1])) {
      try { process.dlopen({ exports: {} }, file); out.push({ file, error: null }); }
      catch (e) { out.push({ file, error: /self-register/.test(e.message) ? null : e.message.split('\\n')[0] }); }
    }
    console.log(JSON.stringify(out));`;
  const r = spawnSync(process.execPath, ['-e', script, JSON.stringify(files)], { encoding: 'utf8', maxBuffer: 16 << 20 });
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]');
  } catch {
    return files.map((file) => ({ file, error: `dlopen child failed: ${r.stderr.split('\n')[0]}` }));
  }
}

async function main(): Promise<number> {
  console.log(`== installer (TFJS_NATIVE=gpu TFJS_NATIVE_DIR=${rel(root)})`);
  runInstaller();

  const current = readJson<CurrentManifest>(path.join(root, 'current.json'));
  if (!current || current.flavour !== 'gpu') {
    const status = readJson<Status>(path.join(root, 'status.json'));
    console.log(`\nno verified GPU build in ${rel(root)}: ${status && !status.ok ? status.reason : 'see the lines above'}`);
    return 1;
  }
  const pkg = path.join(root, current.dir);
  const build = readJson<BuildManifest>(path.join(pkg, 'native-build.json'))!;
  const lib = path.join(pkg, 'deps', 'lib');
  const p = await probe(pkg, current.captureAddon && path.join(root, current.captureAddon));

  console.log('\n== library');
  console.log(`libtensorflow ${p.tfVersion} (binding.TF_Version), tfjs backend "${p.backend}", from ${build.wheel}`);
  console.log(`tfjs-node-gpu ${build.tfjsNode}, N-API ${build.napi}, built ${build.builtAt} with Node ${build.node}; ${rel(pkg)} is ${size(dirBytes(pkg))}`);

  const nvidia = path.join(pkg, 'deps', 'nvidia');
  console.log(`\n== CUDA wheels in ${rel(nvidia)} (${build.cudaWheels.length} wheels, ${size(dirBytes(nvidia))})`);
  const allLibs: string[] = [];
  for (const spec of build.cudaWheels) {
    const [dir, version] = wheelDir(spec);
    const libs = sharedLibs(path.join(nvidia, dir, 'lib'));
    allLibs.push(...libs.map((l) => path.join(nvidia, dir, 'lib', l)));
    const found = fs.existsSync(path.join(nvidia, dir));
    const contents = libs.join(' ') || (found ? `(no lib/; ${fs.readdirSync(path.join(nvidia, dir)).filter((f) => !f.startsWith('__')).join(' ')})` : '');
    console.log(`  ${dir.padEnd(13)} ${version.padEnd(12)} ${found ? size(dirBytes(path.join(nvidia, dir))).padStart(9) : 'MISSING'.padStart(9)}  ${contents}`);
  }
  const wheelDirs = new Set(build.cudaWheels.map((w) => wheelDir(w)[0]));

  console.log('\n== libtensorflow RUNPATH -> deps/nvidia');
  for (const l of ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2']) {
    const entries = nvidiaRunpath(path.join(lib, l));
    if (!entries) {
      console.log(`  ${l}: readelf not found, not checked`);
      continue;
    }
    // RUNPATH also names optional libraries (nvshmem, for multi-GPU) that the and-cuda extra does not install.
    const missing = entries.filter((e) => !e.exists).map((e) => {
      const dir = e.entry.split('/')[2];
      return `${e.entry.replace('$ORIGIN/../', '')}${wheelDirs.has(dir) ? '' : ' (not in the and-cuda extra)'}`;
    });
    console.log(`  ${l}: ${entries.length} nvidia entries, ${entries.length - missing.length} present${missing.length ? `; missing: ${missing.join(', ')}` : ''}`);
  }

  const loaded = dlopenAll(allLibs);
  const failed = loaded.filter((l) => l.error);
  console.log(`\n== dlopen of the CUDA libraries: ${loaded.length - failed.length} of ${loaded.length} load`);
  for (const f of failed) {
    const driver = /libcuda\.so\.1/.test(f.error!) ? ' (the NVIDIA driver\'s own library: expected without a driver)' : '';
    console.log(`  ${path.relative(nvidia, f.file)}: ${f.error}${driver}`);
  }

  console.log('\n== GPU');
  // cudart_stub prints "Could not find cuda drivers" when it cannot dlopen libcudart, i.e. the wheels are not wired up.
  const cudart = !/Could not find cuda drivers/.test(p.tfLog);
  console.log(`CUDA runtime (libcudart.so.12) found by TensorFlow: ${cudart ? 'yes' : 'no (cudart_stub: Could not find cuda drivers)'}`);
  console.log(`used: ${p.gpu ? 'yes' : 'no'}${p.ok ? '' : ` (package did not load: ${p.error})`}`);
  if (!p.gpu) console.log(`fallback reason: ${p.gpuNote ?? 'TensorFlow did not say'}`);
  console.log(`summary: ${describe(p, 'gpu')}`);
  console.log(`\n== TensorFlow's own lines while loading (${p.captured ? 'captured through the stderr-capture addon' : 'from stderr'})`);
  for (const m of tfMessages(p.tfLog)) console.log(`  ${m}`);
  return p.ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`check-gpu: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
