// Image grids as PNG (sample images per class, augmentation previews, top-loss galleries): nearest-neighbour
// upscaling so 32x32 pixels stay crisp, optional captions in a built-in 5x7 pixel font (no font files needed).
import { PNG } from 'pngjs';
import { displayBundle } from '../jupyter/notebook';
import { resizeTo } from '../data/pixels';
import { firstPerClass, subset } from '../data/cifar10';
import { ImageSet, sideOfSet } from '../data/image-set';

// A 5x7 pixel font (upper and lower case, digits, punctuation), as seven 5-pixel rows, '#' = ink; g j p q y have an
// eighth row below the baseline. Drawn at 2x on tiles of 64 px and more: 14-pixel capitals, readable at a glance.
const GLYPHS: Record<string, string> = {
  A: '.###. #...# #...# ##### #...# #...# #...#', B: '####. #...# #...# ####. #...# #...# ####.', C: '.###. #...# #.... #.... #.... #...# .###.',
  D: '####. #...# #...# #...# #...# #...# ####.', E: '##### #.... #.... ####. #.... #.... #####', F: '##### #.... #.... ####. #.... #.... #....',
  G: '.###. #...# #.... #.### #...# #...# .####', H: '#...# #...# #...# ##### #...# #...# #...#', I: '.###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.',
  J: '..### ...#. ...#. ...#. ...#. #..#. .##..', K: '#...# #..#. #.#.. ##... #.#.. #..#. #...#', L: '#.... #.... #.... #.... #.... #.... #####',
  M: '#...# ##.## #.#.# #.#.# #...# #...# #...#', N: '#...# #...# ##..# #.#.# #..## #...# #...#', O: '.###. #...# #...# #...# #...# #...# .###.',
  P: '####. #...# #...# ####. #.... #.... #....', Q: '.###. #...# #...# #...# #.#.# #..#. .##.#', R: '####. #...# #...# ####. #.#.. #..#. #...#',
  S: '.#### #.... #.... .###. ....# ....# ####.', T: '##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..', U: '#...# #...# #...# #...# #...# #...# .###.',
  V: '#...# #...# #...# #...# #...# .#.#. ..#..', W: '#...# #...# #...# #.#.# #.#.# #.#.# .#.#.', X: '#...# #...# .#.#. ..#.. .#.#. #...# #...#',
  Y: '#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..', Z: '##### ....# ...#. ..#.. .#... #.... #####', a: '..... ..... .###. ....# .#### #...# .####',
  b: '#.... #.... #.##. ##..# #...# #...# ####.', c: '..... ..... .###. #.... #.... #...# .###.', d: '....# ....# .##.# #..## #...# #...# .####',
  e: '..... ..... .###. #...# ##### #.... .###.', f: '..##. .#..# .#... ###.. .#... .#... .#...', g: '..... ..... .#### #...# #...# .#### ....# .###.',
  h: '#.... #.... #.##. ##..# #...# #...# #...#', i: '..#.. ..... .##.. ..#.. ..#.. ..#.. .###.', j: '...#. ..... ..##. ...#. ...#. ...#. #..#. .##..',
  k: '#.... #.... #..#. #.#.. ##... #.#.. #..#.', l: '.##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.', m: '..... ..... ##.#. #.#.# #.#.# #.#.# #.#.#',
  n: '..... ..... #.##. ##..# #...# #...# #...#', o: '..... ..... .###. #...# #...# #...# .###.', p: '..... ..... ####. #...# #...# ####. #.... #....',
  q: '..... ..... .#### #...# #...# .#### ....# ....#', r: '..... ..... #.##. ##..# #.... #.... #....', s: '..... ..... .###. #.... .###. ....# ####.',
  t: '.#... .#... ###.. .#... .#... .#..# ..##.', u: '..... ..... #...# #...# #...# #..## .##.#', v: '..... ..... #...# #...# #...# .#.#. ..#..',
  w: '..... ..... #...# #...# #.#.# #.#.# .#.#.', x: '..... ..... #...# .#.#. ..#.. .#.#. #...#', y: '..... ..... #...# #...# #...# .#### ....# .###.',
  z: '..... ..... ##### ...#. ..#.. .#... #####', '0': '.###. #...# #..## #.#.# ##..# #...# .###.', '1': '..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.',
  '2': '.###. #...# ....# ...#. ..#.. .#... #####', '3': '##### ...#. ..#.. ...#. ....# #...# .###.', '4': '...#. ..##. .#.#. #..#. ##### ...#. ...#.',
  '5': '##### #.... ####. ....# ....# #...# .###.', '6': '..##. .#... #.... ####. #...# #...# .###.', '7': '##### ....# ...#. ..#.. .#... .#... .#...',
  '8': '.###. #...# #...# .###. #...# #...# .###.', '9': '.###. #...# #...# .#### ....# ...#. .##..', ' ': '..... ..... ..... ..... ..... ..... .....',
  '.': '..... ..... ..... ..... ..... .##.. .##..', ',': '..... ..... ..... ..... .##.. ..#.. .#...', ':': '..... .##.. .##.. ..... .##.. .##.. .....',
  ';': '..... .##.. .##.. ..... .##.. ..#.. .#...', '-': '..... ..... ..... ##### ..... ..... .....', '_': '..... ..... ..... ..... ..... ..... #####',
  '+': '..... ..#.. ..#.. ##### ..#.. ..#.. .....', '=': '..... ..... ##### ..... ##### ..... .....', '/': '..... ....# ...#. ..#.. .#... #.... .....',
  '%': '##... ##..# ...#. ..#.. .#... #..## ...##', '(': '...#. ..#.. .#... .#... .#... ..#.. ...#.', ')': '.#... ..#.. ...#. ...#. ...#. ..#.. .#...',
  '>': '.#... ..#.. ...#. ....# ...#. ..#.. .#...', '<': '...#. ..#.. .#... #.... .#... ..#.. ...#.', '?': '.###. #...# ....# ...#. ..#.. ..... ..#..',
  '!': '..#.. ..#.. ..#.. ..#.. ..#.. ..... ..#..', '#': '.#.#. .#.#. ##### .#.#. ##### .#.#. .#.#.', "'": '..#.. ..#.. .#... ..... ..... ..... .....',
  '"': '.#.#. .#.#. ..... ..... ..... ..... .....', '*': '..... ..#.. #.#.# .###. #.#.# ..#.. .....', '[': '.###. .#... .#... .#... .#... .#... .###.',
  ']': '.###. ...#. ...#. ...#. ...#. ...#. .###.', '@': '.###. #...# ....# .##.# #.#.# #.#.# .###.', '×': '..... #...# .#.#. ..#.. .#.#. #...# .....',
  '→': '..... ..#.. ...#. ##### ...#. ..#.. .....', '·': '..... ..... ..... ..#.. ..... ..... .....', '…': '..... ..... ..... ..... ..... ..... #.#.#',
};

