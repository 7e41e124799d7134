"""`python -m argml.audit.labelled MODEL_DIR TFRECORDS_DIR --split val|test --out FILE.npz`: a Keras model's
answers on a split of the pipeline's TFRecords, with the faces' true labels, in the layout of validation.npz
(argml.model.train.save_validation).

Training writes validation.npz itself; this command is for models trained before it did (their validation
answers, for `argml audit --validation`), and for the test split the correction table draws from
(argml.audit.proof). It reads MODEL_DIR/model.keras and model.json and the split's original faces (the
balancing copies are training-only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from argml.core.errors import command
from argml.core.files import atomic_path

SPLITS = ("val", "test")


def write(model_dir: str | Path, tfrecords_dir: str | Path, split: str, out: str | Path, batch_size: int = 64) -> int:
    """Write the model's answers on `split` to `out`; -> the number of faces."""
    from argml.core.card import ModelCard
    from argml.data import tfrecords
    from argml.evaluation import metrics
    from argml.model.train import save_validation
    from argml.serving.classifier import Classifier

    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    model_dir = Path(model_dir)
    card = ModelCard.load(model_dir)
    classifier = Classifier(model_dir / "model.keras", card)
    dataset = tfrecords.load_dataset(tfrecords_dir, split, card.mode, batch_size, shuffle=False, with_meta=True)
    probabilities, labels = metrics.predict(classifier.model, dataset)
    with atomic_path(out) as staging, open(staging, "wb") as handle:  # a handle: numpy adds .npz to a name
        save_validation(handle, probabilities, labels)
    return len(labels["race"])


@command("audit.labelled")
def main(argv: list[str] | None = None, prog: str = "python -m argml.audit.labelled") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a trained model's folder (model.keras, model.json)")
    parser.add_argument("tfrecords_dir", help="the pipeline's data/tfrecords")
    parser.add_argument("--split", default="val", choices=SPLITS)
    parser.add_argument("--out", required=True, help="the .npz to write")
    args = parser.parse_args(argv)
    faces = write(args.model_dir, args.tfrecords_dir, args.split, args.out)
    print(f"audit.labelled: the model's answers on {faces} {args.split} faces -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
