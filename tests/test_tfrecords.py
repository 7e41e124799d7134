"""argml.data.tfrecords: sharded records + manifest from real aligned faces, and the tf.data pipeline reading them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from argml.core import labels
from argml.core.labels import VARIANTS, AgeMode
from argml.data import augment, tfrecords, utkface

SHARD_SIZE = 10


@pytest.fixture(scope="module")
def written(aligned_sample, tmp_path_factory):
    """The tfrecords stage on 40 real aligned faces + their augmented copies, with shards of 10 examples.

    Returns (examples table, records folder). One split-table row has no aligned image (as if unreadable).
    """
    split_table, aligned_dir = aligned_sample
    split_table = split_table.drop(columns="path")
    train = utkface.with_files(split_table[split_table["split"] == "train"], aligned_dir)
    planned = augment.plan(train, race_target=1.0, exact_age_target=0.5, seed=7)
    assert set(planned["purpose"]) == {"race", "exact_age"}
    augmented = tmp_path_factory.mktemp("augmented")
    augment.make_images(planned, aligned_dir, augmented, max_angle=10, noise_sigma=8)
    planned.to_csv(augmented / "index.csv", index=False)

    missing = split_table.iloc[[0]].assign(file="1_0_0_20990101000000000.jpg.chip.jpg", md5="0" * 32)
    examples = tfrecords.examples_table(pd.concat([split_table, missing]), aligned_dir, augmented)
    assert missing["file"].iloc[0] not in set(examples["file"])
    assert len(examples) == len(split_table) + len(planned)

    out = tmp_path_factory.mktemp("tfrecords")
    manifest = tfrecords.write_all(examples, out, SHARD_SIZE)
    assert manifest == tfrecords.read_manifest(out)
    return examples, out


def test_manifest_counts_equal_the_table(written):
    examples, folder = written
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["shard_size"] == SHARD_SIZE
    assert set(manifest["splits"]) == set(labels.SPLITS)
    for split in labels.SPLITS:
        rows = examples[examples["split"] == split]
        info = manifest["splits"][split]
        assert info["examples"] == len(rows) > 0
        for name, code in VARIANTS.items():
            assert info["per_variant"][name] == int((rows["variant"] == code).sum()), (split, name)
        assert len(info["shards"]) == max(1, -(-len(rows) // SHARD_SIZE))
        assert all((folder / shard).is_file() for shard in info["shards"])
    assert manifest["splits"]["train"]["per_variant"]["exact_age"] > 0
    assert manifest["splits"]["val"]["per_variant"] == {"original": len(examples[examples["split"] == "val"]),
                                                         "race": 0, "exact_age": 0}
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["manifest.json"] + [s for info in manifest["splits"].values() for s in info["shards"]])


def test_records_hold_the_exact_file_bytes(written):
    examples, folder = written
    tf = tfrecords._tf()
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "file": tf.io.FixedLenFeature([], tf.string)}
    shards = [str(p) for p in sorted(folder.glob("*.tfrecord"))]
    seen = {}
    for record in tf.data.TFRecordDataset(shards):
        parsed = tf.io.parse_single_example(record, spec)
        seen[parsed["file"].numpy().decode()] = parsed["image"].numpy()
    assert len(seen) == len(examples)
    for row in examples.itertuples():
        assert seen[row.file] == open(row.path, "rb").read(), row.file


def test_batches_are_uint8_images_and_dict_targets(written):
    _, folder = written
    dataset = tfrecords.load_dataset(folder, "train", AgeMode.of("binned"), batch_size=8)
    images, targets = next(iter(dataset))
    assert images.dtype.name == "uint8"
    assert tuple(images.shape) == (8, 160, 160, 3)
    assert set(targets) == {"age", "race", "gender"}
    assert all(tuple(value.shape) == (8,) for value in targets.values())
    spec_images, _ = dataset.element_spec  # decode_jpeg leaves height and width dynamic; rank and channels are fixed
    assert spec_images.shape.as_list()[0] is None and spec_images.shape.as_list()[3] == 3
    assert spec_images.dtype.name == "uint8"


@pytest.mark.parametrize("mode", ["binned", "exact"])
@pytest.mark.parametrize("split", labels.SPLITS)
def test_count_agrees_with_iterating(written, split, mode):
    examples, folder = written
    dataset = tfrecords.load_dataset(folder, split, AgeMode.of(mode), batch_size=7)
    iterated = sum(int(images.shape[0]) for images, _ in dataset)
    assert iterated == tfrecords.count(folder, split, AgeMode.of(mode))
    rows = examples[examples["split"] == split]
    if mode == "binned":
        rows = rows[rows["variant"] != VARIANTS["exact_age"]]
    assert iterated == len(rows)


def test_binned_excludes_exact_age_copies_and_exact_keeps_them(written):
    examples, folder = written
    train = examples[examples["split"] == "train"]
    binned = tfrecords.stack_labels(tfrecords.load_dataset(folder, "train", AgeMode.of("binned"), with_meta=True))
    exact = tfrecords.stack_labels(tfrecords.load_dataset(folder, "train", AgeMode.of("exact"), with_meta=True))
    binned_files = {f.decode() for f in binned["file"]}
    exact_files = {f.decode() for f in exact["file"]}
    assert exact_files == set(train["file"])
    assert binned_files == set(train.loc[train["variant"] != VARIANTS["exact_age"], "file"])
    assert all(f.startswith("aug-exact_age-") for f in exact_files - binned_files)
    assert exact_files - binned_files


@pytest.mark.parametrize("mode", ["binned", "exact"])
@pytest.mark.parametrize("split", labels.SPLITS)
def test_labels_read_back_equal_the_table(written, split, mode):
    examples, folder = written
    got = tfrecords.stack_labels(tfrecords.load_dataset(folder, split, AgeMode.of(mode), batch_size=5, with_meta=True))
    back = pd.DataFrame({key: value for key, value in got.items()})
    back["file"] = back["file"].map(bytes.decode)
    assert back["file"].is_unique
    rows = examples[examples["split"] == split]
    if mode == "binned":
        rows = rows[rows["variant"] != VARIANTS["exact_age"]]
    merged = rows.merge(back, on="file", suffixes=("", "_read"), validate="one_to_one")
    assert len(merged) == len(rows) == len(back)
    age_column = "age_bin" if mode == "binned" else "age_class"
    assert (merged["age_read"] == merged[age_column]).all()
    assert (merged["age_years"] == merged["age"]).all()
    assert (merged["age_bin_read"] == merged["age_bin"]).all()
    assert (merged["race_read"] == merged["race"]).all()
    assert (merged["gender_read"] == merged["gender"]).all()


def test_held_out_splits_are_not_shuffled_and_train_is(written):
    _, folder = written
    order = lambda split, **kw: [f.decode() for f in tfrecords.stack_labels(  # noqa: E731
        tfrecords.load_dataset(folder, split, batch_size=4, with_meta=True, **kw))["file"]]
    assert order("test") == order("test")
    assert order("train", seed=1) != order("train", seed=2)
    assert sorted(order("train", seed=1)) == sorted(order("train", seed=2))


def test_bad_split_or_mode_raises(written):
    _, folder = written
    with pytest.raises(ValueError):
        tfrecords.load_dataset(folder, "holdout")
    with pytest.raises(ValueError):
        tfrecords.load_dataset(folder, "train", mode=AgeMode.of("years"))


def test_missing_manifest_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro tfrecords"):
        tfrecords.read_manifest(tmp_path)


def test_same_examples_give_the_same_bytes_in_any_process(written, tmp_path):
    """Protobuf maps serialise in hash order unless asked not to; Python salts string hashes per process,
    so two runs of the stage must still write identical shards (or DVC reruns everything downstream)."""
    import os
    import subprocess
    import sys

    examples, out = written
    examples.to_pickle(tmp_path / "examples.pkl")
    script = ("import sys, pandas as pd; from argml.data import tfrecords; "
              "tfrecords.write_all(pd.read_pickle(sys.argv[1]), sys.argv[2], 10)")
    for seed in ("1", "2"):
        target = tmp_path / seed
        target.mkdir()
        subprocess.run([sys.executable, "-c", script, str(tmp_path / "examples.pkl"), str(target)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    shards = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert shards == sorted(p.name for p in out.iterdir())
    for name in shards:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name


@pytest.mark.parametrize("from_block", ["Mixed_6a", "Repeat_1.block17_6", "Mixed_7a"])
def test_a_feature_cache_from_any_block_gives_the_full_models_outputs(written, from_block, tmp_path):
    """The features stage's float16 cache of a block's input, run through FaceNet from that block, gives the
    whole model's embeddings and pooled features on the same faces (to float16 tolerance)."""
    import numpy as np

    from argml.model import facenet
    from argml.model import features

    _, records = written
    info = features.cache_all(records, tmp_path, from_block, "pooled", batch_size=16)
    assert list(info.lower_shape) == list(facenet.block_input_shape(from_block))
    model = facenet.load_facenet()
    _, upper = facenet.split(model, from_block)
    cached = np.load(tmp_path / "val.lower.npy")
    assert cached.dtype == np.float16
    dataset = tfrecords.load_dataset(records, "val", AgeMode.of("exact"), batch_size=64, shuffle=False, with_meta=True)
    images = np.concatenate([batch for batch, _ in dataset.as_numpy_iterator()])
    assert len(images) == len(cached) > 0
    whole = facenet.feature_model(model, "embeddings").predict(images, verbose=0)
    from_cache = facenet.feature_model(upper, "embeddings").predict(cached.astype(np.float32), verbose=0)
    np.testing.assert_allclose(from_cache, whole, atol=5e-3)
    pooled = facenet.feature_model(model, "pooled").predict(images, verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "val.pooled.npy"), pooled, rtol=1e-2, atol=1e-2)


