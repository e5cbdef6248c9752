#!/usr/bin/env node
// `npm run lab`: JupyterLab with the project kernel registered through JUPYTER_PATH (no global Jupyter config is
// touched), serving the project root so notebooks/ and the plotly.js fallback URL (files/node_modules/...) resolve.
// Extra arguments go to `jupyter lab` as they are: `npm run lab -- --no-browser --ip 0.0.0.0 --port 8890`.
'use strict';
const { spawn, spawnSync } = require('child_process');
const path = require('path');

const root = path.resolve(__dirname, '..');
const jupyterPath = [path.join(root, 'jupyter'), process.env.JUPYTER_PATH].filter(Boolean).join(path.delimiter);
const probe = spawnSync('jupyter', ['lab', '--version'], { encoding: 'utf8' });
if (probe.error || probe.status !== 0) {
  console.error('npm run lab: JupyterLab not found (`jupyter lab --version` failed). Install it with `pip install jupyterlab` (JupyterLab 4), then run `npm run lab` again.');
  process.exit(1);
}
const extra = process.argv.slice(2);
const args = ['lab', `--ServerApp.root_dir=${root}`];
// Jupyter refuses to start as root ("Running as root is not recommended. Use --allow-root to bypass."), yet root is
// the usual user in Docker containers and fresh cloud VMs; Jupyter's own Docker images pass --allow-root there too.
const allowRoot = (a) => /^--(ServerApp\.)?allow[-_]root(=|$)/.test(a);
if (process.getuid && process.getuid() === 0 && !extra.some(allowRoot)) {
  console.error('npm run lab: running as root (uid 0, as in a container): passing --allow-root, as the Jupyter Docker images do');
  args.push('--allow-root');
}
args.push(...extra);
console.error(`JupyterLab ${probe.stdout.trim()} with kernel "TypeScript (CIFAR-10 project)" (JUPYTER_PATH=${jupyterPath})`);
// jupyter/config/jupyter_server_config.py: saved notebooks keep plotly figures as JSON only (no PNG snapshots)
const configPath = [path.join(root, 'jupyter', 'config'), process.env.JUPYTER_CONFIG_PATH].filter(Boolean).join(path.delimiter);
const child = spawn('jupyter', args, { stdio: 'inherit', env: { ...process.env, JUPYTER_PATH: jupyterPath, JUPYTER_CONFIG_PATH: configPath } });
// Ctrl-C in a terminal reaches jupyter directly (same process group; it asks for confirmation): just outlive it.
// A SIGINT with no terminal (npm passing on `kill -INT`, `timeout -s INT`, a supervisor, CI cancellation) reaches
// only us, and jupyter's confirmation prompt would wait on a stdin nobody answers: stop the server (SIGTERM is
// jupyter's clean shutdown) and report the interrupt. SIGTERM is passed on in every case.
let stoppedBy;
const stop = (sig) => {
  stoppedBy = stoppedBy ?? sig;
  child.kill('SIGTERM');
};
process.on('SIGINT', () => {
  if (!process.stdin.isTTY) stop('SIGINT');
});
process.on('SIGTERM', () => stop('SIGTERM'));
child.on('exit', (code, signal) => {
  if (stoppedBy) {
    console.error(`npm run lab: interrupted by ${stoppedBy}; JupyterLab stopped`);
    process.exit(stoppedBy === 'SIGINT' ? 130 : 143);
  }
  process.exit(code ?? (signal ? 1 : 0));
});
