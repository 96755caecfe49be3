"""Tests for qnnlib.widgets: with ipywidgets 8 (no frontend) and the static fallback without it.

The explorers draw into Image widgets (PNG bytes), never into Output widgets, which make notebooks
executed by nbclient hang now and then (see the module's docstring)."""

import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from qnnlib import widgets  # noqa: E402

X = np.linspace(-12, 12, 601)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))


def tiny_batch():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(5, 1, 4, 4, generator=generator), torch.tensor([0, 1, 2, 0, 1])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture
def no_ipywidgets(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets → ImportError


@pytest.fixture
def shown(monkeypatch):
    """Record the figures the widgets draw (each is turned into PNG bytes for an Image widget)."""
    seen, real = [], widgets._png

    def spy(fig):
        seen.append(fig)
        return real(fig)
    monkeypatch.setattr(widgets, "_png", spy)
    return seen


def _no_output_widgets(box):
    import ipywidgets

    stack = [box]
    while stack:
        w = stack.pop()
        assert not isinstance(w, ipywidgets.Output), "an Output widget: nbclient may hang on it"
        stack.extend(getattr(w, "children", ()))


def test_ipywidgets_8_is_the_version_the_widgets_are_written_for():
    import ipywidgets

    assert ipywidgets.__version__.split(".")[0] == "8"


def test_packet_explorer_builds_controls_and_draws_through_display(shown):
    box = widgets.packet_explorer(X)
    controls, canvas = box.children
    assert [c.description for c in controls.children] == ["shape", "width Δx", "k₀"]
    assert len(shown) == 1 and isinstance(shown[0], Figure)
    first = bytes(canvas.value)
    assert first.startswith(b"\x89PNG") and canvas.format == "png"
    _no_output_widgets(box)
    # Moving a control redraws (a new figure, a new image), and closes the old ones: no figure piles up.
    controls.children[1].value = 2.0
    assert len(shown) == 2 and bytes(canvas.value) != first
    assert "2.000" in shown[1].axes[0].get_title()  # Δx = width 2
    assert plt.get_fignums() == []


def _panels(fig):
    """The image panels of a figure, without its colour bars (the book style gives every colour map one)."""
    return [ax for ax in fig.axes if not hasattr(ax, "_colorbar")]


def test_attack_explorer_redraws_for_each_attack_and_restores_the_mode(shown):
    model = tiny_model().train()
    x, y = tiny_batch()
    box = widgets.attack_explorer(model, x, y, n=3, steps=2)
    method, eps = box.children[0].children
    assert method.value == "PGD" and eps.value == pytest.approx(0.1)
    method.value = "FGSM"
    eps.value = 0.0
    assert len(shown) == 3 and all(isinstance(f, Figure) for f in shown)
    assert len(_panels(shown[-1])) == 3 * 3  # clean, attacked, perturbation × n samples
    assert model.training
    assert bytes(box.children[1].value).startswith(b"\x89PNG")
    _no_output_widgets(box)


def test_attack_explorer_rejects_bad_settings():
    model = tiny_model()
    x, y = tiny_batch()
    with pytest.raises(ValueError, match="^eps_max must"):
        widgets.attack_explorer(model, x, y, eps_max=float("nan"))
    with pytest.raises(ValueError, match="^n must"):
        widgets.attack_explorer(model, x, y, n=0)


@pytest.mark.filterwarnings("ignore:unreliable estimate")
def test_without_ipywidgets_each_explorer_warns_and_returns_its_static_figure(no_ipywidgets):
    with pytest.warns(UserWarning, match="ipywidgets is not installed"):
        fig = widgets.packet_explorer(X)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "$x$" and fig.axes[1].get_xlabel() == "$p$"
    x, y = tiny_batch()
    with pytest.warns(UserWarning, match="ipywidgets is not installed"):
        fig = widgets.attack_explorer(tiny_model(), x, y, n=2, steps=1)
    assert isinstance(fig, Figure) and len(_panels(fig)) == 3 * 2
    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(2, 3))
    with pytest.warns(UserWarning, match="ipywidgets is not installed"):
        fig = widgets.monte_carlo_explorer({"toy": (toy, 0, (2,))}, sizes=(16, 32, 64))
    assert isinstance(fig, Figure) and len(fig.axes) == 2


# Tiny N on purpose (a smoke test): the estimator rightly warns that such estimates are unreliable.
@pytest.mark.filterwarnings("ignore:unreliable estimate")
def test_monte_carlo_figure_plots_four_sample_sizes_with_the_reference():
    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(2, 3))
    axes, moments, rate = widgets.monte_carlo_figure(toy, 1, (2,), n=64, reference=(0.5, 0.6))
    assert axes.shape == (1, 2) and rate > 0
    assert moments.dx.shape == (2,)
    dx_axis = axes[0, 0]
    assert [float(v) for v in dx_axis.get_xticks()] == [8, 16, 32, 64]
    assert any(np.allclose(line.get_ydata(), 0.5) for line in dx_axis.get_lines())  # the reference line


@pytest.mark.filterwarnings("ignore:unreliable estimate")
def test_monte_carlo_explorer_with_controls(shown):
    torch.manual_seed(0)
    toy = nn.Sequential(nn.Linear(2, 3))
    box = widgets.monte_carlo_explorer({"toy": (toy, 0, (2,))}, sizes=(16, 32))
    assert len(box.children) == 4 and len(shown) == 1
    line, canvas = box.children[2:]
    assert line.value.startswith("N = 32 (uniform): Δx = ") and "samples/s" in line.value  # the middle N
    assert bytes(canvas.value).startswith(b"\x89PNG")
    _no_output_widgets(box)
    box.children[0].children[1].value = "sobol"
    assert len(shown) == 2 and "(sobol)" in line.value
