"""The training loop and the two accuracies the book reports (Chapters 2 and 6–8).

:func:`train` is plain mini-batch Adam on the mean cross-entropy (no label smoothing, no
augmentation), with its own ``torch.Generator`` for shuffling so that, given the same
initial weights, a CPU run is repeatable for a seed. A per-epoch callback lets later chapters
record metrics (test accuracy, robust accuracy, Δx, Δp) without touching the loop.
:func:`accuracy` and :func:`robust_accuracy` evaluate in eval mode and restore the model's mode.

Bad input (``qnnlib._checks``): x must be a non-empty, finite floating-point tensor (uint8
images are a TypeError: divide by 255), y integer labels in 0..K−1 for the model's K outputs,
settings finite numbers in range (Python or NumPy); a run whose loss turns NaN or inf stops with
``FloatingPointError`` at the end of that epoch instead of returning NaN weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import _checks, attacks
from .models import evaluation


@dataclass(frozen=True)
class TrainHistory:
    """What :func:`train` did: settings and one entry per epoch (index 0 is epoch 1)."""

    epochs: int
    batch_size: int
    lr: float
    seed: int
    device: str
    dataset: str
    train_loss: tuple = field(default_factory=tuple)
    train_acc: tuple = field(default_factory=tuple)
    seconds: tuple = field(default_factory=tuple)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Image batches (N, C, H, W) in channels-last memory layout, anything else unchanged.

    oneDNN's CPU convolutions are markedly faster on channels-last tensors (ResNet8 training
    1.5×, PGD 1.3× on two cores, measured in ``benchmarks/bench_epoch.py``); the values are the
    same in either layout.
    """
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def eval_batch_size(device, *, attack: bool) -> int:
    """Default batch for evaluation: small on a CPU, where large batches fall out of cache.

    Measured on two CPU cores (CifarCNN4): a forward pass over 10,000 images takes 2.3 s in
    batches of 128 but 7.2 s in batches of 1,000; PGD is fastest in batches of 64. GPUs want
    large batches.
    """
    if torch.device(device).type == "cpu":
        return 64 if attack else 128
    return 500 if attack else 1000


def _tensors(data):
    """Accept a :class:`qnnlib.data.Dataset` or an ``(x, y)`` pair; return x, y, identity."""
    if hasattr(data, "x") and hasattr(data, "y"):
        return data.x, data.y, getattr(data, "identity", "tensors")
    try:
        x, y = data
    except (TypeError, ValueError):
        raise TypeError("data must be a qnnlib.data.Dataset or an (x, y) pair of tensors") from None
    return x, y, "tensors"


def _check_data(x, y) -> tuple[int, int]:
    """x finite float (N, ...), y int labels (N,) ≥ 0; returns y's (min, max)."""
    _checks.float_batch(x, "x")
    return _checks.labels(y, "y", n=x.shape[0])


