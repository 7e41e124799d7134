"""Stage leakage: how many test faces have a near-twin in the training split, and what they do to the metrics.

Reads FEATURES_DIR (the cached FaceNet inputs, head features and labels), RAW_DIR and SPLIT_TABLE (for the
byte-identical copies the labels stage removed), ALIGNED_DIR and each mode's REPORTS/<mode>/predictions.csv;
writes OUT_JSON (the near-twin audit, and 9-bin age under the report's protocols, see
argml.evaluation.protocols), the per-face table OUT_CSV and a contact sheet OUT_PNG. Params: leakage.*, and
data, align, augment and train for the protocols' splits, copies and heads. The embeddings come from the cached
head features; FaceNet's passes over the protocols' new images run in features.precision, as in the features
stage. The published split is not changed.
"""

import argparse
import sys
from pathlib import Path

import pandas as pd

from argml.core.config import load_params
from argml.core.errors import stage
from argml.core.files import atomic_path, write_json
from argml.core.labels import AGE_MODES
from argml.evaluation import leakage, protocols
from argml.model import precision


@stage("leakage")
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("features_dir", "raw_dir", "split_table", "aligned_dir", "reports", "out_json", "out_csv",
                 "out_png"):
        parser.add_argument(name)
    args = parser.parse_args()
    all_params = load_params()
    params = all_params.leakage

    facenet_precision = precision.resolve(all_params.features.precision)
    model = leakage.embedding_model(args.features_dir)
    train_embeddings, train_labels = leakage.embed(model, args.features_dir, "train", params.batch_size)
    test_embeddings, test_labels = leakage.embed(model, args.features_dir, "test", params.batch_size)
    to_source = leakage.copy_cosines(train_embeddings, train_labels["file_name"], train_labels["variant"])
    neighbours = leakage.test_neighbours(test_embeddings, test_labels, train_embeddings, train_labels)
    predictions = {mode: pd.read_csv(Path(args.reports) / mode / "predictions.csv") for mode in AGE_MODES}
    report, neighbours = leakage.audit(neighbours, to_source, params.twin_quantile, predictions)
    with precision.mixed_bfloat16(facenet_precision):
        pools, vectors, counts = protocols.build_pools(args.features_dir, args.raw_dir, args.split_table,
                                                       args.aligned_dir, all_params.data, all_params.align,
                                                       all_params.augment, params.batch_size)
    report["protocols"] = {**counts, **protocols.compare(pools, vectors, all_params.train, params.protocol_epochs,
                                                         params.batch_size)}

    with atomic_path(args.out_png) as staging:
        leakage.contact_sheet(leakage.sheet_examples(neighbours, params.examples), args.aligned_dir, staging)
    with atomic_path(args.out_csv) as staging:
        neighbours.sort_values("cosine", ascending=False).to_csv(staging, index=False, float_format="%.5f")
    write_json(args.out_json, report)
    print(f"leakage: {report['near_twins']} of {report['test_faces']} test faces have a near-twin in training "
          f"(cosine >= {report['threshold']['cosine']:.4f}, the {params.twin_quantile:g} quantile of "
          "copy-to-source cosines)")
    print("leakage: 9-bin age (frozen-feature heads) by protocol: " + ", ".join(
        f"{name} {report['protocols'][name]['age_accuracy']:.3f}" for name in protocols.PROTOCOLS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
