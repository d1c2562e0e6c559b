"""Serving artifacts of any model this package writes (`python -m catdog_tf.export`).

    DIR/model.keras     the same model with standard Keras layers only: keras.saving.load_model
                        loads it in a process that never imports catdog_tf
    DIR/saved_model     serving_default: image_bytes (tf.string [N], JPEG/PNG/GIF/BMP of any size)
                        -> p_dog (float32 [N]); decoded and resized in the graph as predict does
                        for JPEG (the fused DCT-scaled decode); serving_images: float32 RGB 0..255
                        [N, S, S, 3] -> p_dog
    DIR/model.tflite    LiteRT, float32 RGB 0..255 [N, S, S, 3] -> P(dog) [N, 1]
    DIR/README.md       what each file takes and returns

The standard-layer rewrite (`plain_keras`): ImagePreprocess -> Rescaling (or a fixed 1x1
convolution when channels are reordered or scaled unequally); FlipLeftRight -> Permute, a
fixed reversing Dense, Permute; GeneralizedMeanPooling2D (p = 2) -> the clipped map flattened over
locations, times its UnitNormalization, averaged and scaled (sqrt(mean x^2) = |x| / sqrt(L)); an
ensemble's CombineProbabilities (logit space) -> each member's head returns its logit, and the
combination rule runs on those in standard layers (models.combination.LayerOps).

DIR may be local or remote (gs://, hdfs://): every file goes through catdog_tf.files. Under a
multi-worker TF_CONFIG only the chief exports.
"""

from __future__ import annotations

import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from catdog_tf import contracts, distribution, files, metrics
from catdog_tf.data import manifest, pipeline
from catdog_tf.errors import UserError
from catdog_tf.inference import predictor
from catdog_tf.progress import Progress
from catdog_tf.models import combination
from catdog_tf.models.blocks import all_layers
from catdog_tf.models.layers import CombineProbabilities, FlipLeftRight, GeneralizedMeanPooling2D, ImagePreprocess


def _preprocess(layer: ImagePreprocess, x):
    mean, std = np.asarray(layer.mean), np.asarray(layer.std)
    if not layer.bgr and np.all(mean == mean[0]) and np.all(std == std[0]):
        return keras.layers.Rescaling(1.0 / std[0], -mean[0] / std[0], name=layer.name)(x)
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_c in range(3):
        in_c = 2 - out_c if layer.bgr else out_c
        kernel[0, 0, in_c, out_c] = 1.0 / std[out_c]
    conv = keras.layers.Conv2D(3, 1, name=layer.name)
    y = conv(x)
    conv.set_weights([kernel, (-mean / std).astype(np.float32)])
    return y


def _flip(layer: FlipLeftRight, x):
    """The mirror image with standard layers: width moved last, times the reversing permutation
    matrix (a Dense without bias), moved back."""
    width = int(x.shape[2])
    x = keras.layers.Permute((1, 3, 2), name=f"{layer.name}_width_last")(x)
    x = combination.fixed_dense(x, np.eye(width, dtype=np.float32)[::-1], name=f"{layer.name}_reverse")
    return keras.layers.Permute((1, 3, 2), name=layer.name)(x)


def _gem(layer: GeneralizedMeanPooling2D, x):
    """GeM with p = 2 with standard layers: for the clipped map x' over L locations, the mean of
    x' * x' / |x'| is |x'| / L, and sqrt(L) times that is sqrt(mean x'^2)."""
    if layer.p != 2:
        raise UserError(f"{layer.name}: GeM pooling with p = {layer.p:g} cannot be written with standard Keras "
                        "layers (p = 2 can): export needs members pooled with p = 2")
    height, width, channels = (int(d) for d in x.shape[1:])
    locations = height * width
    # max(x, eps) = relu(x - eps) + eps
    x = keras.layers.Rescaling(1.0, -layer.eps, name=f"{layer.name}_shift")(x)
    x = keras.layers.ReLU(name=f"{layer.name}_clip")(x)
    x = keras.layers.Rescaling(1.0, layer.eps, name=f"{layer.name}_unshift")(x)
    x = keras.layers.Reshape((locations, channels), name=f"{layer.name}_locations")(x)
    unit = keras.layers.UnitNormalization(axis=1, name=f"{layer.name}_unit")(x)
    x = keras.layers.Multiply(name=f"{layer.name}_square_over_norm")([x, unit])
    x = keras.layers.GlobalAveragePooling1D(name=f"{layer.name}_mean")(x)
    return keras.layers.Rescaling(float(np.sqrt(locations)), name=layer.name)(x)


