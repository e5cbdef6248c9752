// Text formatting shared by the CLI, the run log and the notebooks: percentages and plain monospace tables.

/** 0.9146 -> "91.46%"; "-" for a missing or non-finite value. */
export function percent(x: number | null | undefined, digits = 2): string {
  return x == null || !Number.isFinite(x) ? '-' : `${(100 * x).toFixed(digits)}%`;
}

/** Left-aligned monospace table with a rule under the header (also fine in a notebook <pre>). */
export function formatTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (c ?? '').padEnd(widths[i])).join('  ').trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** Text for HTML element content and attribute values. */
export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
