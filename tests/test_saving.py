"""argml.model.saving: a `.keras` file whose bytes depend on the model only, and that loads as Keras wrote it."""

from __future__ import annotations

import json
import re
import zipfile

import numpy as np

from argml.model import saving


def small_model(seed: int):
    """Two Dense layers that share one dtype policy object: Keras links them in config.json by that object's
    id(), which differs between two models (and two processes)."""
    import keras

    keras.utils.set_random_seed(seed)
    policy = keras.DTypePolicy("float32")
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, dtype=policy, name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, dtype=policy, name="out")(hidden), name="small")


def test_the_same_weights_give_the_same_bytes_and_the_file_loads(tmp_path):
    import keras

    first, second = small_model(0), small_model(0)
    plain = tmp_path / "plain.keras"
    first.save(plain)
    with zipfile.ZipFile(plain) as archive:
        ids = set(re.findall(rb'"shared_object_id": (\d+)', archive.read("config.json")))
    assert len(ids) == 1 and int(next(iter(ids))) > 1000  # a memory address, so the plain files differ

    paths = [saving.save_model(model, tmp_path / f"{name}.keras") for name, model in (("a", first), ("b", second))]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with zipfile.ZipFile(paths[0]) as archive:
        assert {info.date_time for info in archive.infolist()} == {saving.ZIP_EPOCH}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
        assert b'"shared_object_id": 1' in archive.read("config.json")
    loaded = keras.saving.load_model(paths[0], safe_mode=True)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), first.predict(x, verbose=0))
