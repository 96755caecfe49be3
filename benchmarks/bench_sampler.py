"""Benchmark: wall time to a 1 % relative standard error on Δx and Δp, by sampler.

Run from the repository root:  .venv/bin/python benchmarks/bench_sampler.py [--repeats 6] [--quick]

The integrand is the neural wave function of class 8 of the recorded final MNIST CNN3
(``book/results/mnist-cnn3``) in pixel space, M = 784, in the paper's aggregate form — the
estimate Chapter 6 plots. The figure of merit is statistical speed (SPEC §7): not points per
second, but the wall time a sampler needs for a given error bar. For each sampler of
``qnnlib.uncertainty.SAMPLERS`` (plain uniform points, scrambled Sobol points, antithetic pairs,
Latin hypercube strata — all unbiased for ψ's integrals) and each N of a doubling ladder, the
estimate is repeated with independent seeds, interleaved across samplers so that a change of
machine load hits all alike. Per sampler:

- the relative standard error at each N, from the jackknife (mean over repeats of SE²/value², the
  precise number) and, as its check, from the spread of the repeats (the honest error whatever
  the jackknife says; 6 repeats pin it to about ±30 %);
- the constant c = N·(rel SE)², pooled over the ladder: with errors falling like N^(−1/2), the
  N where the larger of the two relative errors (Δx, Δp) is 1 % is c / 0.01² (the fitted slope of
  log SE against log N is printed to show whether a sampler falls faster);
- the wall time per point, measured, and so the time to 1 % (∝ variance × cost, the usual
  efficiency of a Monte Carlo method).

The last line is the ratio of the plain sampler's time to 1 % to each other sampler's, in the
same run. Time is only comparable on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from qnnlib import experiments
from qnnlib.uncertainty import SAMPLERS, neural_moments

LABEL = 8
SHAPE = (1, 28, 28)
TARGET = 0.01


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6, help="independent estimates per sampler and N")
    parser.add_argument("--ladder", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--quick", action="store_true", help="2 repeats of N = 256, 512 (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.ladder = 2, [256, 512]
    if args.threads:
        torch.set_num_threads(args.threads)
    model = experiments.final_model(experiments.recorded("mnist-cnn3"))
    print(f"MNIST CNN3 final network, class {LABEL}, M = 784, paper aggregate; torch threads "
          f"{torch.get_num_threads()}; {args.repeats} repeats per N in {args.ladder}")
    estimates = {s: {n: [] for n in args.ladder} for s in SAMPLERS}
    seconds = {s: {n: [] for n in args.ladder} for s in SAMPLERS}
    for repeat in range(args.repeats):
        for n in args.ladder:
            for sampler in SAMPLERS:  # interleaved: load changes hit every sampler alike
                generator = torch.Generator().manual_seed(1000 * repeat + n)
                clock = time.perf_counter()
                m = neural_moments(model, LABEL, SHAPE, n_samples=n, sampler=sampler, generator=generator)
                seconds[sampler][n].append(time.perf_counter() - clock)
                estimates[sampler][n].append((m.aggregate_jk("paper"), m.aggregate_stderr("paper")))

    times = {}
    print(f"\n{'sampler':>10} {'N':>6} {'Δx':>9} {'rel SE Δx':>10} {'(spread)':>9} {'Δp':>8} {'rel SE Δp':>10} "
          f"{'(spread)':>9} {'s/run':>7}")
    for sampler in SAMPLERS:
        rel_se = {}
        for n in args.ladder:
            values = np.array([v for v, _ in estimates[sampler][n]])  # (repeats, 2): Δx, Δp
            errors = np.array([e for _, e in estimates[sampler][n]])
            rel_se[n] = np.sqrt((errors**2).mean(axis=0)) / values.mean(axis=0)
            spread = values.std(axis=0, ddof=1) / values.mean(axis=0)
            print(f"{sampler:>10} {n:6d} {values[:, 0].mean():9.4f} {rel_se[n][0]:10.2e} {spread[0]:9.2e} "
                  f"{values[:, 1].mean():8.3f} {rel_se[n][1]:10.2e} {spread[1]:9.2e} "
                  f"{statistics.median(seconds[sampler][n]):7.2f}")
        ns = np.array(args.ladder, dtype=float)
        needed = []
        for j, name in enumerate(("Δx", "Δp")):
            se = np.array([rel_se[n][j] for n in args.ladder])
            c = float(np.mean(ns * se**2))
            slope = float(np.polyfit(np.log(ns), np.log(se), 1)[0])
            needed.append(c / TARGET**2)
            print(f"{'':>10} {name}: N·(rel SE)² = {c:.3g}, log–log slope {slope:.2f}; 1 % at N ≈ {needed[-1]:.3g}")
        per_point = sum(sum(seconds[sampler][n]) for n in args.ladder) / (args.repeats * sum(args.ladder))
        times[sampler] = max(needed) * per_point
        print(f"{'':>10} {per_point * 1e3:.3f} ms per point → {times[sampler]:.2f} s to 1 % on both")
    print("\ntime to 1 % relative error, plain uniform / sampler (> 1: the sampler is faster): "
          + ", ".join(f"{s} {times['uniform'] / times[s]:.2f}×" for s in SAMPLERS if s != "uniform"))


if __name__ == "__main__":
    main()
