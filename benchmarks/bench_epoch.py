"""Benchmark: the cost of one epoch's measurements against one training epoch (issue: CIFAR studies).

Run from the repository root:  .venv/bin/python benchmarks/bench_epoch.py [cifar-cnn4 cifar-resnet8 ...]

For each named experiment: one training epoch over the whole training set (from the seeded
initial weights, exactly as ``python -m qnnlib run`` does), then the per-epoch evaluation of
:func:`qnnlib.experiments.measure_epoch` (clean accuracy, PGD on the whole test set in pixel and in
feature space, Δx/Δp over the config's labels in both spaces), each phase timed. The last line per
experiment is the ratio evaluation / training; the target is ≤ 1.5. Both are measured in the same
run on the same machine, so the ratio does not depend on how fast the machine is.

``--widths 16 64`` instead times training steps of the residual network (cifar-resnet8) at each
width on the same training batches, and prints each width's cost relative to the first: what the
recorded width-16 run tells about the cost of the full width on the same CPU (Chapter 7).
"""

from __future__ import annotations

import argparse
import time

import torch

from qnnlib import experiments, train


def bench(name: str, epochs: int) -> float:
    config = experiments.make_config(name)
    train_set, test = experiments._datasets(config)
    model = experiments.build_model(config)
    if train_set.x.ndim == 4:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    ratios = []
    for epoch in range(1, epochs + 1):
        stats = train.train_epoch(model, optimizer, train_set.x, train_set.y, batch_size=config.batch_size,
                                  generator=experiments._generator(config, epoch, 0), augment=config.augment,
                                  progress=False)
        clock = time.perf_counter()
        metrics, _, seconds = experiments.measure_epoch(model, train_set, test, config, epoch)
        evaluation = time.perf_counter() - clock
        phases = ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
        print(f"{name} epoch {epoch}: train {stats['seconds']:.1f} s; evaluation {evaluation:.1f} s ({phases}); "
              f"test acc {metrics['test_acc']:.4f}, robust {metrics['robust_acc']:.4f}")
        ratios.append(evaluation / stats["seconds"])
    ratio = sorted(ratios)[len(ratios) // 2]
    print(f"{name}: evaluation / training epoch = {ratio:.2f} (median of {epochs}; target ≤ 1.5)")
    return ratio


def width_scaling(widths: list[int], batches: int) -> None:
    config = experiments.make_config("cifar-resnet8")
    train_set, _ = experiments._datasets(config)
    x, y = train_set.x[:batches * config.batch_size], train_set.y[:batches * config.batch_size]
    reference = None  # seconds of the first width
    for width in widths:
        wide = experiments.make_config("cifar-resnet8", width=width)
        model = experiments.build_model(wide).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=wide.lr)
        # One untimed batch first: the first steps pay for memory allocation.
        train.train_epoch(model, optimizer, x[:wide.batch_size], y[:wide.batch_size], batch_size=wide.batch_size,
                          generator=torch.Generator().manual_seed(0), augment=wide.augment, progress=False)
        stats = train.train_epoch(model, optimizer, x, y, batch_size=wide.batch_size,
                                  generator=torch.Generator().manual_seed(0), augment=wide.augment, progress=False)
        reference = reference or stats["seconds"]
        params = sum(p.numel() for p in model.parameters())
        per_epoch = stats["seconds"] * len(train_set) / len(x)
        print(f"ResNet8 width {width}: {params:,} parameters, {len(x) / stats['seconds']:.0f} images/s "
              f"({per_epoch / 60:.1f} min per {len(train_set):,}-image epoch), "
              f"{stats['seconds'] / reference:.1f}x width {widths[0]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["cifar-cnn4", "cifar-resnet8"])
    parser.add_argument("--epochs", type=int, default=1, help="epochs per experiment (median ratio reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--widths", type=int, nargs="+", default=None,
                        help="time ResNet8 training at these widths instead (cost relative to the first)")
    parser.add_argument("--batches", type=int, default=20, help="training batches per width with --widths")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.widths:
        width_scaling(args.widths, args.batches)
        return
    for name in args.names:
        bench(name, args.epochs)


if __name__ == "__main__":
    main()
