"""The peer to beat, measured beside `npm run bench`: Keras/TensorFlow on the same cores, in graph mode.

Run by `npm run bench -- --peer` in data/tools/keras-venv (the venv `npm run export:keras` makes). The same
backbone weights (the tfjs layers models, loaded into tf-keras by the tensorflowjs package), the same arithmetic
(x / 127.5 - 1, bilinear resize with half-pixel centres, global average pooling) inside one tf.function, batch 100;
and the seed's head (BN, dropout, Dense 256 ReLU, dropout, softmax) trained one epoch by Keras `fit` (graph mode) over
45,000 x 2,048 random features; and one fine-tuning step of npm start's top-4 regime (MobileNetV2's layers after
block_12_add with their weights, pooled, concatenated with 768 frozen features, the seed's head) by Keras
`train_on_batch` at batch 128 on random activations. Prints one JSON line.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
import tf_keras
from tensorflowjs.converters import keras_tfjs_loader

FEATURE_LAYER = {"mobilenet_v2": "out_relu", "mobilenet_v1_0.75": "conv_pw_13_relu"}
FOLDER = {"mobilenet_v2": "mobilenet_v2_1.0_224", "mobilenet_v1_0.75": "mobilenet_v1_0.75_224"}


def rebuilt(backbones_dir: str, name: str, resolution: int) -> tf_keras.Model:
    """Clone the functional graph with a free input size, then wrap it with the preprocessing."""
    net = keras_tfjs_loader.load_keras_model(os.path.join(backbones_dir, FOLDER[name], "model.json"))
    cut = tf_keras.Model(net.inputs, net.get_layer(FEATURE_LAYER[name]).output)
    cfg = cut.get_config()
    cfg["layers"][0]["config"]["batch_input_shape"] = [None, None, None, 3]
    free = tf_keras.Model.from_config(cfg)
    free.set_weights(cut.get_weights())
    x_in = tf_keras.Input((32, 32, 3))
    x = tf_keras.layers.Rescaling(1 / 127.5, -1)(x_in)
    x = tf_keras.layers.Resizing(resolution, resolution, "bilinear")(x)
    return tf_keras.Model(x_in, tf_keras.layers.GlobalAveragePooling2D()(free(x)))


def finetune_step_ms(backbones_dir: str, resolution: int, cut: str = "block_12_add", batch: int = 128, steps: int = 10) -> float:
    """Milliseconds per Keras training step of the layers after `cut` (applied to a new input) + the seed's head."""
    net = keras_tfjs_loader.load_keras_model(os.path.join(backbones_dir, FOLDER["mobilenet_v2"], "model.json"))
    names = [l.name for l in net.layers]
    side = resolution // 16  # block_12_add is at stride 16
    x_in = tf_keras.Input((side, side, net.get_layer(cut).output.shape[-1]))
    values = {cut: x_in}
    for layer in net.layers[names.index(cut) + 1 :]:
        inbound = layer.inbound_nodes[0].inbound_layers
        args = [values[l.name] for l in (inbound if isinstance(inbound, list) else [inbound])]
        values[layer.name] = layer(args if len(args) > 1 else args[0])
        if layer.name == FEATURE_LAYER["mobilenet_v2"]:
            break
    frozen = tf_keras.Input((768,))
    pooled = tf_keras.layers.GlobalAveragePooling2D()(values[FEATURE_LAYER["mobilenet_v2"]])
    h = tf_keras.layers.Concatenate()([frozen, pooled])
    h = tf_keras.layers.Dropout(0.35)(tf_keras.layers.BatchNormalization(center=False, scale=False)(h))
    h = tf_keras.layers.Dropout(0.35)(tf_keras.layers.Dense(256, activation="relu")(h))
    model = tf_keras.Model([x_in, frozen], tf_keras.layers.Dense(10, activation="softmax")(h))
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss=tf_keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
    rng = np.random.default_rng(2)
    x = [rng.random((batch, side, side, x_in.shape[-1]), dtype="float32"), rng.random((batch, 768), dtype="float32")]
    y = tf_keras.utils.to_categorical(np.arange(batch) % 10, 10)
    for _ in range(3):
        model.train_on_batch(x, y)  # trace + warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return round((time.perf_counter() - t0) / steps * 1000, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backbones-dir", required=True)
    p.add_argument("--backbones", default="mobilenet_v2,mobilenet_v1_0.75")
    p.add_argument("--resolution", type=int, default=160)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--head-n", type=int, default=45000)
    a = p.parse_args()
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(a.n, 32, 32, 3)).astype("float32")
    out = {"tensorflow": tf.__version__, "keras": tf_keras.__version__, "features": [], "threads": os.cpu_count()}
    for name in a.backbones.split(","):
        model = rebuilt(a.backbones_dir, name, a.resolution)
        run = tf.function(lambda x: model(x, training=False), jit_compile=False)
        batch = 100
        run(images[:batch]).numpy()  # trace + warm-up
        t0 = time.perf_counter()
        for s in range(0, a.n, batch):
            run(images[s : s + batch]).numpy()
        secs = time.perf_counter() - t0
        out["features"].append({"backbone": name, "resolution": a.resolution, "imagesPerSec": round(a.n / secs, 1)})
    # The seed's head, Keras fit in graph mode, one epoch after a warm-up epoch on a slice.
    x = rng.random((a.head_n, 2048), dtype="float32") * 2
    y = tf_keras.utils.to_categorical(np.arange(a.head_n) % 10, 10)
    head = tf_keras.Sequential([
        tf_keras.Input((2048,)), tf_keras.layers.BatchNormalization(), tf_keras.layers.Dropout(0.35),
        tf_keras.layers.Dense(256, activation="relu"), tf_keras.layers.Dropout(0.35), tf_keras.layers.Dense(10, activation="softmax"),
    ])
    head.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    head.fit(x[:2560], y[:2560], batch_size=256, epochs=1, verbose=0)
    t0 = time.perf_counter()
    head.fit(x, y, batch_size=256, epochs=1, verbose=0)
    out["headEpochSeconds"] = round(time.perf_counter() - t0, 2)
    if "mobilenet_v2" in a.backbones.split(","):
        out["fineTuneStepMs"] = finetune_step_ms(a.backbones_dir, a.resolution)
    print("PEER_JSON " + json.dumps(out))


if __name__ == "__main__":
    main()
