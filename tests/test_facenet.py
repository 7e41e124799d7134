"""FaceNet in Keras against the original frozen graph, save/load, the VGGFace2 import and the split."""

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
keras = pytest.importorskip("keras")

from argml.model import facenet  # noqa: E402
from argml.data.faces import FaceAligner, decode_image  # noqa: E402

UTKFACE = os.environ.get("ARGML_UTKFACE", "")
needs_utkface = pytest.mark.skipif(not Path(UTKFACE).is_dir(), reason="ARGML_UTKFACE is not set to the UTKFace folder")


@pytest.fixture(scope="module")
def model():
    return facenet.load_facenet()


@pytest.fixture(scope="module")
def faces():
    """16 aligned real faces of different people (every 1,000th file of the sorted set)."""
    names = sorted(os.listdir(UTKFACE))[::1000][:16]
    aligner = FaceAligner(size=facenet.INPUT_SIZE)
    return np.stack([aligner.align_dataset_image(decode_image((Path(UTKFACE) / n).read_bytes()).rgb)[0]
                     for n in names])


def frozen_graph_embeddings(images: np.ndarray) -> np.ndarray:
    """The original graph, run by TensorFlow one image at a time (its batch size of 1 is baked in)."""
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(facenet.casia_graph_path().read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as session:
        return np.concatenate([session.run("embeddings:0", {"input:0": ((image - 127.5) / 128)[None]})
                               for image in images.astype(np.float32)])


@needs_utkface
def test_keras_port_equals_the_frozen_graph(model, faces):
    ours = model.predict(faces, verbose=0)
    reference = frozen_graph_embeddings(faces)
    assert ours.shape == (16, 512)
    cosine = np.sum(ours * reference, axis=1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.9999, cosine
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # different people: clearly different embeddings
    similarity = ours @ ours.T
    off_diagonal = similarity[~np.eye(16, dtype=bool)]
    assert off_diagonal.max() < 0.9, off_diagonal.max()


@needs_utkface
def test_uint8_and_float_inputs_agree(model, faces):
    np.testing.assert_allclose(model.predict(faces, verbose=0), model.predict(faces.astype("float32"), verbose=0),
                               atol=1e-6)


@needs_utkface
def test_keras_file_round_trip_in_safe_mode(model, faces, tmp_path):
    path = tmp_path / "facenet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(faces[:4], verbose=0), model.predict(faces[:4], verbose=0))
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)


def test_named_outputs_and_block_shapes(model):
    assert model.get_layer("pooled").output.shape[-1] == 1792
    assert model.get_layer("Bottleneck.BatchNorm").output.shape[-1] == 512
    for block, shape in facenet.BLOCK_OUTPUT_SHAPES.items():
        assert tuple(model.get_layer(facenet.block_output_layer(model, block)).output.shape[1:]) == shape
    assert len([layer for layer in model.layers if facenet.is_convolution(layer)]) == 132  # as the graph
    pointwise = model.get_layer("Repeat_2.block8_5.Conv2d_1x1")  # a 1x1 convolution: a Dense layer
    assert isinstance(pointwise, keras.layers.Dense) and facenet.conv_kernel(pointwise).shape == (1, 1, 384, 1792)


@needs_utkface
def test_split_lower_then_upper_equals_whole(model, faces):
    lower, upper = facenet.split(model, "Mixed_7a")
    cached = lower.predict(faces[:4], verbose=0)
    assert cached.shape == (4, 8, 8, 896)
    np.testing.assert_allclose(upper.predict(cached, verbose=0), model.predict(faces[:4], verbose=0), atol=1e-5)


def test_set_trainable_from_a_block(model):
    clone = facenet.build()
    facenet.set_trainable_from(clone, "Mixed_7a")
    trainable = {layer.name for layer in clone.layers if layer.trainable}
    assert "Mixed_7a.Branch_0.Conv2d_0a_1x1" in trainable and "Bottleneck" in trainable
    assert "Repeat_1.block17_10.Conv2d_1x1" not in trainable and "Conv2d_1a_3x3" not in trainable
    facenet.set_trainable_from(clone, None)
    assert not clone.trainable_weights
    with pytest.raises(ValueError, match="unknown FaceNet block 'Mixed_9z'"):
        facenet.set_trainable_from(clone, "Mixed_9z")


def unfolded_state_dict(model, rng) -> dict:
    """A facenet-pytorch style state dict (conv without bias + BatchNorm with made-up statistics) that,
    folded, gives exactly `model`'s weights: what importing the VGGFace2 file must undo."""
    state = {}
    for keras_name, prefix in facenet.torch_module_names(model).items():
        layer = model.get_layer(keras_name)
        kernel, bias = facenet.conv_kernel(layer), layer.get_weights()[1]
        oihw = np.transpose(kernel, (3, 2, 0, 1))
        if prefix.endswith(".conv2d"):
            state[f"{prefix}.weight"], state[f"{prefix}.bias"] = oihw, bias
            continue
        channels = bias.shape[0]
        gamma = rng.uniform(0.5, 1.5, channels).astype(np.float32)
        mean = rng.normal(0, 0.5, channels).astype(np.float32)
        var = rng.uniform(0.5, 2.0, channels).astype(np.float32)
        scale = gamma / np.sqrt(var + facenet.BN_EPSILON)
        state[f"{prefix}.conv.weight"] = oihw / scale[:, None, None, None]
        state.update({f"{prefix}.bn.weight": gamma, f"{prefix}.bn.bias": bias + mean * scale,
                      f"{prefix}.bn.running_mean": mean, f"{prefix}.bn.running_var": var,
                      f"{prefix}.bn.num_batches_tracked": np.array(1)})
    (dense,) = model.get_layer("Bottleneck").get_weights()
    state["last_linear.weight"] = dense.T
    for part, value in zip(("weight", "bias", "running_mean", "running_var"),
                           model.get_layer("Bottleneck.BatchNorm").get_weights()):
        state[f"last_bn.{part}"] = value
    state["logits.weight"] = rng.normal(size=(10, 512)).astype(np.float32)  # classifier head: ignored
    return state


def test_torch_module_names_follow_facenet_pytorch(model):
    names = facenet.torch_module_names(model)
    assert names["Conv2d_4b_3x3"] == "conv2d_4b"
    assert names["Repeat.block35_1.Branch_2.Conv2d_0c_3x3"] == "repeat_1.0.branch2.2"
    assert names["Repeat_1.block17_10.Branch_0.Conv2d_1x1"] == "repeat_2.9.branch0"
    assert names["Mixed_6a.Branch_0.Conv2d_1a_3x3"] == "mixed_6a.branch0"
    assert names["Mixed_7a.Branch_0.Conv2d_1a_3x3"] == "mixed_7a.branch0.1"
    assert names["Repeat_2.block8_5.Conv2d_1x1"] == "repeat_3.4.conv2d"
    assert names["Block8.Branch_1.Conv2d_0c_3x1"] == "block8.branch1.2"


def test_vggface2_state_dict_import_folds_batch_norm(model, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    state = unfolded_state_dict(model, rng)
    path = tmp_path / "20180402-114759-vggface2.pt"
    torch.save({key: torch.from_numpy(np.asarray(value)) for key, value in state.items()}, path)

    monkeypatch.setenv("ARGML_CACHE", str(tmp_path / "cache"))
    imported = facenet.load_facenet(str(path))
    images = rng.integers(0, 256, size=(3, 160, 160, 3)).astype("uint8")
    np.testing.assert_allclose(imported.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-4)
    assert list((tmp_path / "cache").glob("*.weights.h5")), "converted weights are cached"

    del state["repeat_2.3.branch1.1.bn.running_var"]
    with pytest.raises(KeyError, match="repeat_2.3.branch1.1.bn.running_var"):
        facenet.load_torch_state_dict(facenet.build(), state)


def test_missing_weights_file_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="vggface2.pt"):
        facenet.load_facenet("/nonexistent/weights.pt")
