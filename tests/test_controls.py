"""qnnlib.experiments.controls: the untrained-network and temperature controls (Chapters 5–6)."""

import dataclasses

import pytest
import torch

from qnnlib import experiments, uncertainty
from qnnlib.experiments import controls
from qnnlib.models import MnistCNN3

SHAPE = (1, 28, 28)


def test_tempered_scales_the_logits_and_refuses_a_meaningless_temperature():
    net = MnistCNN3().eval()
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(controls.Tempered(net, 1.0)(x), net(x))
        torch.testing.assert_close(controls.Tempered(net, 2.5)(x), 2.5 * net(x))
    for bad in (-1.0, float("nan"), "2"):
        with pytest.raises(ValueError, match="temperature"):
            controls.Tempered(net, bad)


def test_centre_frame_ratio_of_maps_with_known_values():
    flat = torch.ones(28, 28)
    assert controls.centre_frame_ratio(flat) == pytest.approx(1.0)
    bright = flat.clone()
    bright[4:-4, 4:-4] = 3.0  # the centre 14 × 14 lies inside the 20 × 20 interior
    assert controls.centre_frame_ratio(bright) == pytest.approx(3.0)
    bright[0, 0] = 1 + 96  # the frame has 28² − 20² = 384 pixels: its mean becomes 1 + 96/384
    assert controls.centre_frame_ratio(bright) == pytest.approx(3.0 / 1.25)


def test_zero_temperature_is_a_flat_wave_function_and_the_logit_scale_is_linear_in_t():
    net = MnistCNN3().eval()
    sweep = controls.temperature_sweep(net, 8, SHAPE, [0.0, 1.0, 3.0], n_samples=512,
                                       generator=torch.Generator().manual_seed(0))
    flat = (784 / 12**0.5) ** 0.5  # Δx_i = 1/√12 in every pixel, paper aggregate
    assert sweep[0]["dp"] == 0 and abs(sweep[0]["dx"] - flat) < 5 * sweep[0]["dx_stderr"] + 1e-9
    assert sweep[0]["logit_scale"] == 0
    assert sweep[2]["logit_scale"] == pytest.approx(3 * sweep[1]["logit_scale"], rel=1e-12)
    assert sweep[1]["dp"] > 0 and sweep[1]["logit_scale"] > 0


def test_untrained_control_builds_each_seed_as_a_run_does():
    config = dataclasses.replace(experiments.CONFIGS["mnist-cnn3"], labels=(8,))
    a = controls.untrained_control(config, seeds=(0, 1), n_samples=256, generator=torch.Generator().manual_seed(0))
    b = controls.untrained_control(config, seeds=(0,), n_samples=256, generator=torch.Generator().manual_seed(0))
    assert [e["seed"] for e in a] == [0, 1] and a[0]["dp"] == b[0]["dp"]  # same seed, same network, same points
    assert a[0]["dp"] != a[1]["dp"] and all(e["centre_frame"] > 0 and e["logit_scale"] > 0 for e in a)
    net = experiments.build_model(config)
    m = uncertainty.neural_moments(net, 8, SHAPE, n_samples=256, generator=torch.Generator().manual_seed(0))
    assert m.aggregate_jk("paper")[1] == pytest.approx(a[0]["dp"], rel=1e-12)