def train(model, data, *, epochs: int, batch_size: int = 128, lr: float = 1e-3, seed: int,
          device="cpu", on_epoch=None, progress: bool = True, adv_eps: float = 0.0, adv_alpha: float = 0.0,
          adv_steps: int = 0) -> TrainHistory:
    """Train ``model`` in place with Adam on the mean cross-entropy; return a :class:`TrainHistory`.

    Parameters
    ----------
    model : nn.Module returning logits (N, K); left in train mode at the end
    data : Dataset or (x, y) with x (N, ...) and y int64 (N,), kept in memory
    epochs : number of passes over the data (≥ 1)
    batch_size : mini-batch size (default 128, as in the book's experiments); the last, smaller batch is kept
    lr : Adam learning rate (default 1e-3)
    seed : seeds the shuffling generator (the model's initial weights are the caller's)
    device : where to train; batches are moved there one at a time
    on_epoch : optional callback ``on_epoch(epoch, stats)`` after each epoch, epoch = 1, 2, …,
        stats = {"train_loss", "train_acc", "seconds"} (means over that epoch's batches, as run)
    progress : show tqdm progress bars (one per epoch)
    adv_eps, adv_alpha, adv_steps : PGD adversarial training (see :func:`train_epoch`); 0: natural training
    """
    epochs = _checks.integer(epochs, "epochs", low=1)
    batch_size = _checks.integer(batch_size, "batch_size", low=1)
    lr = _checks.real(lr, "lr", low=0, low_open=True)
    seed = _checks.integer(seed, "seed")
    x, y, identity = _tensors(data)
    y_range = _check_data(x, y)
    model.to(device)
    if x.ndim == 4:
        model.to(memory_format=torch.channels_last)  # same weights; faster convolutions
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses, accs, times = [], [], []
    for epoch in range(1, epochs + 1):
        stats = train_epoch(model, optimizer, x, y, batch_size=batch_size, generator=generator,
                            device=device, progress=progress, desc=f"epoch {epoch}/{epochs}",
                            adv_eps=adv_eps, adv_alpha=adv_alpha, adv_steps=adv_steps, _y_range=y_range)
        losses.append(stats["train_loss"])
        accs.append(stats["train_acc"])
        times.append(stats["seconds"])
        if on_epoch is not None:
            on_epoch(epoch, stats)
            model.train()  # the callback may evaluate; training continues in train mode
    return TrainHistory(epochs, batch_size, float(lr), seed, str(device), identity,
                        tuple(losses), tuple(accs), tuple(times))


