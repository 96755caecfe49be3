"""The book's three networks, each split as ``f = head ∘ features`` (Chapters 6–8).

* :class:`MnistCNN3` — MNIST, three convolutional layers and a linear head (the paper's
  "three-layer CNN"); small enough that one 60,000-image epoch takes seconds on a laptop CPU.
* :class:`CifarCNN4` — CIFAR-10, a plain CNN with four convolutional layers (paper: ≈65%).
* :class:`ResNet8` — CIFAR-10, the ResNet-9 layout of Myrtle.ai's DAWNBench entry: eight
  convolutional layers (two of them in residual blocks) and a linear head; ``width`` sets the
  channels (64 is the original).

Conventions shared by all three: inputs are NCHW in [0, 1] and any mean/std normalisation happens
inside the model; ``forward`` returns logits; ``features(x)`` is the input of the (only) linear
layer — post-ReLU, flattened, so every coordinate is ≥ 0 — and ``head(z)`` is that linear layer, so
``forward(x) == head(features(x))``. Chapter 5 attacks and integrates over ``features``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from . import _checks

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@contextlib.contextmanager
def evaluation(model: nn.Module) -> Iterator[nn.Module]:
    """``with evaluation(model):`` — the model in eval mode inside, every module's mode restored after.

    Restores each submodule's own ``training`` flag (not just the top one), so a model with, say, a
    frozen batch-norm layer in eval mode inside a network in train mode comes back exactly as it
    was; restored also when the block raises. Eval mode makes batch norm use (and not update) its
    running statistics and turns dropout off, so a sample's output depends on that sample alone —
    what attacks (Chapter 2) and the uncertainty estimates (Chapter 5) assume. Yields the model.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes:
            module.training = mode


class Normalize(nn.Module):
    """(x − mean) / std per channel, with the constants stored as buffers (they move with .to())."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class _Split(nn.Module):
    """Base: ``forward = head ∘ features``; subclasses define ``body`` (→ flat features) and ``fc``."""

    num_classes: int
    feature_dim: int
    input_shape: tuple[int, int, int]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] → (N, feature_dim), post-ReLU so ≥ 0.

        Checks dtype and shape only (free; the values are not scanned, this is the hot path):
        integer images are a TypeError, a batch of another shape a ValueError.
        """
        if not torch.is_tensor(x) or not x.is_floating_point():
            _checks.float_batch(x, "x")  # raises the TypeError with the /255 hint
        if x.dim() != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x must be a batch of images (N, {', '.join(map(str, self.input_shape))}) "
                             f"for {type(self).__name__}, got shape {tuple(x.shape)}")
        return self.body(x)

    def head(self, z: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) → logits (N, num_classes): the linear layer."""
        return self.fc(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MnistCNN3(_Split):
    """Three convolutional layers and a linear head for 1×28×28 digits (LeNet-like).

    conv 5×5 (1→c₁) → ReLU → max-pool 2 → conv 5×5 (c₁→c₂) → ReLU → max-pool 2
    → conv 3×3, padding 1 (c₂→c₃) → ReLU → flatten (c₃·4·4 features) → linear → 10 logits.
    Sizes 28 → 24 → 12 → 8 → 4 → 4. Default channels (16, 32, 64): 1,024 features, 42k
    parameters; about 4 s per 60,000-image epoch on two CPU cores, ≈99% test accuracy after
    5 epochs of Adam.
    """

    def __init__(self, channels=(16, 32, 64), num_classes: int = 10):
        super().__init__()
        try:
            c1, c2, c3 = (_checks.integer(c, "channels", low=1) for c in channels)
        except (TypeError, ValueError) as error:
            raise type(error)(f"channels must be three integers ≥ 1, got {channels!r}") from None
        self.input_shape = (1, 28, 28)
        self.num_classes = _checks.integer(num_classes, "num_classes", low=2)
        self.feature_dim = c3 * 4 * 4
        self.body = nn.Sequential(
            Normalize(MNIST_MEAN, MNIST_STD),
            nn.Conv2d(1, c1, 5), nn.ReLU(), nn.MaxPool2d(2),    # 28 → 24 → 12
            nn.Conv2d(c1, c2, 5), nn.ReLU(), nn.MaxPool2d(2),   # 12 → 8 → 4
            nn.Conv2d(c2, c3, 3, padding=1), nn.ReLU(),         # 4 → 4
            nn.Flatten(),
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)


class CifarCNN4(_Split):
    """A plain CNN with four convolutional layers for 3×32×32 images (no batch norm, no skips).

    [conv 3×3 → ReLU] ×2 (3→c → c) → max-pool 2 → [conv 3×3 → ReLU] ×2 (c→2c → 2c) → max-pool 2
    → flatten (2c·8·8 features) → linear → 10 logits. Default c = 32: 4,096 features, 107k parameters.
    """

    def __init__(self, width: int = 32, num_classes: int = 10):
        super().__init__()
        c = _checks.integer(width, "width", low=1)
        self.input_shape = (3, 32, 32)
        self.num_classes = _checks.integer(num_classes, "num_classes", low=2)
        self.feature_dim = 2 * c * 8 * 8
        self.body = nn.Sequential(
            Normalize(CIFAR10_MEAN, CIFAR10_STD),
            nn.Conv2d(3, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                        # 32 → 16
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                        # 16 → 8
            nn.Flatten(),
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    """x + conv_bn(conv_bn(x)): both terms are post-ReLU, so the sum stays ≥ 0."""

    def __init__(self, c: int):
        super().__init__()
        self.inner = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x):
        return x + self.inner(x)


class ResNet8(_Split):
    """ResNet-9-style network (Myrtle.ai / DAWNBench layout) with eight convolutional layers.

    prep conv (3→w) → layer1 conv (w→2w) + pool + residual(2 convs) → layer2 conv (2w→4w) + pool
    → layer3 conv (4w→8w) + pool + residual(2 convs) → global max-pool → flatten (8w features)
    → linear → 10 logits. Every conv is 3×3 followed by batch norm and ReLU. ``width`` w = 64 is the
    original (6.6M parameters; w = 8 has 104k); smaller widths train faster on a CPU. The published runs record w.
    """

    def __init__(self, width: int = 64, num_classes: int = 10):
        super().__init__()
        w = _checks.integer(width, "width", low=1)
        self.input_shape = (3, 32, 32)
        self.width, self.feature_dim = w, 8 * w
        self.num_classes = _checks.integer(num_classes, "num_classes", low=2)
        self.body = nn.Sequential(
            Normalize(CIFAR10_MEAN, CIFAR10_STD),
            _conv_bn(3, w),
            _conv_bn(w, 2 * w, pool=True), _Residual(2 * w),        # 32 → 16
            _conv_bn(2 * w, 4 * w, pool=True),                      # 16 → 8
            _conv_bn(4 * w, 8 * w, pool=True), _Residual(8 * w),    # 8 → 4
            nn.AdaptiveMaxPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(self.feature_dim, num_classes)
