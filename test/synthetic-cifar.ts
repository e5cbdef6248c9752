// A full-size CIFAR-10 folder of cheap synthetic images (the loader insists on 10,000 records per file), for tests
// that run the real entry points without the dataset. The same fixture as reliability.test.ts's.
import * as fs from 'fs';
import * as path from 'path';
import { RECORD_BYTES, TEST_FILE, TRAIN_FILES, META_FILE } from '../lib/data/cifar10';

export const CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];

export function writeSyntheticCifar(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  [...TRAIN_FILES, TEST_FILE].forEach((f, b) => {
    const buf = Buffer.alloc(10000 * RECORD_BYTES);
    for (let i = 0; i < 10000; i++) {
      const label = (i + b) % 10;
      const o = i * RECORD_BYTES;
      buf[o] = label;
      // Class-dependent colour plus a per-image ramp: images differ, classes are learnable.
      for (let p = 0; p < 1024; p++) {
        buf[o + 1 + p] = (label * 25 + p) % 256;
        buf[o + 1025 + p] = (i * 7 + p) % 256;
        buf[o + 2049 + p] = (label * 40 + (p >> 5)) % 256;
      }
    }
    fs.writeFileSync(path.join(dir, f), buf);
  });
  fs.writeFileSync(path.join(dir, META_FILE), CLASSES.join('\n') + '\n');
  return dir;
}
