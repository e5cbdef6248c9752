// Pixel arithmetic shared by Node (lib/model/predict.ts) and the browser demo (scripts/demo.ts transpiles this file for the
// page as it is): it must stay free of imports and Node APIs, so both reduce an image to 32x32 the same way.

export interface RgbImage {
  width: number;
  height: number;
  /** RGB, row-major, 3 bytes per pixel. */
  data: Uint8Array;
}

/** RGBA bytes to RGB, alpha composited on white (transparent areas read as a white background, not black). */
export function rgbaToRgb(img: { width: number; height: number; data: ArrayLike<number> }): RgbImage {
  const n = img.width * img.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const a = img.data[i * 4 + 3] / 255;
    for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.round(img.data[i * 4 + c] * a + 255 * (1 - a));
  }
  return { width: img.width, height: img.height, data };
}

/**
 * Resize to size x size: area averaging when shrinking (each output pixel = mean of the source area it covers, as
 * CIFAR-10's downsampled photos), bilinear (half-pixel centres) when enlarging. The whole image is used (no crop).
 */
export function resizeTo(img: RgbImage, size = 32): Uint8Array {
  const { width: W, height: H, data } = img;
  const out = new Uint8Array(size * size * 3);
  const sx = W / size;
  const sy = H / size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const acc = [0, 0, 0];
      if (sx >= 1 && sy >= 1) {
        // Area average over [x*sx, (x+1)*sx) x [y*sy, (y+1)*sy) with fractional edge weights.
        const x0 = x * sx, x1 = (x + 1) * sx, y0 = y * sy, y1 = (y + 1) * sy;
        let wsum = 0;
        for (let yy = Math.floor(y0); yy < Math.ceil(y1); yy++) {
          const wy = Math.min(yy + 1, y1) - Math.max(yy, y0);
          for (let xx = Math.floor(x0); xx < Math.ceil(x1); xx++) {
            const w = wy * (Math.min(xx + 1, x1) - Math.max(xx, x0));
            const o = (Math.min(yy, H - 1) * W + Math.min(xx, W - 1)) * 3;
            acc[0] += w * data[o];
            acc[1] += w * data[o + 1];
            acc[2] += w * data[o + 2];
            wsum += w;
          }
        }
        for (let c = 0; c < 3; c++) acc[c] /= wsum;
      } else {
        const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), W - 1);
        const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), H - 1);
        const xa = Math.floor(fx), ya = Math.floor(fy);
        const xb = Math.min(xa + 1, W - 1), yb = Math.min(ya + 1, H - 1);
        const ax = fx - xa, ay = fy - ya;
        for (let c = 0; c < 3; c++) {
          const p = (yy: number, xx: number) => data[(yy * W + xx) * 3 + c];
          const top = p(ya, xa) + (p(ya, xb) - p(ya, xa)) * ax;
          const bot = p(yb, xa) + (p(yb, xb) - p(yb, xa)) * ax;
          acc[c] = top + (bot - top) * ay;
        }
      }
      const o = (y * size + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(acc[c]);
    }
  }
  return out;
}

/**
 * The image made square the way a folder-trained model's images were (lib/data/image-folder.ts): 'cover' keeps the
 * centred square of the short side, 'contain' pads the short side with black to the long one (centred). The page
 * then reduces it with resizeTo; `npm run predict` uses libvips for both steps, so on photos larger than the model's
 * input the two differ by resampling detail (on images already at its size they agree exactly).
 */
export function fitSquare(img: RgbImage, fit: 'cover' | 'contain'): RgbImage {
  const { width: W, height: H, data } = img;
  if (W === H) return img;
  const side = fit === 'cover' ? Math.min(W, H) : Math.max(W, H);
  const out = new Uint8Array(side * side * 3);
  // cover: the source offset of the crop; contain: the destination offset of the image (libvips centres both the same way).
  const ox = Math.floor(Math.abs(W - side) / 2);
  const oy = Math.floor(Math.abs(H - side) / 2);
  for (let y = 0; y < side; y++) {
    for (let x = 0; x < side; x++) {
      const sx = fit === 'cover' ? x + ox : x - ox;
      const sy = fit === 'cover' ? y + oy : y - oy;
      if (sx < 0 || sy < 0 || sx >= W || sy >= H) continue; // padding stays black
      const s = (sy * W + sx) * 3;
      const d = (y * side + x) * 3;
      out[d] = data[s];
      out[d + 1] = data[s + 1];
      out[d + 2] = data[s + 2];
    }
  }
  return { width: side, height: side, data: out };
}

/**
 * The most pixels an image may have before it is decoded: 40 megapixels (a 7,300 x 5,500 photo fits). Decoders
 * allocate width x height x 4 bytes whatever the file's size, so a 746 KB PNG of zeros claiming 16,000 x 16,000
 * pixels took 3.9 GB and 11.7 s to decode. One limit for every format and every entry point (`npm run predict`,
 * notebook 6, the demo page), checked against the header before any decoder runs.
 */
export const MAX_IMAGE_PIXELS = 40_000_000;

/** Width and height from a PNG (IHDR) or JPEG (first SOFn marker) header; undefined when neither is found. */
export function imageHeaderSize(b: Uint8Array): { format: 'PNG' | 'JPEG'; width: number; height: number } | undefined {
  const u16 = (o: number) => (b[o] << 8) | b[o + 1];
  const u32 = (o: number) => ((b[o] << 24) >>> 0) + (b[o + 1] << 16) + (b[o + 2] << 8) + b[o + 3];
  // PNG: 8-byte signature, then the IHDR chunk (length 13) whose first 8 data bytes are width and height.
  if (b.length >= 24 && b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47 && String.fromCharCode(b[12], b[13], b[14], b[15]) === 'IHDR') {
    return { format: 'PNG', width: u32(16), height: u32(20) };
  }
  // JPEG: walk the marker segments to the first start-of-frame (C0-CF except DHT C4, JPG C8, DAC CC).
  if (b.length >= 4 && b[0] === 0xff && b[1] === 0xd8) {
    let o = 2;
    while (o + 9 <= b.length) {
      if (b[o] !== 0xff) return undefined;
      const m = b[o + 1];
      if (m === 0xff) { o++; continue; } // fill byte
      if (m === 0xd8 || m === 0x01 || (m >= 0xd0 && m <= 0xd7)) { o += 2; continue; } // markers without a length
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) return { format: 'JPEG', height: u16(o + 5), width: u16(o + 7) };
      if (m === 0xd9 || m === 0xda) return undefined; // end of image or scan data before any frame header
      o += 2 + u16(o + 2);
    }
  }
  return undefined;
}

/**
 * The one-line reason an image of this header must not be decoded (undefined when it may): `name` is the file
 * (or the caption the demo page shows).
 */
export function oversizeReason(name: string, size: { format: string; width: number; height: number }, limit = MAX_IMAGE_PIXELS): string | undefined {
  const pixels = size.width * size.height;
  if (pixels <= limit) return undefined;
  return `${name}: ${size.width}x${size.height} ${size.format} is ${(pixels / 1e6).toFixed(1)} megapixels, over the ${limit / 1e6}-megapixel limit for images (not decoded)`;
}
