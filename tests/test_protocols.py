"""The report's protocols: what deduplication removed, and which test rows leak, on hand-made tables."""

import pandas as pd

from argml.evaluation import protocols


def scanned_table():
    rows = [("a.jpg", "m1", 20), ("a_copy.jpg", "m1", 20),  # a byte-identical copy of a kept image
            ("b.jpg", "m2", 30), ("b_other.jpg", "m2", 31),  # same bytes, other labels: the group is dropped
            ("c.jpg", "m3", 40)]
    table = pd.DataFrame(rows, columns=["file", "md5", "age"]).assign(gender=0, race=0)
    return table.assign(age_bin=0, age_class=table["age"] - 1)


def test_extra_copies_finds_copies_of_kept_images_and_the_conflicting_groups():
    scanned = scanned_table()
    kept = scanned[scanned["file"].isin(["a.jpg", "c.jpg"])]
    copies, conflicting = protocols.extra_copies(scanned, kept, seed=0)
    assert copies[["file", "twin"]].values.tolist() == [["a_copy.jpg", "a.jpg"]]
    assert sorted(conflicting["file"]) == ["b.jpg", "b_other.jpg"]


def test_a_sample_keeps_its_share_of_the_conflicting_groups():
    scanned = scanned_table()
    _, conflicting = protocols.extra_copies(scanned, scanned[scanned["file"] == "a.jpg"], seed=0)
    assert conflicting.empty  # one kept image of the two deduplicated ones: half of one group rounds to none


def test_leaked_test_faces_counts_test_rows_whose_source_trains():
    pool = pd.DataFrame({"file": ["x", "aug-race-00000-x", "y", "y_copy", "z"],
                         "source": ["x", "x", "y", "y", "z"],
                         "split": ["test", "train", "test", "test", "train"]})
    assert protocols.leaked_test_faces(pool) == 1  # x: its augmented copy trains; y's copy is also in test
