#!/usr/bin/env node
// Kernel launcher for the project kernelspec (used by JupyterLab and by `npm run notebooks`).
// Jupyter starts kernels in the notebook's folder, but tslab resolves imports against its working directory and
// rejects files outside it ("not under rootDir"), so notebooks/ could not import ./lib/... . We therefore move to
// the project root first and start the tslab installed in this project's node_modules in this same process
// (no extra child process: the pid Jupyter or the runner holds is the kernel, so killing it leaves nothing behind).
'use strict';
const path = require('path');
const fs = require('fs');

const connectionFile = process.argv[2];
if (!connectionFile) {
  console.error('launch.js: missing argument: path of the Jupyter connection file');
  process.exit(2);
}
const configPath = path.resolve(connectionFile); // resolve before chdir: Jupyter may pass a relative path
const root = path.resolve(__dirname, '..', '..', '..'); // <root>/jupyter/kernels/<name>/launch.js
const tslabMain = path.join(root, 'node_modules', 'tslab', 'dist', 'main.js');
if (!fs.existsSync(tslabMain)) {
  console.error(`launch.js: ${tslabMain} not found; run \`npm ci\` in ${root} first`);
  process.exit(2);
}
process.chdir(root);
// Like ipykernel's parent poller: if whoever started us dies without shutting us down (runner killed with
// SIGKILL, Jupyter server crash), we get re-parented; exit instead of lingering as an orphan.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) process.exit(1);
}, 1000).unref();
// Runtime errors at the cell's own line and column, without tslab's and Node's frames (cell-errors.js). The
// TypeScript hook must be in place before tslab's converter is loaded.
const tslabDir = path.join(root, 'node_modules', 'tslab');
const { CellErrors } = require('./cell-errors');
const cellErrors = new CellErrors({ root, internal: [tslabDir, __dirname] });
cellErrors.hookTypeScript(require.resolve('@tslab/typescript-for-tslab', { paths: [path.join(tslabDir, 'dist')] }));
cellErrors.hookVm(require('vm'));
// Room for the cell's frames below a library's own (e.g. tfjs: 10 frames by default would often end before the cell).
Error.stackTraceLimit = Math.max(Error.stackTraceLimit, 40);
// Interrupt: tslab answers SIGINT by abandoning the running cell ("Interrupted asynchronously") while its awaited
// work goes on. While a project operation runs (lib/util/cancel.ts counts them on globalThis), the operation itself
// stops on that SIGINT and ends the cell with one line; tslab's own interrupt is kept for everything else (it is
// still what breaks a busy synchronous loop).
const executorModule = require(path.join(tslabDir, 'dist', 'executor.js'));
const createExecutor = executorModule.createExecutor;
executorModule.createExecutor = function (rootDir, convs, console, ...rest) {
  const executor = cellErrors.hookExecutor(createExecutor.call(this, rootDir, cellErrors.hookConverters(convs), cellErrors.hookConsole(console), ...rest));
  const interrupt = executor.interrupt;
  executor.interrupt = () => {
    const ops = globalThis.__cifar10ActiveOperations;
    if (ops && ops.count > 0) return;
    interrupt();
  };
  return executor;
};
// startKernel is tslab's stable entry point (it is what a global tslab calls into a local one).
require(tslabMain).startKernel({ configPath, enableFindLocal: false, jsKernel: false });
