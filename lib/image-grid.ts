// Image grids as PNG (sample images per class, augmentation previews, top-loss galleries): nearest-neighbour
// upscaling so 32x32 pixels stay crisp, optional captions in a built-in 3x5 pixel font (no font files needed).
import { PNG } from 'pngjs';
import { displayBundle } from './notebook';

// 3x5 glyphs as five 3-pixel rows, '#' = ink. Upper case only: captions are upper-cased.
const GLYPHS: Record<string, string> = {
  A: '.#. #.# ### #.# #.#', B: '##. #.# ##. #.# ##.', C: '.## #.. #.. #.. .##', D: '##. #.# #.# #.# ##.',
  E: '### #.. ##. #.. ###', F: '### #.. ##. #.. #..', G: '.## #.. #.# #.# .##', H: '#.# #.# ### #.# #.#',
  I: '### .#. .#. .#. ###', J: '..# ..# ..# #.# .#.', K: '#.# #.# ##. #.# #.#', L: '#.. #.. #.. #.. ###',
  M: '#.# ### ### #.# #.#', N: '##. #.# #.# #.# #.#', O: '.#. #.# #.# #.# .#.', P: '##. #.# ##. #.. #..',
  Q: '.#. #.# #.# ##. .##', R: '##. #.# ##. #.# #.#', S: '.## #.. .#. ..# ##.', T: '### .#. .#. .#. .#.',
  U: '#.# #.# #.# #.# ###', V: '#.# #.# #.# #.# .#.', W: '#.# #.# ### ### #.#', X: '#.# #.# .#. #.# #.#',
  Y: '#.# #.# .#. .#. .#.', Z: '### ..# .#. #.. ###', '0': '### #.# #.# #.# ###', '1': '.#. ##. .#. .#. ###',
  '2': '##. ..# .#. #.. ###', '3': '##. ..# .#. ..# ##.', '4': '#.# #.# ### ..# ..#', '5': '### #.. ##. ..# ##.',
  '6': '.## #.. ### #.# ###', '7': '### ..# .#. .#. .#.', '8': '### #.# ### #.# ###', '9': '### #.# ### ..# ##.',
  ' ': '... ... ... ... ...', '.': '... ... ... ... .#.', ',': '... ... ... .#. #..', ':': '... .#. ... .#. ...',
  '-': '... ... ### ... ...', '_': '... ... ... ... ###', '>': '#.. .#. ..# .#. #..', '<': '..# .#. #.. .#. ..#',
  '=': '... ### ... ### ...', '/': '..# ..# .#. #.. #..', '%': '#.# ..# .#. #.. #.#', '(': '.#. #.. #.. #.. .#.',
  ')': '.#. ..# ..# ..# .#.', '?': '##. ..# .#. ... .#.', '!': '.#. .#. .#. ... .#.', '+': '... .#. ### .#. ...',
  '#': '#.# ### #.# ### #.#',
};

function glyph(ch: string): string {
  const c = ch === '→' ? '>' : ch.toUpperCase();
  return (GLYPHS[c] ?? GLYPHS['?']).replace(/ /g, '');
}

export interface ImageGridOptions {
  /** Image height and width in pixels (all images the same size). */
  h: number;
  w: number;
  /** Channels per pixel in `images` (default 3, RGB). */
  c?: number;
  /** Columns (default min(n, 10)). */
  cols?: number;
  /** Integer upscaling factor (default 3). */
  scale?: number;
  /** Pixels between tiles (default 2). */
  gap?: number;
  /** One caption per image, drawn under it (truncated to the tile width). */
  labels?: string[];
  /** Columns that belong together (e.g. an image and its heat maps): `groupGap` pixels between groups (default off). */
  groupSize?: number;
  /** Pixels between groups of `groupSize` columns (default 14). */
  groupGap?: number;
}

