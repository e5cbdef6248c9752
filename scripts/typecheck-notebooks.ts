// `npm run typecheck` (second half): type-check every notebook's code cells as tslab runs them — the cells of one
// notebook in order, sharing one scope, top-level await allowed, imports relative to the project root (the
// kernel's working folder) — so a renamed lib function fails here, not when a cell runs. Errors name the notebook,
// the cell and the line within it.
//
//   npm run typecheck                   # lib, scripts, tests, then the notebooks
//   ts-node scripts/typecheck-notebooks.ts [notebooks/x.ipynb ...]
import * as fs from 'fs';
import * as path from 'path';
import * as ts from 'typescript';
import { PROJECT_ROOT } from '../lib/settings/paths';

interface CellSpan { cell: number; start: number; lines: number }

/** One virtual module per notebook: its code cells joined in order; spans map lines back to cells. */
function virtualModule(file: string): { source: string; spans: CellSpan[] } {
  const nb = JSON.parse(fs.readFileSync(file, 'utf8')) as { cells: { cell_type: string; source: string | string[] }[] };
  const parts: string[] = [];
  const spans: CellSpan[] = [];
  let line = 1; // line 0 is the module marker below
  nb.cells.forEach((c, i) => {
    if (c.cell_type !== 'code') return;
    const src = Array.isArray(c.source) ? c.source.join('') : c.source;
    const lines = src.split('\n').length;
    spans.push({ cell: i + 1, start: line, lines });
    parts.push(src);
    line += lines;
  });
  return { source: ['export {};', ...parts].join('\n'), spans };
}

function main(): number {
  const files = process.argv.slice(2).length
    ? process.argv.slice(2).map((f) => path.resolve(f))
    : fs.readdirSync(path.join(PROJECT_ROOT, 'notebooks')).filter((f) => f.endsWith('.ipynb')).sort().map((f) => path.join(PROJECT_ROOT, 'notebooks', f));
  const virtual = new Map<string, { notebook: string; spans: CellSpan[]; source: string }>();
  for (const nb of files) {
    const { source, spans } = virtualModule(nb);
    // Placed at the project root: cells import './lib/...' from the kernel's working folder.
    virtual.set(path.join(PROJECT_ROOT, `${path.basename(nb, '.ipynb')}.notebook.ts`), { notebook: path.relative(PROJECT_ROOT, nb), spans, source });
  }
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ES2022, moduleResolution: ts.ModuleResolutionKind.Node10,
    lib: ['lib.es2022.d.ts'], strict: true, esModuleInterop: true, resolveJsonModule: true, skipLibCheck: true, noEmit: true,
    types: ['node'], allowImportingTsExtensions: false,
  };
  const host = ts.createCompilerHost(options);
  const readFile = host.readFile.bind(host);
  const fileExists = host.fileExists.bind(host);
  host.readFile = (f) => virtual.get(path.resolve(f))?.source ?? readFile(f);
  host.fileExists = (f) => virtual.has(path.resolve(f)) || fileExists(f);
  const program = ts.createProgram([...virtual.keys()], options, host);
  let errors = 0;
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const v = d.file && virtual.get(path.resolve(d.file.fileName));
    if (!v || d.start === undefined || !d.file) continue; // lib/ itself is checked by tsc -p .
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    const span = v.spans.find((s) => line >= s.start && line < s.start + s.lines);
    const where = span ? `cell ${span.cell}, line ${line - span.start + 1}:${character + 1}` : `line ${line}`;
    console.error(`${v.notebook}: ${where}: ${ts.flattenDiagnosticMessageText(d.messageText, ' ')}`);
    errors++;
  }
  console.log(`notebooks type-checked: ${files.length} notebook(s), ${errors} error(s)`);
  return errors ? 1 : 0;
}

process.exitCode = main();