def augment_batch(x: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """Random crop (reflection padding of ``pad`` pixels) and random horizontal flip, per image.

    The standard CIFAR-10 augmentation, done on a whole batch (N, C, H, W) with indexing, so the
    training loop stays free of per-image PIL transforms. Random draws come from ``generator``
    (on the CPU), so a seeded run is repeatable.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    cols = torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], w - 1 - cols, cols) + dx[:, None]  # (N, W)
    rows = torch.arange(h, device=x.device) + dy[:, None]  # (N, H)
    batch = torch.arange(n, device=x.device)[:, None, None]
    # Advanced indexing puts the indexed dimensions first: (N, H, W, C) → back to (N, C, H, W).
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def train_epoch(model, optimizer, x: torch.Tensor, y: torch.Tensor, *, batch_size: int,
                generator: torch.Generator, device="cpu", augment: bool = False, progress: bool = True,
                desc: str = "epoch", adv_eps: float = 0.0, adv_alpha: float = 0.0, adv_steps: int = 0,
                _y_range: tuple[int, int] | None = None) -> dict:
    """One pass over ``(x, y)`` in the order drawn from ``generator``; the model ends in train mode.

    The building block of :func:`train`, public so that the experiment runner can checkpoint
    between epochs (each epoch gets its own seeded generator there). With ``augment``, every batch
    goes through :func:`augment_batch` (random crop and flip) with the same generator.

    Adversarial training (Madry et al., 2018): with ``adv_eps`` > 0 every
    batch (after augmentation) is replaced by its PGD adversarial examples before the step,

        min_θ E_(x,y) max_{‖δ‖∞ ≤ ε, x+δ ∈ [0,1]^M} CE(f_θ(x + δ), y),

    the inner maximum approximated by :func:`qnnlib.attacks.pgd` with ε = ``adv_eps``, step
    α = ``adv_alpha`` > 0, ``adv_steps`` ≥ 1 steps and a uniform random start (drawn from
    ``generator`` on a CPU, so a seeded run repeats). The attack runs in eval mode, as every attack
    of the book does; the loss and accuracy returned are then those on the adversarial batches.
    ``adv_eps`` = 0 (the default) is natural training and draws nothing extra from ``generator``.

    Returns ``{"train_loss", "train_acc", "seconds"}``: means over the epoch's samples, as run.
    Raises ``FloatingPointError`` after an epoch whose loss was NaN or inf (lower ``lr``).
    """
    start = time.perf_counter()
    batch_size = _checks.integer(batch_size, "batch_size", low=1)
    adv_eps = _checks.real(adv_eps, "adv_eps", low=0, high=1)
    if adv_eps > 0:
        adv_alpha = _checks.real(adv_alpha, "adv_alpha", low=0, high=1, low_open=True)
        adv_steps = _checks.integer(adv_steps, "adv_steps", low=1)
        attack_generator = generator if torch.device(device).type == "cpu" else None
    y_range = _y_range if _y_range is not None else _check_data(x, y)
    n = x.shape[0]
    model.train()
    order = torch.randperm(n, generator=generator)
    # Accumulate on the device: no host synchronisation per batch on a GPU.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    bar = tqdm(range(0, n, batch_size), desc=desc, leave=False, disable=not progress)
    for first in bar:
        index = order[first:first + batch_size]
        xb, yb = x[index].to(device), y[index].to(device)
        if augment:
            xb = augment_batch(xb, generator)
        xb = channels_last(xb)
        if adv_eps > 0:
            xb = attacks.pgd(model, xb, yb, eps=adv_eps, alpha=adv_alpha, steps=adv_steps,
                             generator=attack_generator)
        logits = model(xb)
        if first == 0:
            _checks.labels_below(y_range, logits.shape[-1], "y")
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Sum over samples so that the epoch mean weights the short last batch correctly.
        loss_sum += loss.detach().double() * len(index)
        correct += (logits.argmax(1) == yb).sum()
    mean_loss = float(loss_sum) / n
    if not math.isfinite(mean_loss):
        raise FloatingPointError(f"training diverged: the epoch's mean loss is {mean_loss} "
                                 "(NaN or inf weights or data); lower lr")
    return {"train_loss": mean_loss, "train_acc": int(correct) / n,
            "seconds": time.perf_counter() - start}


def _device_of(model):
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def accuracy(model, x: torch.Tensor, y: torch.Tensor, *, batch_size: int | None = None) -> float:
    """Fraction of samples whose arg-max logit equals the label; eval mode, mode restored.

    ``batch_size`` None: :func:`eval_batch_size` for the model's device.
    """
    if batch_size is None:
        batch_size = eval_batch_size(_device_of(model), attack=False)
    return robust_accuracy(model, x, y, _unchanged, batch_size=batch_size)


def _unchanged(model, x, y):
    return x


def robust_accuracy(model, x: torch.Tensor, y: torch.Tensor, attack, *, batch_size: int | None = None) -> float:
    """Accuracy on attacked inputs: ``attack(model, x_batch, y_batch) -> x_adv`` per batch.

    ``attack`` is any callable with that signature, e.g.
    ``functools.partial(qnnlib.attacks.pgd, eps=0.1, alpha=0.025, steps=4)``. The model is in eval
    mode both while attacked and while classifying; its mode is restored afterwards.
    ``batch_size`` None: :func:`eval_batch_size` for the model's device (64 on a CPU).
    x: finite float (N, ...), N ≥ 1; y: int labels (N,) in 0..K−1 for the model's K outputs.
    """
    y_range = _check_data(x, y)
    if not callable(attack):
        raise TypeError(f"attack must be a callable attack(model, x, y) -> x_adv, got {type(attack).__name__}")
    device = _device_of(model)
    if batch_size is None:
        batch_size = eval_batch_size(device, attack=True)
    batch_size = _checks.integer(batch_size, "batch_size", low=1)
    correct = 0
    with evaluation(model):
        for first in range(0, x.shape[0], batch_size):
            xb = channels_last(x[first:first + batch_size].to(device))
            yb = y[first:first + batch_size].to(device)
            x_adv = attack(model, xb, yb)
            with torch.no_grad():
                logits = model(x_adv)
            if first == 0:
                _checks.labels_below(y_range, logits.shape[-1], "y")
            correct += int((logits.argmax(1) == yb).sum())
    return correct / x.shape[0]
