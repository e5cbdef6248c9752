// model.summary() for notebooks: tfjs' own cuts every column to a fixed width ("resize_normalize (Resiz"), so this
// prints the same facts as a table whose columns are as wide as their longest entry.
import type * as tf from '@tensorflow/tfjs';
import { formatTable } from '../util/format';

type Shape = (number | null)[];

function shapeText(s: Shape | Shape[] | undefined): string {
  if (!s) return '?';
  const one = (x: Shape) => `[${x.map((d) => (d === null ? 'batch' : String(d))).join(', ')}]`;
  return Array.isArray(s[0]) ? (s as Shape[]).map(one).join(' ') : one(s as Shape);
}

const size = (ws: { shape: Shape }[]) => ws.reduce((a, w) => a + w.shape.reduce((x: number, d) => x * (d ?? 1), 1), 0);

/**
 * One row per layer — name, type, output shape, parameters and, for models that are not a plain stack, the layers
 * feeding it — then the trainable / frozen totals.
 */
export function modelSummary(model: tf.LayersModel): string {
  const layers = model.layers;
  const graph = layers.some((l) => ((l as unknown as { inboundNodes?: { inboundLayers: tf.layers.Layer[] }[] }).inboundNodes?.[0]?.inboundLayers.length ?? 0) > 1);
  const rows = layers.map((l) => {
    const nodes = (l as unknown as { inboundNodes?: { inboundLayers: tf.layers.Layer[] }[] }).inboundNodes ?? [];
    const from = nodes.flatMap((n) => n.inboundLayers.map((x) => x.name)).join(', ');
    const row = [l.name, l.getClassName(), shapeText(l.outputShape as Shape | Shape[]), l.countParams().toLocaleString('en-US')];
    return graph ? [...row, from] : row;
  });
  const header = ['layer', 'type', 'output shape', 'parameters', ...(graph ? ['input from'] : [])];
  const trainable = size(model.trainableWeights as unknown as { shape: Shape }[]);
  const frozen = size(model.nonTrainableWeights as unknown as { shape: Shape }[]);
  return (
    `${model.name}: ${layers.length} layers\n${formatTable(header, rows)}\n` +
    `parameters: ${(trainable + frozen).toLocaleString('en-US')} · trainable ${trainable.toLocaleString('en-US')} · frozen ${frozen.toLocaleString('en-US')}`
  );
}
