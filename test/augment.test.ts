import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { applyView, flipHorizontal, parseView, randomAugment } from '../lib/data/augment';
import { fakeImages } from './fake-backbone';

const N = 4;
const imgs = fakeImages(N, 3);
const px = (a: Uint8Array, i: number, y: number, x: number, c: number) => a[i * 3072 + (y * 32 + x) * 3 + c];

test('flip mirrors columns and a double flip is the identity', () => {
  const f = flipHorizontal(imgs, N);
  assert.equal(f.length, imgs.length);
  assert.equal(px(f, 2, 5, 0, 1), px(imgs, 2, 5, 31, 1));
  assert.equal(px(f, 3, 31, 7, 2), px(imgs, 3, 31, 24, 2));
  assert.notDeepEqual(f, imgs);
  assert.deepEqual(flipHorizontal(f, N), imgs);
});

test('randomAugment: deterministic per seed, keeps shape and 0..255, seeds differ', () => {
  const opts = { seed: 42, flip: true, rotateDeg: 15, zoom: [0.8, 1.2] as [number, number], translate: 0.1 };
  const a = randomAugment(imgs, N, opts);
  assert.equal(a.length, imgs.length);
  assert.ok(a instanceof Uint8Array); // 0..255 by construction; values were rounded, not wrapped:
  assert.deepEqual(randomAugment(imgs, N, opts), a);
  assert.notDeepEqual(randomAugment(imgs, N, { ...opts, seed: 43 }), a);
  assert.notDeepEqual(a, imgs);
  // A smooth image stays in range and close to its neighbourhood (no uint8 wrap-around at 255 -> 0).
  const white = new Uint8Array(3072).fill(255);
  const w = randomAugment(white, 1, opts);
  assert.ok(w.every((v) => v === 255), 'reflect fill + bilinear of a constant image must stay constant');
});

test('randomAugment with no transforms is the identity', () => {
  assert.deepEqual(randomAugment(imgs, N, { seed: 1, flip: false }), imgs);
});

test('applyView: plain/flip/aug<k>; aug views depend on the image, not its batch position', () => {
  assert.equal(applyView(imgs, N, 'plain'), imgs);
  assert.deepEqual(applyView(imgs, N, 'flip'), flipHorizontal(imgs, N));
  const a0 = applyView(imgs, N, 'aug0');
  assert.notDeepEqual(a0, applyView(imgs, N, 'aug1'));
  const swapped = new Uint8Array(2 * 3072);
  swapped.set(imgs.subarray(3072, 6144), 0);
  swapped.set(imgs.subarray(0, 3072), 3072);
  const s = applyView(swapped, 2, 'aug0');
  assert.deepEqual(s.subarray(0, 3072), a0.subarray(3072, 6144));
  assert.deepEqual(s.subarray(3072), a0.subarray(0, 3072));
  assert.throws(() => parseView('rotate'), /view "rotate"/);
  assert.throws(() => flipHorizontal(imgs, N + 1), /expected n=5/);
});
