// What a file is, from its first bytes (never its extension: a PNG saved as .jpg is a PNG, a text file named .jpg is
// not an image), and the width x height a BMP header claims (sharp/libvips has no BMP reader, so the limit check
// for BMP cannot go through sharp's metadata).

/** The formats the image-folder reader decodes: sharp/libvips for all but BMP, bmp-ts for BMP. */
export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'bmp' | 'tiff' | 'avif';

export const IMAGE_FORMATS: readonly ImageFormat[] = ['jpeg', 'png', 'webp', 'gif', 'bmp', 'tiff', 'avif'];

/** How many leading bytes `sniffImage` needs (an ISO-BMFF ftyp box lists its brands within the first few dozen). */
export const SNIFF_BYTES = 64;

const ascii = (b: Uint8Array, from: number, to: number) => String.fromCharCode(...b.subarray(from, to));
const u32le = (b: Uint8Array, o: number) => (b[o] | (b[o + 1] << 8) | (b[o + 2] << 16)) + b[o + 3] * 2 ** 24;
const i32le = (b: Uint8Array, o: number) => u32le(b, o) | 0;
const u32be = (b: Uint8Array, o: number) => b[o] * 2 ** 24 + ((b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]);

/**
 * The image format of a file from its leading bytes, or the one-line reason it is not one we decode. Formats that
 * are recognised but not decoded (HEIC, SVG, PDF, …) get a reason that says so, rather than "not an image".
 */
export function sniffImage(head: Uint8Array): { format: ImageFormat } | { reason: string } {
  const b = head;
  if (b.length === 0) return { reason: 'empty file (0 bytes)' };
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return { format: 'jpeg' };
  if (b.length >= 8 && b[0] === 0x89 && ascii(b, 1, 4) === 'PNG' && b[4] === 0x0d && b[5] === 0x0a) return { format: 'png' };
  if (b.length >= 12 && ascii(b, 0, 4) === 'RIFF' && ascii(b, 8, 12) === 'WEBP') return { format: 'webp' };
  if (b.length >= 6 && (ascii(b, 0, 6) === 'GIF87a' || ascii(b, 0, 6) === 'GIF89a')) return { format: 'gif' };
  if (b.length >= 4 && ((b[0] === 0x49 && b[1] === 0x49 && b[2] === 0x2a && b[3] === 0) || (b[0] === 0x4d && b[1] === 0x4d && b[2] === 0 && b[3] === 0x2a))) {
    return { format: 'tiff' };
  }
  // BMP: "BM" alone is too weak (a text file may start with it), so the DIB header size must be a known one too.
  if (b.length >= 18 && b[0] === 0x42 && b[1] === 0x4d) {
    const dib = u32le(b, 14);
    if ([12, 40, 52, 56, 64, 108, 124].includes(dib)) return { format: 'bmp' };
  }
  // ISO-BMFF (AVIF, HEIC): an ftyp box whose major or compatible brands say what codes the pixels.
  if (b.length >= 12 && ascii(b, 4, 8) === 'ftyp') {
    const boxEnd = Math.min(u32be(b, 0), b.length);
    const brands = [ascii(b, 8, 12)];
    for (let o = 16; o + 4 <= boxEnd; o += 4) brands.push(ascii(b, o, o + 4));
    if (brands.includes('avif') || brands.includes('avis')) return { format: 'avif' };
    if (brands.some((x) => ['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx', 'mif1', 'msf1'].includes(x))) {
      // The prebuilt libvips in sharp ships AV1 (AVIF) but not the patent-encumbered HEVC decoder.
      return { reason: 'HEIC/HEIF (HEVC-coded) is not supported by the prebuilt decoder; convert it to JPEG or AVIF' };
    }
    return { reason: `ISO media file (brand ${brands[0].trim() || '?'}), not an image format we decode` };
  }
  const text = ascii(b, 0, Math.min(b.length, 256)).trimStart().toLowerCase();
  if (text.startsWith('<svg') || (text.startsWith('<?xml') && text.includes('<svg'))) {
    return { reason: 'SVG is vector graphics, not supported (export it as PNG)' };
  }
  if (text.startsWith('%pdf')) return { reason: 'PDF document, not an image' };
  if (b.length >= 4 && ((b[0] === 0 && b[1] === 0 && b[2] === 1 && b[3] === 0) || ascii(b, 0, 4) === '8BPS' || ascii(b, 0, 4) === 'qoif')) {
    return { reason: 'ICO/PSD/QOI image: unsupported format (supported: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF)' };
  }
  const printable = b.subarray(0, 32).every((c) => c === 9 || c === 10 || c === 13 || (c >= 32 && c < 127) || c >= 0xc2);
  return {
    reason: printable
      ? `not an image: looks like text ("${ascii(b, 0, Math.min(b.length, 24)).replace(/\s+/g, ' ').trim()}…")`
      : `not an image: unknown format (starts with bytes ${Buffer.from(b.subarray(0, 8)).toString('hex')})`,
  };
}

/** Width, height, bits per pixel and whether the pixels carry alpha, from a BMP's headers; throws on a short header. */
export function bmpHeader(b: Uint8Array): { width: number; height: number; bitsPerPixel: number; alphaMask: boolean } {
  if (b.length < 30) throw new Error(`BMP header truncated (${b.length} bytes)`);
  const dib = u32le(b, 14);
  if (dib === 12) {
    // OS/2 BITMAPCOREHEADER: 16-bit dimensions.
    return { width: b[18] | (b[19] << 8), height: b[20] | (b[21] << 8), bitsPerPixel: b[24] | (b[25] << 8), alphaMask: false };
  }
  const width = i32le(b, 18);
  const height = Math.abs(i32le(b, 22)); // negative height = rows stored top-down
  const bitsPerPixel = b[28] | (b[29] << 8);
  const compression = b.length >= 34 ? u32le(b, 30) : 0;
  // An alpha mask exists in V3+ headers, or after a V1 header with BI_ALPHABITFIELDS (6); both put it at byte 66.
  const hasMaskField = dib >= 56 || compression === 6;
  const alphaMask = bitsPerPixel === 32 && hasMaskField && b.length >= 70 && u32le(b, 66) !== 0;
  return { width, height, bitsPerPixel, alphaMask };
}