def test_the_protocols_encode_new_faces_as_the_cache_holds_the_heads_input(written, tmp_path):
    """With bottleneck heads, the report's protocols read the cached 512-d features and encode the faces they
    add (label-conflicting images, copies of held-out faces) the same way."""
    import numpy as np

    from argml.model import facenet
    from argml.model import features
    from argml.evaluation import protocols

    _, records = written
    features.cache_all(records, tmp_path, "Mixed_7a", "bottleneck", batch_size=16)
    cached = protocols.head_arrays(tmp_path)["val"]
    assert cached.shape[1] == 512
    dataset = tfrecords.load_dataset(records, "val", AgeMode.of("exact"), batch_size=64, shuffle=False, with_meta=True)
    images = np.concatenate([batch for batch, _ in dataset.as_numpy_iterator()])
    encoder = protocols.HeadFeatures(facenet.CASIA_WEBFACE, "bottleneck", batch_size=3)
    np.testing.assert_allclose(encoder(iter(images), len(images), "val"), cached, rtol=1e-2, atol=1e-2)


@pytest.fixture(scope="module")
def mirrored_cache(written, tmp_path_factory):
    from argml.model import features

    _, records = written
    out = tmp_path_factory.mktemp("mirrored_cache")
    info = features.cache_all(records, out, "Mixed_7a", "pooled", batch_size=16, mirror_train=True)
    return info, out


