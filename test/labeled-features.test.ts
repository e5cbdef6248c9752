// The feature table's helpers: checks that name what is wrong, row subsets, column-wise concatenation, column statistics.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { checkData, columnStats, concatFeatures, LabeledFeatures, subsetFeatures } from '../lib/features/labeled-features';

const table = (): LabeledFeatures => ({
  views: [Float32Array.from([1, 2, 3, 4, 5, 6]), Float32Array.from([10, 20, 30, 40, 50, 60])],
  labels: Uint8Array.from([0, 1, 2]),
  n: 3,
  dim: 2,
});

test('checkData names what is wrong', () => {
  checkData(table(), 'x');
  assert.throws(() => checkData({ ...table(), views: [] }, 'train'), /^Error: train: no feature views$/);
  assert.throws(() => checkData({ ...table(), dim: 3 }, 'train'), /view 0 has 6 values, expected n=3 x dim=3/);
  assert.throws(() => checkData({ ...table(), labels: Uint8Array.from([0, 1]) }, 'val'), /val: 2 labels for 3 feature rows/);
  assert.throws(() => checkData({ ...table(), labels: Uint8Array.from([0, 10, 1]) }, 'val'), /label 10 at row 1 is not a class 0..9/);
});

test('subsetFeatures takes the same rows of every view, in the given order', () => {
  const s = subsetFeatures(table(), [2, 0, 2]);
  assert.equal(s.n, 3);
  assert.deepEqual(Array.from(s.views[0]), [5, 6, 1, 2, 5, 6]);
  assert.deepEqual(Array.from(s.views[1]), [50, 60, 10, 20, 50, 60]);
  assert.deepEqual(Array.from(s.labels), [2, 0, 2]);
  assert.throws(() => subsetFeatures(table(), [3]), /row 3 is outside 0..2/);
});

test('concatFeatures joins per-backbone features row by row', () => {
  const a = { data: Float32Array.from([1, 2, 3, 4]), n: 2, dim: 2 };
  const b = { data: Float32Array.from([9, 8]), n: 2, dim: 1 };
  assert.deepEqual(concatFeatures([a, b]), { data: Float32Array.from([1, 2, 9, 3, 4, 8]), n: 2, dim: 3 });
  assert.equal(concatFeatures([a]), a);
  assert.throws(() => concatFeatures([a, { ...b, n: 1 }]), /row counts differ \(2 vs 1\)/);
  assert.throws(() => concatFeatures([]), /nothing to concatenate/);
});

test('columnStats: per-column mean and population variance over all views', () => {
  const { mean, variance } = columnStats({ views: [Float32Array.from([0, 1, 2, 3])], labels: Uint8Array.from([0, 0]), n: 2, dim: 2 });
  assert.deepEqual(Array.from(mean), [1, 2]);
  assert.deepEqual(Array.from(variance), [1, 1]);
});
