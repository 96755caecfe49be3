"""Tests for qnnlib.models: shapes, the head ∘ features split, non-negative features, normalisation inside."""

import pytest
import torch

from qnnlib.models import CifarCNN4, MnistCNN3, ResNet8

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