/** Draw `text` into an RGBA buffer at (x0, y0) with pixel size `s`, clipped to `maxW`. */
function drawText(png: PNG, text: string, x0: number, y0: number, s: number, maxW: number): void {
  const maxChars = Math.floor((maxW + s) / (4 * s));
  [...text].slice(0, maxChars).forEach((ch, k) => {
    const g = glyph(ch);
    for (let r = 0; r < 5; r++) {
      for (let c = 0; c < 3; c++) {
        if (g[r * 3 + c] !== '#') continue;
        for (let dy = 0; dy < s; dy++) {
          for (let dx = 0; dx < s; dx++) {
            const x = x0 + k * 4 * s + c * s + dx;
            const y = y0 + r * s + dy;
            if (x >= png.width || y >= png.height) continue;
            const o = (y * png.width + x) * 4;
            png.data[o] = png.data[o + 1] = png.data[o + 2] = 235;
          }
        }
      }
    }
  });
}

/** The first `n` images of `images` (NHWC uint8) as one PNG grid. */
export function imageGrid(images: Uint8Array, n: number, opts: ImageGridOptions): Buffer {
  const { h, w } = opts;
  const ch = opts.c ?? 3;
  const scale = opts.scale ?? 3;
  const gap = opts.gap ?? 2;
  if (!(n >= 1) || !Number.isInteger(n)) throw new Error(`imageGrid: n must be a positive integer, got ${n}`);
  if (![1, 3, 4].includes(ch)) throw new Error(`imageGrid: c must be 1, 3 or 4 channels, got ${ch}`);
  if (images.length < n * h * w * ch) {
    throw new Error(`imageGrid: ${n} images of ${h}x${w}x${ch} need ${n * h * w * ch} bytes, got ${images.length}`);
  }
  if (opts.labels && opts.labels.length < n) throw new Error(`imageGrid: ${opts.labels.length} labels for ${n} images`);
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`imageGrid: scale must be an integer >= 1, got ${scale}`);
  const cols = Math.min(opts.cols ?? Math.min(n, 10), n);
  const rows = Math.ceil(n / cols);
  const tw = w * scale;
  const th = h * scale;
  const fs = tw >= 120 ? 2 : 1; // caption pixel size
  const capH = opts.labels ? 5 * fs + 4 : 0;
  const group = opts.groupSize ?? 0;
  if (group && (!Number.isInteger(group) || group < 1)) throw new Error(`imageGrid: groupSize must be a positive integer, got ${group}`);
  const extra = group ? (opts.groupGap ?? 14) - gap : 0; // added after every `group` columns
  const colX = (c: number) => gap + c * (tw + gap) + (group ? Math.floor(c / group) * extra : 0);
  const png = new PNG({ width: colX(cols - 1) + tw + gap, height: rows * (th + capH) + (rows + 1) * gap });
  png.data.fill(40); // dark background, opaque below
  for (let i = 3; i < png.data.length; i += 4) png.data[i] = 255;
  for (let i = 0; i < n; i++) {
    const x0 = colX(i % cols);
    const y0 = gap + Math.floor(i / cols) * (th + capH + gap);
    const base = i * h * w * ch;
    for (let y = 0; y < th; y++) {
      const sy = Math.floor(y / scale);
      for (let x = 0; x < tw; x++) {
        const src = base + (sy * w + Math.floor(x / scale)) * ch;
        const o = ((y0 + y) * png.width + x0 + x) * 4;
        png.data[o] = images[src];
        png.data[o + 1] = images[src + (ch >= 3 ? 1 : 0)];
        png.data[o + 2] = images[src + (ch >= 3 ? 2 : 0)];
      }
    }
    if (opts.labels) drawText(png, opts.labels[i], x0 + 1, y0 + th + 2, fs, tw - 2);
  }
  return PNG.sync.write(png);
}

/** Show a PNG inline in a notebook; elsewhere nothing is shown. Returns nothing, so a cell ending in it prints nothing. */
export function showPng(png: Buffer | Uint8Array): void {
  displayBundle({ 'image/png': Buffer.from(png).toString('base64'), 'text/plain': `<PNG image, ${png.length} bytes>` });
}
