"""Spatial sizes of the CNN's feature maps, apart from the network itself.

The params schema checks these sizes for every stage, so they live in a module of their own: an edit to the
networks in models.py then reruns only the stages that build or load a network, not every stage.
"""

from __future__ import annotations

SIDE = 28


def conv_out(size: int, kernel_size: int, stride: int) -> int:
    """Spatial size after a Conv2d with padding kernel_size // 2."""
    return (size + 2 * (kernel_size // 2) - kernel_size) // stride + 1


def cnn_feature_side(*, kernel_size: int, stride: int, n_blocks: int, convs_per_block: int = 1) -> int:
    """Side of the last feature map; <= 0 means the kernel/stride combination leaves no spatial output."""
    side = SIDE
    for i in range(n_blocks):
        for j in range(convs_per_block):
            side = conv_out(side, kernel_size, stride if i == j == 0 else 1)
            if side <= 0:
                return 0
        side //= 2
    return side