def _combine(layer: CombineProbabilities, logits: list):
    if layer.space != "logit":
        raise UserError("only logit-space ensembles can be rewritten with standard Keras layers; refit the "
                        "ensemble with --space=logit (prob-space models keep their catdog_tf layer)")
    logits = list(logits)
    masses = logits.pop() if layer.hedge is not None else None
    return combination.combine(combination.LayerOps(layer.name), logits, layer.rule, masses)


def plain_keras(model: keras.Model) -> keras.Model:
    """`model` rebuilt with standard Keras layers only (same weights, same outputs)."""
    has_combine = any(isinstance(layer, CombineProbabilities) for layer in all_layers(model))

    def call(layer, *args, **kwargs):
        if isinstance(layer, ImagePreprocess):
            return _preprocess(layer, args[0])
        if isinstance(layer, CombineProbabilities):
            return _combine(layer, keras.tree.flatten(args[0]))
        if isinstance(layer, FlipLeftRight):
            return _flip(layer, args[0])
        if isinstance(layer, GeneralizedMeanPooling2D):
            return _gem(layer, args[0])
        if has_combine and layer.name == "p_dog" and isinstance(layer, keras.layers.Dense):
            linear = keras.layers.Dense(layer.units, dtype=layer.dtype_policy, name="logit")
            y = linear(*args, **kwargs)
            linear.set_weights(layer.get_weights())
            return y  # the combination takes logits: sigmoid then logit would lose precision
        return layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call, recursive=True)


