"""Tests for qnnlib.models: shapes, the head ∘ features split, non-negative features, normalisation inside."""

import numpy as np
import pytest
import torch
from torch import nn

from qnnlib.models import CifarCNN4, MnistCNN3, ResNet8, evaluation

CASES = [
    (lambda: MnistCNN3(), (1, 28, 28), 1024),
    (lambda: CifarCNN4(), (3, 32, 32), 4096),
    (lambda: CifarCNN4(width=8), (3, 32, 32), 1024),
    (lambda: ResNet8(width=8), (3, 32, 32), 64),
    (lambda: ResNet8(width=16), (3, 32, 32), 128),
]


@pytest.mark.parametrize("make, shape, features", CASES)
@pytest.mark.parametrize("training", [True, False])
def test_forward_equals_head_of_features(make, shape, features, training):
    torch.manual_seed(0)
    model = make().train(training)
    if not training:
        # Fill batch-norm running statistics so eval mode is not the identity initialisation.
        model.train()(torch.rand(16, *shape))
        model.eval()
    x = torch.rand(6, *shape)
    z = model.features(x)
    assert z.shape == (6, features) == (6, model.feature_dim)
    # In train mode batch norm uses batch statistics; both paths see the same batch, so exact.
    torch.testing.assert_close(model(x), model.head(z), rtol=0, atol=0)
    assert model(x).shape == (6, 10)


@pytest.mark.parametrize("make, shape, features", CASES)
def test_features_are_non_negative(make, shape, features):
    torch.manual_seed(1)
    model = make().eval()
    assert model.features(torch.rand(8, *shape)).min() >= 0


def test_head_is_a_single_linear_layer():
    for model in (MnistCNN3(), CifarCNN4(), ResNet8(width=8)):
        assert isinstance(model.fc, torch.nn.Linear)
        assert model.fc.in_features == model.feature_dim and model.fc.out_features == 10


def test_layer_counts_match_the_paper():
    # SPEC §4: three conv layers (MNIST), four (plain CIFAR CNN), eight (ResNet-8).
    def convs(model):
        return sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())

    assert convs(MnistCNN3()) == 3
    assert convs(CifarCNN4()) == 4
    assert convs(ResNet8(width=4)) == 8


def test_normalisation_lives_inside_the_model():
    # The mean/std are buffers (they move with .to() and are saved in state_dict), not parameters.
    model = MnistCNN3()
    names = {name for name, _ in model.named_buffers()}
    assert any(name.endswith("mean") for name in names) and any(name.endswith("std") for name in names)
    assert not any("mean" in name for name, _ in model.named_parameters())


def test_resnet_width_is_a_constructor_argument():
    assert ResNet8(width=4).feature_dim == 32
    with pytest.raises(ValueError, match="width"):
        ResNet8(width=0)
    with pytest.raises(ValueError, match="width"):
        CifarCNN4(width=0)


# --- the evaluation-mode context manager ---------------------------------------------------------


def mixed_mode_model():
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Sequential(nn.Linear(6, 3)))
    model.train()
    model[1].eval()  # a frozen batch norm inside a model in train mode
    model[3].eval()
    return model


def modes(model):
    return [m.training for m in model.modules()]


def test_evaluation_puts_every_module_in_eval_mode_and_restores_mixed_modes():
    model = mixed_mode_model()
    before = modes(model)
    assert len(set(before)) == 2
    with evaluation(model) as inside:
        assert inside is model
        assert not any(modes(model))
    assert modes(model) == before


def test_evaluation_restores_modes_after_an_exception():
    model = mixed_mode_model()
    before = modes(model)
    with pytest.raises(RuntimeError, match="boom"):
        with evaluation(model):
            raise RuntimeError("boom")
    assert modes(model) == before


def test_batch_norm_running_statistics_do_not_change_under_evaluation():
    torch.manual_seed(0)
    model = ResNet8(width=4).train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    with evaluation(model):
        model(torch.rand(8, 3, 32, 32))
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in stats.items())
    model(torch.rand(8, 3, 32, 32))  # the control: in train mode one forward pass changes them
    assert not all(torch.equal(model.state_dict()[k], v) for k, v in stats.items())


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, error, name",
    [
        (lambda: CifarCNN4(width=8.0), TypeError, "width"),
        (lambda: ResNet8(width=-2), ValueError, "width"),
        (lambda: ResNet8(width=np.int64(0)), ValueError, "width"),
        (lambda: MnistCNN3(channels=(16, 32)), ValueError, "channels"),
        (lambda: MnistCNN3(channels=(16, 0, 8)), ValueError, "channels"),
        (lambda: MnistCNN3(num_classes=1), ValueError, "num_classes"),
        (lambda: CifarCNN4(num_classes=2.5), TypeError, "num_classes"),
    ],
)
def test_constructors_reject_bad_sizes_naming_them(make, error, name):
    with pytest.raises(error, match=f"^{name} must"):
        make()


def test_numpy_sizes_build_the_same_network():
    assert ResNet8(width=np.int64(8)).feature_dim == ResNet8(width=8).feature_dim == 64


@pytest.mark.parametrize(
    "make, x, error, message",
    [
        (MnistCNN3, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), TypeError, "^x must be a floating-point.*255"),
        (MnistCNN3, torch.zeros(2, 28, 28), ValueError, r"^x must be a batch of images \(N, 1, 28, 28\)"),
        (MnistCNN3, torch.zeros(2, 3, 32, 32), ValueError, "MnistCNN3"),
        (lambda: ResNet8(width=4), torch.zeros(2, 1, 28, 28), ValueError, r"\(N, 3, 32, 32\)"),
    ],
)
def test_models_reject_integer_or_misshapen_images(make, x, error, message):
    model = make()
    with pytest.raises(error, match=message):
        model(x)
    with pytest.raises(error, match=message):
        model.features(x)


def test_residual_block_adds_its_input():
    from qnnlib.models import _Residual

    torch.manual_seed(0)
    block = _Residual(4).eval()
    x = torch.rand(2, 4, 5, 5)
    torch.testing.assert_close(block(x), x + block.inner(x), rtol=0, atol=0)
