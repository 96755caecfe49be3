"""Benchmark: qnnlib's PGD against torchattacks' PGD, and MNIST CNN3 training throughput.

Run from the repository root:  .venv/bin/python benchmarks/bench_attacks.py [--repeats 21]

1. The same MnistCNN3 (random weights; speed does not depend on them), the same batch of 256 real
   MNIST test digits (random digits if the data is absent), PGD ε = 0.1, α = 0.025, 10 steps,
   random start. Both implementations run alternately, ``repeats`` times each (pairs, so that
   machine noise hits both alike); ratio = torchattacks time / qnnlib time per pair, reported as
   the median with its quartiles (≥ 1 means qnnlib is as fast or faster).
   Their outputs under the same seed are also compared (they should be identical).
2. Training throughput of MnistCNN3 with Adam, batch 128, on 20 batches after 5 warm-up batches:
   images per second and the implied seconds per 60,000-image epoch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from qnnlib.attacks import pgd
from qnnlib.models import MnistCNN3


def mnist_batch(n):
    try:
        from qnnlib.data import load_dataset

        test = load_dataset("mnist", "test")
        return test.x[:n], test.y[:n], test.identity
    except FileNotFoundError:
        generator = torch.Generator().manual_seed(0)
        return torch.rand(n, 1, 28, 28, generator=generator), torch.randint(0, 10, (n,), generator=generator), "random"


def bench_pgd(model, x, y, repeats, steps=10):
    import torchattacks

    settings = dict(eps=0.1, alpha=0.025, steps=steps)
    reference = torchattacks.PGD(model, random_start=True, **settings)
    ours_t, theirs_t = [], []
    for _ in range(repeats):
        torch.manual_seed(0)
        start = time.perf_counter()
        ours = pgd(model, x, y, **settings)
        ours_t.append(time.perf_counter() - start)
        torch.manual_seed(0)
        start = time.perf_counter()
        theirs = reference(x, y)
        theirs_t.append(time.perf_counter() - start)
    ratios = sorted(t / o for o, t in zip(ours_t, theirs_t))
    quartiles = statistics.quantiles(ratios, n=4)
    return (statistics.median(ours_t), statistics.median(theirs_t), statistics.median(ratios),
            (quartiles[0], quartiles[2]), float((ours - theirs).abs().max()))


def bench_training(model, x, y, batches=20, warmup=5, batch_size=128):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    generator = torch.Generator().manual_seed(0)

    def step():
        index = torch.randint(0, x.shape[0], (batch_size,), generator=generator)
        loss = F.cross_entropy(model(x[index]), y[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    seconds = time.perf_counter() - start
    return batches * batch_size / seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = MnistCNN3().eval()
    x, y, identity = mnist_batch(args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, data: {identity}")
    bench_pgd(model, x, y, 2)  # warm-up: first calls pay for allocation and thread start-up
    ours, theirs, ratio, (q1, q3), diff = bench_pgd(model, x, y, args.repeats)
    print(f"PGD-10 on {args.batch} MNIST digits, median of {args.repeats}: "
          f"qnnlib {ours * 1e3:.1f} ms, torchattacks {theirs * 1e3:.1f} ms, "
          f"max |difference| {diff:.1e}")
    print(f"speed ratio torchattacks/qnnlib: median {ratio:.2f}x (quartiles {q1:.2f}-{q3:.2f}x) "
          f"over {args.repeats} paired runs")
    rate = bench_training(MnistCNN3(), x.repeat(8, 1, 1, 1), y.repeat(8))
    print(f"MnistCNN3 training (Adam, batch 128): {rate:,.0f} images/s, "
          f"{60000 / rate:.1f} s per 60,000-image epoch")


if __name__ == "__main__":
    main()
