// The bench's table: one line per figure, its median, the target and whether it is met.
import type { Figure } from './common.js';

export function formatValue(f: Pick<Figure, 'value' | 'unit'>): string {
  if (!Number.isFinite(f.value)) return 'n/a';
  switch (f.unit) {
    case 'x':
      return `${f.value >= 10 ? f.value.toFixed(0) : f.value.toFixed(2)}x`;
    case 'ms':
      return f.value >= 10_000 ? `${(f.value / 1000).toFixed(1)} s` : f.value >= 100 ? `${Math.round(f.value)} ms` : `${f.value.toFixed(1)} ms`;
    case 's':
      return `${f.value.toFixed(1)} s`;
    case 'MB':
      return `${f.value.toFixed(1)} MB`;
  }
}

export function formatTarget(f: Figure): string {
  if (f.target === undefined) return '';
  const { op, value } = f.target;
  const shown = f.unit === 'ms' && value >= 1000 ? `${value / 1000} s` : formatValue({ value, unit: f.unit });
  return `${op === '<=' ? '≤' : op === '>=' ? '≥' : '<'} ${shown}`;
}

export function printTable(figures: readonly Figure[]): void {
  if (figures.length === 0) return;
  const rows = figures.map((f) => [f.section, f.label, formatValue(f), formatTarget(f), f.pass === undefined ? '' : f.pass ? 'pass' : 'FAIL', f.note ?? '']);
  const head = ['section', 'figure', 'median', 'target', '', 'note'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 2 ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join('  ')
      .trimEnd();
  console.log(line(head));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const r of rows) console.log(line(r));
}