/** Glyph cell: 5 pixels wide plus 1 of spacing; 7 rows above the baseline plus 1 descender row and 1 of spacing. */
const ADVANCE = 6;
const LINE = 9;

function glyph(ch: string): string[] {
  return (GLYPHS[ch] ?? GLYPHS[ch.toLowerCase()] ?? GLYPHS['?']).split(' ');
}

/** Caption pixel size for tiles `tileW` wide: 2 (14 px capitals) from 64 px up, else 1. */
export function captionScale(tileW: number): number {
  return tileW >= 64 ? 2 : 1;
}

/** `text` wrapped at spaces into lines of at most `maxChars`, words longer than that cut; at most `maxLines`, the last one marked '…' when text was left out. */
export function wrapCaption(text: string, maxChars: number, maxLines: number): string[] {
  if (maxChars < 1 || text.trim() === '') return [];
  const out: string[] = [];
  let line = '';
  for (const word of text.trim().split(/\s+/)) {
    let w = word;
    while (w.length > maxChars) {
      if (line) { out.push(line); line = ''; }
      out.push(w.slice(0, maxChars));
      w = w.slice(maxChars);
    }
    if (!line) line = w;
    else if (line.length + 1 + w.length <= maxChars) line += ` ${w}`;
    else { out.push(line); line = w; }
  }
  if (line) out.push(line);
  if (out.length > maxLines) {
    const kept = out.slice(0, maxLines);
    const last = kept[maxLines - 1];
    kept[maxLines - 1] = (last.length < maxChars ? last : last.slice(0, maxChars - 1)) + '…';
    return kept;
  }
  return out;
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
  /** One caption per image, drawn under it: wrapped onto two lines if needed, or running on under the next tiles of its row while their captions are empty. */
  labels?: string[];
  /** Columns that belong together (e.g. an image and its heat maps): `groupGap` pixels between groups (default off). */
  groupSize?: number;
  /** Pixels between groups of `groupSize` columns (default 14). */
  groupGap?: number;
}

