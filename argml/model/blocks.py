"""FaceNet's block names and weight names, without Keras: what the params stage checks before any stage runs
(importing Keras would cost it several seconds). argml.model.facenet builds the blocks."""

from __future__ import annotations

from argml.core.errors import BadInput

CASIA_WEBFACE = "casia-webface"

# Blocks in order; each builds onto the previous one's output. The name is the prefix of its layers.
BLOCKS = (
    ["stem"]  # 160x160x3 -> 17x17x256
    + [f"Repeat.block35_{i}" for i in range(1, 6)]  # 17x17x256
    + ["Mixed_6a"]  # Reduction-A: 8x8x896
    + [f"Repeat_1.block17_{i}" for i in range(1, 11)]  # 8x8x896
    + ["Mixed_7a"]  # Reduction-B: 3x3x1792
    + [f"Repeat_2.block8_{i}" for i in range(1, 6)]  # 3x3x1792
    + ["Block8"]  # 3x3x1792, scale 1 and no ReLU
    + ["Bottleneck"]  # average pool -> pooled 1792 -> 512 -> BatchNorm -> L2 -> embeddings
)


def block_index(block: str) -> int:
    if block not in BLOCKS:
        raise BadInput(f"unknown FaceNet block {block!r}; blocks are {', '.join(BLOCKS)}")
    return BLOCKS.index(block)
