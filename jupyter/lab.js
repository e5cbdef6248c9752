#!/usr/bin/env node
// `npm run lab`: JupyterLab with the project kernel registered through JUPYTER_PATH (no global Jupyter config is
// touched), serving the project root so notebooks/ and the plotly.js fallback URL (files/node_modules/...) resolve.
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
const args = ['lab', `--ServerApp.root_dir=${root}`, ...process.argv.slice(2)];
console.error(`JupyterLab ${probe.stdout.trim()} with kernel "TypeScript (CIFAR-10 project)" (JUPYTER_PATH=${jupyterPath})`);
// jupyter/config/jupyter_server_config.py: saved notebooks keep plotly figures as JSON only (no PNG snapshots)
const configPath = [path.join(root, 'jupyter', 'config'), process.env.JUPYTER_CONFIG_PATH].filter(Boolean).join(path.delimiter);
const child = spawn('jupyter', args, { stdio: 'inherit', env: { ...process.env, JUPYTER_PATH: jupyterPath, JUPYTER_CONFIG_PATH: configPath } });
// Ctrl-C already reaches jupyter (same process group; it asks for confirmation): just outlive it. Forward SIGTERM.
process.on('SIGINT', () => {});
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
