"""Check an exported Keras model against tfjs: run by `npm run export:keras -- --check` in data/tools/keras-venv.

Loads the file with plain tf-keras (no custom objects: an "Unknown layer" here means the export is not standard
Keras), predicts the images Node wrote (float32 0..255 NHWC, raw little-endian) and compares with the tfjs
probabilities Node computed for the same images. Prints the max abs difference; exit 1 when it is over --tol.
"""
import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up notices would bury the one result line

import numpy as np
import tf_keras


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="the exported .h5 / .keras file")
    p.add_argument("--images", required=True, help="float32 [n, size, size, 3] pixels 0..255, raw")
    p.add_argument("--probs", required=True, help="float32 [n, classes] tfjs probabilities, raw")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--size", type=int, default=32, help="side of the square images (32 for CIFAR-10)")
    p.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()

    model = tf_keras.models.load_model(a.model, compile=False)
    x = np.fromfile(a.images, dtype="<f4").reshape(a.n, a.size, a.size, 3)
    want = np.fromfile(a.probs, dtype="<f4").reshape(a.n, -1)
    got = model.predict(x, batch_size=25, verbose=0)
    diff = float(np.abs(got - want).max())
    top1 = float((got.argmax(1) == want.argmax(1)).mean())
    classes = sorted({type(l).__name__ for l in model.layers})
    print(f"Keras {tf_keras.__version__} vs tfjs on {a.n} images: max abs difference {diff:.3g} "
          f"(tolerance {a.tol:g}), top-1 agreement {100 * top1:.0f}%; top-level layers: {', '.join(classes)}")
    return 0 if diff <= a.tol else 1


if __name__ == "__main__":
    sys.exit(main())
