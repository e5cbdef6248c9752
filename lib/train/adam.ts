// Adam, once. Three engines run it — the head trainer and fine-tuning's eager step on tfjs tensors, fine-tuning's
// step graph on TF graph nodes — so the rule is written here over an abstract arithmetic, with the per-step
// coefficients computed in one place; each engine supplies its ops and decides which weights decay and at what rate.
import * as tf from '@tensorflow/tfjs';

export interface AdamHyper {
  b1: number;
  b2: number;
  eps: number;
}

/** Keras' defaults (epsilon 1e-7, not the paper's 1e-8). */
export const ADAM: AdamHyper = { b1: 0.9, b2: 0.999, eps: 1e-7 };

/**
 * The scalars of step t (1-based) at learning rate `lr`: `step`, the bias-corrected step size
 * lr * sqrt(1 - b2^t) / (1 - b1^t) (the corrections folded into the rate, as Keras), and `decay`, the factor of
 * decoupled (AdamW) weight decay, lr * weightDecay — subtracted as p * decay, from the weight before the step.
 */
export function adamCoefficients(lr: number, t: number, weightDecay = 0, h: AdamHyper = ADAM): { step: number; decay: number } {
  return { step: (lr * Math.sqrt(1 - h.b2 ** t)) / (1 - h.b1 ** t), decay: lr * weightDecay };
}

/** The operations the update is written in: T a tensor (or graph node), S a scalar; `name` labels graph nodes. */
export interface AdamArithmetic<T, S> {
  add(a: T, b: T | S, name: string): T;
  sub(a: T, b: T, name: string): T;
  mul(a: T, b: T | S, name: string): T;
  div(a: T, b: T, name: string): T;
  sqrt(a: T, name: string): T;
  square(a: T, name: string): T;
}

/** The update's scalars in the engine's own form: the hyper-parameters, and the step's coefficients. */
export interface AdamScalars<S> {
  b1: S;
  oneMinusB1: S;
  b2: S;
  oneMinusB2: S;
  eps: S;
  /** adamCoefficients' step (for this weight's learning rate). */
  step: S;
  /** adamCoefficients' decay; absent for weights that do not decay. */
  decay?: S;
}

/** The hyper-parameters as the four coefficients the moments use (and epsilon). */
export function adamConstants(h: AdamHyper): Omit<AdamScalars<number>, 'step' | 'decay'> {
  return { b1: h.b1, oneMinusB1: 1 - h.b1, b2: h.b2, oneMinusB2: 1 - h.b2, eps: h.eps };
}

/**
 * One Adam update of weight p with gradient g and moments m, v; returns the next p, m, v (nothing is assigned):
 *   m' = b1 m + (1 - b1) g,   v' = b2 v + (1 - b2) g^2,   p' = p - step * m' / (sqrt(v') + eps)  [- decay * p]
 * `id` makes graph node names unique (the weight's index).
 */
export function adamUpdate<T, S>(ops: AdamArithmetic<T, S>, id: string | number, p: T, g: T, m: T, v: T, k: AdamScalars<S>): { p: T; m: T; v: T } {
  const m2 = ops.add(ops.mul(m, k.b1, `m${id}_a`), ops.mul(g, k.oneMinusB1, `m${id}_b`), `m${id}`);
  const v2 = ops.add(ops.mul(v, k.b2, `v${id}_a`), ops.mul(ops.square(g, `g${id}_sq`), k.oneMinusB2, `v${id}_b`), `v${id}`);
  const update = ops.div(m2, ops.add(ops.sqrt(v2, `s${id}`), k.eps, `d${id}`), `u${id}`);
  let next = ops.sub(p, ops.mul(update, k.step, `step${id}`), `p${id}`);
  if (k.decay !== undefined) next = ops.sub(next, ops.mul(p, k.decay, `decay${id}`), `p${id}_decay`);
  return { p: next, m: m2, v: v2 };
}

/** Eager tfjs arithmetic (scalars are plain numbers: tfjs makes them float32 scalars, as the graph's constants). */
export const eagerAdam: AdamArithmetic<tf.Tensor, number> = {
  add: (a, b) => tf.add(a, b),
  sub: (a, b) => tf.sub(a, b),
  mul: (a, b) => tf.mul(a, b),
  div: (a, b) => tf.div(a, b),
  sqrt: (a) => tf.sqrt(a),
  square: (a) => tf.square(a),
};

/** Adam's moments for one weight, as tfjs variables (zeros). */
export function adamMoments(p: tf.Tensor): { m: tf.Variable; v: tf.Variable } {
  return { m: tf.variable(tf.zerosLike(p), false), v: tf.variable(tf.zerosLike(p), false) };
}

/** Apply adamUpdate to variable p and its moments in place (eager engines; call inside tf.tidy). */
export function adamAssign(p: tf.Variable, g: tf.Tensor, s: { m: tf.Variable; v: tf.Variable }, k: AdamScalars<number>): void {
  const next = adamUpdate(eagerAdam, '', p, g, s.m, s.v, k);
  s.m.assign(next.m);
  s.v.assign(next.v);
  p.assign(next.p);
}