/** Draw one line of `text` into an RGBA buffer with its top-left at (x0, y0), pixel size `s`. */
function drawText(png: PNG, text: string, x0: number, y0: number, s: number): void {
  [...text].forEach((ch, k) => {
    glyph(ch).forEach((row, r) => {
      for (let c = 0; c < row.length; c++) {
        if (row[c] !== '#') continue;
        for (let dy = 0; dy < s; dy++) {
          for (let dx = 0; dx < s; dx++) {
            const x = x0 + (k * ADVANCE + c) * s + dx;
            const y = y0 + r * s + dy;
            if (x >= png.width || y >= png.height) continue;
            const o = (y * png.width + x) * 4;
            png.data[o] = png.data[o + 1] = png.data[o + 2] = 235;
          }
        }
      }
    });
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
  const group = opts.groupSize ?? 0;
  if (group && (!Number.isInteger(group) || group < 1)) throw new Error(`imageGrid: groupSize must be a positive integer, got ${group}`);
  const extra = group ? (opts.groupGap ?? 14) - gap : 0; // added after every `group` columns
  const colX = (c: number) => gap + c * (tw + gap) + (group ? Math.floor(c / group) * extra : 0);
  // Captions: a caption may run on under the next tiles of its row while their captions are empty (a row label);
  // otherwise it wraps at spaces onto a second line.
  const fs = captionScale(tw);
  const captions: string[][] = [];
  if (opts.labels) {
    for (let i = 0; i < n; i++) {
      const col = i % cols;
      let last = col;
      while (last + 1 < cols && i + last + 1 - col < n && !opts.labels[i + last + 1 - col] && (!group || Math.floor((last + 1) / group) === Math.floor(col / group))) last++;
      const width = colX(last) + tw - colX(col) - 2;
      captions.push(wrapCaption(opts.labels[i] ?? '', Math.floor((width + fs) / (ADVANCE * fs)), 2));
    }
  }
  const lines = Math.max(0, ...captions.map((c) => c.length));
  const capH = opts.labels ? Math.max(1, lines) * LINE * fs + 4 : 0;
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
    (captions[i] ?? []).forEach((line, k) => drawText(png, line, x0 + 1, y0 + th + 3 + k * LINE * fs, fs));
  }
  return PNG.sync.write(png);
}

/** Show a PNG inline in a notebook; elsewhere nothing is shown. Returns nothing, so a cell ending in it prints nothing. */
export function showPng(png: Buffer | Uint8Array): void {
  displayBundle({ 'image/png': Buffer.from(png).toString('base64'), 'text/plain': `<PNG image, ${png.length} bytes>` });
}

/** Each of `n` square images (side `side`) reduced to `to` px by area averaging (as lib/data/pixels.ts resizeTo). */
export function thumbnails(images: Uint8Array, n: number, side: number, to: number): Uint8Array {
  if (to >= side) return images.subarray(0, n * side * side * 3);
  const out = new Uint8Array(n * to * to * 3);
  const per = side * side * 3;
  for (let i = 0; i < n; i++) out.set(resizeTo({ width: side, height: side, data: images.subarray(i * per, (i + 1) * per) }, to), i * to * to * 3);
  return out;
}

/**
 * The first `perClass` images of each class of `set` as one grid, a row per class named by its first tile: CIFAR-10's
 * 32 px images enlarged 3x, a folder's (at the backbone's input) reduced to 64 px thumbnails.
 */
export function sampleGrid(set: ImageSet, classNames: string[], perClass: number): Buffer {
  const positions = firstPerClass(set, perClass, classNames.length);
  if (!positions.length) throw new Error('sampleGrid: the set has no images');
  const side = sideOfSet(set);
  const picked = subset(set, positions);
  const tile = Math.min(side, 64);
  return imageGrid(thumbnails(picked.images, picked.n, side, tile), picked.n, {
    h: tile, w: tile, cols: perClass, scale: side <= 32 ? 3 : 1,
    labels: positions.map((_, i) => (i === 0 || picked.labels[i] !== picked.labels[i - 1] ? classNames[picked.labels[i]] : '')),
  });
}