def decode_image(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """One encoded image -> float32 [size, size, 3]: JPEG through the pipeline's fused decode,
    PNG/GIF/BMP decoded in full then resized as the pipeline resizes (pipeline.resize_decoded)."""
    def jpeg():
        shape = tf.io.extract_jpeg_shape(image_bytes)
        return pipeline.decode_resize(image_bytes, tf.cast(shape[0], tf.int64), tf.cast(shape[1], tf.int64), size)

    def other():
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
        return tf.reshape(pipeline.resize_decoded(image, size), [size, size, 3])

    return tf.cond(tf.strings.substr(image_bytes, 0, 3) == b"\xff\xd8\xff", jpeg, other)


def write_saved_model(model: keras.Model, path: str) -> int:
    """serving_default (image_bytes) and serving_images (float images), through Keras's
    ExportArchive, which tracks every variable the model's graph uses. Returns the input size."""
    size = predictor.input_size(model)

    def p_dog(images):
        return {"p_dog": tf.reshape(tf.cast(model(images, training=False), tf.float32), [-1])}

    def from_bytes(image_bytes):
        images = tf.map_fn(lambda b: decode_image(b, size), image_bytes,
                           fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
        return p_dog(images)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", from_bytes, [tf.TensorSpec([None], tf.string, name="image_bytes")])
    archive.add_endpoint("serving_images", p_dog, [tf.TensorSpec([None, size, size, 3], tf.float32, name="images")])
    archive.write_out(path, verbose=False)
    return size


def litert(saved_model_dir: str, quantize: str = "none") -> bytes:
    """The serving_images signature as a LiteRT flatbuffer; quantize: none | float16 | dynamic."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=["serving_images"])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":  # int8 weights, float activations
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize != "none":
        raise UserError(f"quantize must be none, float16 or dynamic, not {quantize!r}")
    return converter.convert()


def _resizes(model: keras.Model) -> bool:
    return any(isinstance(layer, keras.layers.Resizing) for layer in all_layers(model))


README = """# {name}: exported by `python -m catdog_tf.export`

| file | takes | returns |
| --- | --- | --- |
| `saved_model/` `serving_default` | `image_bytes`: tf.string [N], encoded JPEG, PNG, GIF or BMP of any size | `p_dog`: float32 [N] |
| `saved_model/` `serving_images` | `images`: float32 [N, {size}, {size}, 3], RGB 0..255, already resized (squashed) | `p_dog`: float32 [N] |
{extra}| `model.keras` | float32 [N, {size}, {size}, 3], RGB 0..255 | P(dog), float32 [N, 1]; standard Keras layers only |

P(dog) is the probability that the photo shows a dog (Kaggle's `label`). JPEG bytes are decoded
and resized in the graph exactly as `catdog_tf.predict` does (DCT-scaled decode, then a squash
to {size}x{size}: bilinear, with an area filter where a side shrinks more than 2x); other
formats are decoded in full and resized the same way.

```python
import tensorflow as tf
m = tf.saved_model.load("saved_model")
p = m.signatures["serving_default"](image_bytes=tf.constant([open("cat.jpg", "rb").read()]))["p_dog"]
```

TF Serving: `docker run -p 8501:8501 -v $PWD/saved_model:/models/catdog/1 -e MODEL_NAME=catdog tensorflow/serving`,
then POST `{{"instances": [{{"b64": "<base64 JPEG>"}}]}}` to `http://localhost:8501/v1/models/catdog:predict`.

LiteRT: `interpreter = tf.lite.Interpreter("model.tflite")` (or `ai_edge_litert.interpreter.Interpreter`),
`resize_tensor_input(0, [N, {size}, {size}, 3])`, `allocate_tensors()`, `set_tensor`, `invoke()`, `get_tensor`.
"""


def export(model_path: str, out: str, quantize: tuple[str, ...] = ()) -> dict:
    """Writes DIR's files (see the module doc); returns the report ({} on a worker of a
    multi-worker job that is not its chief: the chief alone writes DIR)."""
    if distribution.not_chief("export", out):
        return {}
    files.check_out(out, "export", {"model": model_path})
    if files.isdir(out) and files.listdir(out) and not files.exists(files.join(out, "export.json")):
        # A run folder, or any folder of the user's: its model.keras or README.md would be replaced.
        raise UserError(f"--out={out}: holds files no export wrote; give a new folder or an earlier export's")
    model = predictor.load_model(model_path)
    plain = plain_keras(model)
    files.makedirs(out)
    # An earlier export's files go first: a LiteRT file or variant this export does not write
    # must not sit beside a new model as if it were its twin.
    for old in ["model.keras", "saved_model", "README.md", "export.json", *map(files.name, files.glob(
            files.join(out, "model*.tflite")))]:
        path = files.join(out, old)
        files.rmtree(path) if files.isdir(path) else files.remove(path)
    # Marks the folder as an export's at once, so an interrupted export can be redone into it.
    files.write_text(files.join(out, "export.json"), json.dumps({"model": model_path, "complete": False}))
    plain.save(files.join(out, "model.keras"))
    saved_model = files.join(out, "saved_model")
    size = write_saved_model(plain, saved_model)
    written = {"model.keras": "keras", "saved_model": "savedmodel"}
    extra = ""
    if _resizes(plain):
        # Members of different input sizes resize with antialiasing (ScaleAndTranslate), an op
        # LiteRT has no kernel for, not even through the Flex delegate.
        print("LiteRT: skipped: this model resizes inside (members of different input sizes), which LiteRT "
              "cannot run; export members of one input size for phones", file=sys.stderr)
        quantize = ()
        extra = "| `model.tflite` | not written: the members resize inside (antialiased), which LiteRT cannot run | |\n"
    else:
        files.write_bytes(files.join(out, "model.tflite"), litert(saved_model))
        written["model.tflite"] = "litert"
        extra = f"| `model.tflite` | float32 [N, {size}, {size}, 3], RGB 0..255 | P(dog), float32 [N, 1] |\n"
    for q in quantize:
        name = f"model_{q}.tflite"
        files.write_bytes(files.join(out, name), litert(saved_model, q))
        written[name] = f"litert {q}"
        extra += f"| `{name}` | as `model.tflite` ({q} weights) | as `model.tflite` |\n"
    files.write_text(files.join(out, "README.md"), README.format(name=model.name, size=size, extra=extra))
    report = {"model": model_path, "input_size": size, "files": written,
              "bytes": {f: files.size(files.join(out, f)) for f in written}}
    files.write_text(files.join(out, "export.json"), json.dumps(report, indent=1))
    return report


def measure(out: str, records_dir: str, split: str, batch_size: int = 32) -> dict:
    """Log loss, accuracy and images/s of every exported model file on a records split (the
    Keras model through predict, each LiteRT file through the interpreter), measured one after
    the other on the same photos; written into export.json."""
    manifest.require_labeled(records_dir, split, use="measuring log loss")
    report = files.read_json(files.join(out, "export.json"), "export report")
    model = predictor.load_model(files.join(out, "model.keras"))
    size = predictor.input_size(model)
    variants = {"model.keras": None, **{f: f for f in sorted(report["files"]) if f.endswith(".tflite")}}
    # Traced once, as predict and serving run it: an eager call of a large graph runs op by op
    # (the three-member ensemble measured 1.9 img/s eagerly, about 10 traced).
    keras_call = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    results = {}
    for name, tfl in variants.items():
        ds = pipeline.make_dataset(records_dir, split, size, batch_size)
        # model_content: the interpreter reads local files only; the bytes come through gfile.
        interp = tf.lite.Interpreter(model_content=files.read_bytes(files.join(out, tfl)),
                                     num_threads=os.cpu_count()) if tfl else None
        ps, ys, t0, warm = [], [], time.perf_counter(), 0
        bar = Progress(manifest.split_count(records_dir, split), f"measure {name}")
        for x, y in ds:
            ps.append(_tflite_batch(interp, x.numpy()) if interp else
                      np.asarray(keras_call(x)).reshape(-1))
            ys.append(y.numpy())
            bar.update(len(ps[-1]))
            if len(ps) == 1 and int(ds.cardinality()) != 1:  # the first batch traces: timed from the 2nd
                t0, warm = time.perf_counter(), len(ps[0])
        y = contracts.labels(np.concatenate(ys), f"{records_dir}:{split}")
        p = contracts.probabilities(np.concatenate(ps), f"{files.join(out, name)} on {records_dir}:{split}")
        results[name] = {"log_loss": metrics.log_loss(y, p), "accuracy": metrics.accuracy(y, p), "count": int(len(y)),
                         "images_per_s": (len(y) - warm) / (time.perf_counter() - t0), "bytes": files.size(files.join(out, name))}
        print(f"{name}: log loss {results[name]['log_loss']:.5f} on {len(y)} photos, "
              f"{results[name]['images_per_s']:.1f} img/s, {results[name]['bytes'] / 2**20:.1f} MB", file=sys.stderr)
    report["measured"] = {"records": records_dir, "split": split, "results": results}
    files.write_text(files.join(out, "export.json"), json.dumps(report, indent=1))
    return report


def measure_side_by_side(outs: list[str], records_dir: str, split: str) -> dict:
    """measure() of every export folder in `outs`, one after the other in this process; the
    first folder's export.json gets the table of all (img/s ratios against its model.keras)."""
    rows = {}
    for out in outs:
        for name, r in measure(out, records_dir, split)["measured"]["results"].items():
            rows[files.join(out, name)] = r
    first = files.join(outs[0], "model.keras")
    for r in rows.values():
        r["speed_vs_first"] = r["images_per_s"] / rows[first]["images_per_s"]
    report = files.read_json(files.join(outs[0], "export.json"), "export report")
    if len(outs) > 1:
        report["side_by_side"] = rows
        files.write_text(files.join(outs[0], "export.json"), json.dumps(report, indent=1))
    return report


def _tflite_batch(interp, x: np.ndarray) -> np.ndarray:
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.ascontiguousarray(x, np.float32))
    interp.invoke()
    return interp.get_tensor(out["index"]).reshape(-1)
