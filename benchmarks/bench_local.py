"""Benchmark: images per minute of the local wave functions and of the minimal-ε bisection (Chapter 10).

Run from the repository root:
    .venv/bin/python benchmarks/bench_local.py [--nets mnist-cnn3,cifar-cnn4,cifar-resnet8] [--images 8] [--fab 0]

For each recorded final network, the settings of its fragility table (``fragility-NET`` in
``qnnlib.experiments.FRAGILITY_CONFIGS``: ε, N, sampler, attack) on the first ``--images`` images
of that table's own seeded image set (so the numbers are those a recording meets). Printed:

- local ψ at the table's N with its sampler (tilted, pilot rounds included) and, as the reference
  in the same run, with uniform points at the same N: images per minute, their ratio
  (tilted/uniform speed: what the pilot rounds cost), and how many estimates pass the
  reliability checks (ESS ≥ 100 and Pareto k̂ ≤ 0.7 for both weight sets) with each;
- minimal ε (:func:`qnnlib.attacks.minimal_eps` with the table's PGD settings): images per minute;
- the implied time of a 500-image table on this machine: 500 images at both rates;
- with ``--fab K`` (MNIST CNN3 only): torchattacks' FAB (L∞, Croce & Hein 2020; an independent
  minimal-perturbation attack, optional: imported here only) on the first K images, and the
  agreement of the two estimates (both are upper bounds on the true ε*; the smaller is the better attack).

Time is only comparable on an otherwise idle machine; on a shared one read it as a lower bound
on the speed. Set OMP_NUM_THREADS to the cores a recording will have.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from qnnlib import attacks, experiments
from qnnlib.data import load_dataset
from qnnlib.experiments import fragility_runs
from qnnlib.uncertainty.local import local_moments


def table_images(config, k):
    """The first k images of the fragility table's seeded set, and the network."""
    run = experiments.recorded(config.source)
    model = experiments.final_model(run)
    test = load_dataset(run.record["config"]["dataset"], "test")
    index = fragility_runs.table_images(config, model, test)[0][:k]
    return model, test.x[index], test.y[index], test.identity


def time_local(model, x, y, config, sampler):
    clock = time.perf_counter()
    local = local_moments(model, x, y, eps=config.eps, n_samples=config.n_samples, n_groups=config.n_groups,
                          sampler=sampler, pilot=config.pilot, stages=config.stages,
                          generator=torch.Generator().manual_seed(0), warn=False)
    seconds = time.perf_counter() - clock
    table = local.table(config.form)
    return 60 * len(y) / seconds, int(table["reliable"].sum()), float(np.median(table["ess"]))


def bench(name, k, reference, fab):
    config = experiments.FRAGILITY_CONFIGS[f"fragility-{name}"]
    model, x, y, identity = table_images(config, k)
    print(f"{name} ({identity}), {len(y)} images of fragility-{name}: ε = {config.eps:.4g}, N = {config.n_samples}")
    rate, ok, ess = time_local(model, x, y, config, config.sampler)
    line = (f"  local psi, {config.sampler} (pilot {config.stages}x{config.pilot}): {rate:.1f} images/min, "
            f"reliable {ok}/{len(y)}, median ESS {ess:.0f}")
    if reference and config.sampler != "uniform":
        ref, ref_ok, ref_ess = time_local(model, x, y, config, "uniform")
        line += (f"\n  local psi, uniform (reference):  {ref:.1f} images/min, reliable {ref_ok}/{len(y)}, "
                 f"median ESS {ref_ess:.0f}; speed ratio {config.sampler}/uniform {rate / ref:.2f}")
    print(line)
    clock = time.perf_counter()
    found = attacks.minimal_eps(model, x, y, eps_max=config.eps_max, tol=config.tol, steps=config.steps,
                                restarts=config.restarts, targets=config.targets, rel_alpha=config.rel_alpha,
                                generator=torch.Generator().manual_seed(1))
    seconds = time.perf_counter() - clock
    attack = 60 * len(y) / seconds
    print(f"  minimal eps (PGD-{config.steps}, {config.restarts}+{config.targets} runs, tol {config.tol:g}): "
          f"{attack:.1f} images/min; median eps* {np.median(found['eps']):.4f}, unbroken {int(found['unbroken'].sum())}")
    print(f"  a 500-image table: about {500 / rate + 500 / attack:.0f} min on this machine "
          f"({torch.get_num_threads()} thread(s))")
    if fab and name == "mnist-cnn3":
        cross_check(model, x, y, found["eps"], fab)


def cross_check(model, x, y, ours, k):
    import torchattacks  # optional: the independent reference, used only here and in the tests

    k = min(k, len(y))
    clock = time.perf_counter()
    adv = torchattacks.FAB(model, norm="Linf", eps=0.5, steps=100, n_restarts=3, n_classes=10)(x[:k], y[:k])
    seconds = time.perf_counter() - clock
    with torch.no_grad():
        fooled = (model(adv).argmax(1) != y[:k]).numpy()
    fab = np.where(fooled, (adv - x[:k]).flatten(1).abs().amax(1).numpy(), np.inf)
    ratio = ours[:k] / fab
    print(f"  FAB: {k} images, {seconds:.1f} s; fooled {int(fooled.sum())}/{k}")
    print("    bisection eps*: " + " ".join(f"{v:.4f}" for v in ours[:k]))
    print("    FAB eps*:       " + " ".join(f"{v:.4f}" for v in fab))
    print(f"    ratio bisection/FAB: median {np.median(ratio):.3f}, range [{ratio.min():.3f}, {ratio.max():.3f}]; "
          f"within 10 %: {int((np.abs(ratio - 1) <= 0.1).sum())}/{k}; bisection smaller: {int((ratio < 1).sum())}/{k}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="mnist-cnn3,cifar-cnn4,cifar-resnet8")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--no-reference", action="store_true", help="skip the uniform-points reference")
    parser.add_argument("--fab", type=int, default=0, help="MNIST images to cross-check with torchattacks' FAB")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name in args.nets.split(","):
        bench(name.strip(), args.images, not args.no_reference, args.fab)


if __name__ == "__main__":
    main()