def test_the_mirrored_cache_holds_the_block_inputs_of_the_mirrored_training_images(written, mirrored_cache):
    """features.mirror_train: the training split's images, mirrored, run through FaceNet's frozen layers in the
    same pass; the held-out splits get no mirror."""
    import numpy as np

    from argml.model import facenet
    from argml.model import features

    _, records = written
    info, cache = mirrored_cache
    assert info.mirror_train is True
    assert sorted(path.name for path in cache.glob("*.mirrored.lower.npy")) == ["train.mirrored.lower.npy"]
    mirrored, original = np.load(cache / "train.mirrored.lower.npy"), np.load(cache / "train.lower.npy")
    assert mirrored.shape == original.shape and mirrored.dtype == np.float16
    dataset = tfrecords.load_dataset(records, "train", AgeMode.of("exact"), batch_size=64, shuffle=False, with_meta=True)
    images = np.concatenate([batch for batch, _ in dataset.as_numpy_iterator()])
    lower, _ = facenet.split(facenet.load_facenet(), "Mixed_7a")
    expected = lower.predict(images[:, :, ::-1], verbose=0)
    np.testing.assert_allclose(mirrored.astype(np.float32), expected, rtol=1e-2, atol=1e-2)
    assert np.abs(mirrored.astype(np.float32) - original).mean() > 10 * np.abs(mirrored - expected).mean()
    assert features.load_split(cache, "train", AgeMode.of("binned"))["mirrored"] is not None
    assert features.load_split(cache, "val", AgeMode.of("binned"))["mirrored"] is None


def test_training_batches_read_each_example_once_per_epoch_from_its_original_or_its_mirror(mirrored_cache):
    import numpy as np

    from argml.model import features
    from argml.model.train import CachedBatches

    _, cache = mirrored_cache
    split = features.load_split(cache, "train", AgeMode.of("exact"))
    batches = CachedBatches(split["lower"], split["index"], split["targets"], 8, shuffle=True,
                            mirrored=split["mirrored"])
    flips = []
    for _ in range(2):
        inputs = np.concatenate([batches[i][0] for i in range(len(batches))])
        races = np.concatenate([batches[i][1]["race"] for i in range(len(batches))])
        positions = batches.order
        rows = np.concatenate([np.sort(positions[start:start + 8]) for start in range(0, len(positions), 8)])
        from_original = (inputs == split["lower"][split["index"][rows]]).all(axis=(1, 2, 3))
        from_mirror = (inputs == split["mirrored"][split["index"][rows]]).all(axis=(1, 2, 3))
        assert (from_original ^ from_mirror).all()  # exactly one of the two, for every example
        assert sorted(rows) == list(range(len(split["index"])))  # every example once
        np.testing.assert_array_equal(races, split["targets"]["race"][rows])
        assert 0 < from_mirror.sum() < len(rows)
        flips.append(from_mirror[np.argsort(rows)])
        batches.on_epoch_end()
    assert (flips[0] != flips[1]).any()  # drawn again every epoch
    with pytest.raises(ValueError, match="shuffle"):
        CachedBatches(split["lower"], split["index"], split["targets"], 8, shuffle=False, mirrored=split["mirrored"])
