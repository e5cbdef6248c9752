// Loads a built tfjs-node-gpu package in a fresh process and prints one JSON line on stdout saying what it runs on.
// Run by the installer (plain JS so it starts without ts-node):  node probe.js <package dir> [<stderr-capture addon>]
//
// TensorFlow writes its load-time notices straight to fd 2. With the capture addon they are redirected to a file,
// exactly as lib/engine/native.ts does at run time, and returned in `noise` — which also proves the addon works.
// Without it, the caller reads them from this process's stderr.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

const [packageDir, capturePath] = process.argv.slice(2);
const report = { ok: false, backend: null, tfVersion: null, gpu: null, noise: null, captureError: null, error: null };

let capture = null;
if (capturePath) {
  try {
    capture = require(path.resolve(capturePath));
  } catch (err) {
    report.captureError = String(err && err.message).split('\n')[0];
  }
}

const noiseFile = path.join(os.tmpdir(), `tfjs-native-probe-${process.pid}.log`);
let fd = null;
let saved = null;
if (capture) {
  fd = fs.openSync(noiseFile, 'w+');
  saved = capture.redirect(fd);
}
try {
  const tf = require(path.resolve(packageDir));
  report.backend = tf.getBackend();
  // One real kernel, so a library that loads but cannot run (or picks a broken device) fails here, not later.
  const product = tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[1, 0], [0, 1]])).dataSync();
  if (Array.from(product).join() !== '1,2,3,4') throw new Error(`matMul gave ${Array.from(product)}`);
  const binding = tf.backend().binding;
  report.tfVersion = binding ? binding.TF_Version : null;
  report.gpu = binding && typeof binding.isUsingGpuDevice === 'function' ? Boolean(binding.isUsingGpuDevice()) : null;
  report.ok = report.backend === 'tensorflow';
  if (!report.ok) report.error = `tfjs picked the "${report.backend}" backend, not "tensorflow"`;
} catch (err) {
  report.error = String(err && err.message).split('\n')[0];
} finally {
  if (capture) {
    capture.restore(saved);
    fs.closeSync(fd);
    report.noise = fs.readFileSync(noiseFile, 'utf8');
    fs.rmSync(noiseFile, { force: true });
  }
}
process.stdout.write(`${JSON.stringify(report)}\n`);
