"""Benchmark: images per minute of the local wave functions and of the minimal-ε bisection (Chapter 10).

Run from the repository root:  .venv/bin/python benchmarks/bench_local.py [--images 32] [--samples 512] [--fab 8]

The network is the recorded final MNIST CNN3 (``book/results/mnist-cnn3``), the images the first
correctly classified test images, ε = 0.1 (SPEC §8's MNIST radius). Printed:

- local ψ (:func:`qnnlib.uncertainty.local.local_moments`): images per minute at N points per image,
  the median relative jackknife SE of the aggregates Δx and Δp, and how many estimates pass SPEC §7;
- minimal ε (:func:`qnnlib.attacks.minimal_eps`, PGD-20, 1 CE restart + 3 targeted runs, tol 1e-3):
  images per minute;
- with ``--fab K``: torchattacks' FAB (L∞, Croce & Hein 2020; an independent minimal-perturbation
  attack, optional: imported here only) on the first K images, and the agreement of the two
  estimates (both are upper bounds on the true ε*; the smaller is the better attack).

Time is only comparable on an otherwise idle machine; on a shared one read it as a lower bound.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qnnlib import attacks, experiments
from qnnlib.data import load_dataset
from qnnlib.uncertainty.local import local_moments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--samples", type=int, default=512, help="points per image for the local ψ")
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--fab", type=int, default=0, help="images to cross-check with torchattacks' FAB")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = experiments.final_model(experiments.recorded("mnist-cnn3")).eval()
    test = load_dataset("mnist", "test")
    x, y = test.x[: 4 * args.images], test.y[: 4 * args.images]
    with torch.no_grad():
        right = model(x).argmax(1) == y
    x, y = x[right][: args.images], y[right][: args.images]
    n = x.shape[0]

    clock = time.perf_counter()
    local = local_moments(model, x, y, eps=args.eps, n_samples=args.samples,
                          generator=torch.Generator().manual_seed(0), warn=False)
    seconds = time.perf_counter() - clock
    table = local.table()
    print(f"local psi: {n} images, N = {args.samples}: {seconds:.1f} s, {60 * n / seconds:.1f} images/min; "
          f"median rel SE dx {np.median(table['dx_stderr'] / table['dx']):.2e}, "
          f"dp {np.median(table['dp_stderr'] / table['dp']):.2e}; reliable {int(table['reliable'].sum())}/{n}")

    clock = time.perf_counter()
    found = attacks.minimal_eps(model, x, y, eps_max=0.5, tol=1e-3, generator=torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - clock
    print(f"minimal eps: {n} images: {seconds:.1f} s, {60 * n / seconds:.1f} images/min; "
          f"median eps* {np.median(found['eps']):.4f}, unbroken {int(found['unbroken'].sum())}")

    if args.fab:
        import torchattacks  # optional: the independent reference, used only here and in the tests

        k = min(args.fab, n)
        clock = time.perf_counter()
        adv = torchattacks.FAB(model, norm="Linf", eps=0.5, steps=100, n_restarts=3, n_classes=10)(x[:k], y[:k])
        seconds = time.perf_counter() - clock
        with torch.no_grad():
            fooled = (model(adv).argmax(1) != y[:k]).numpy()
        fab = np.where(fooled, (adv - x[:k]).flatten(1).abs().amax(1).numpy(), np.inf)
        ours = found["eps"][:k]
        ratio = ours / fab
        print(f"FAB: {k} images, {seconds:.1f} s; fooled {int(fooled.sum())}/{k}")
        print("  bisection eps*: " + " ".join(f"{v:.4f}" for v in ours))
        print("  FAB eps*:       " + " ".join(f"{v:.4f}" for v in fab))
        print(f"  ratio bisection/FAB: median {np.median(ratio):.3f}, range [{ratio.min():.3f}, {ratio.max():.3f}]; "
              f"within 10 %: {int((np.abs(ratio - 1) <= 0.1).sum())}/{k}; bisection smaller: {int((ratio < 1).sum())}/{k}")


if __name__ == "__main__":
    main()
