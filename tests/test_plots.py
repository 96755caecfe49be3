"""Smoke tests for qnnlib.plots (Agg backend): each function draws on the axes it promises, the data
it was given (plotted y-data equals the input), with its labels, and a colour bar where it draws a
colour map."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from qnnlib import plots, quantum  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def colourbars(fig):
    """Axes that are colour bars (matplotlib labels them '<colorbar>')."""
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def ydata(ax):
    return [np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines()]


# --- Chapter 1 ---------------------------------------------------------------------------------


def test_plot_packet_draws_both_densities_normalised_with_their_spreads():
    x = np.linspace(-10, 10, 801)
    psi = quantum.gaussian_packet(x, width=1.5)
    p, phi = quantum.momentum_wavefunction(x, psi)
    s = quantum.spreads(x, psi)
    fig = plots.plot_packet(x, psi, p, phi, s)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    density = ydata(left)[0]
    np.testing.assert_allclose(density, np.abs(psi) ** 2 / np.trapezoid(np.abs(psi) ** 2, x))
    assert np.trapezoid(ydata(right)[0], p) == pytest.approx(1.0)
    assert (left.get_xlabel(), right.get_xlabel()) == ("$x$", "$p$")
    assert left.get_title() == f"$\\Delta x = {s.dx:.3f}$"
    assert f"{s.product:.4f}" in fig.get_suptitle()


def test_plot_packet_draws_on_given_axes_with_given_labels():
    _, axes = plt.subplots(1, 2)
    t = np.linspace(-5, 5, 201)
    s = quantum.spreads(t, quantum.gaussian_packet(t))
    fig = plots.plot_packet(t, np.exp(-t**2), t, np.exp(-t**2), s, axes=axes, labels=("t", "ν"))
    assert fig is axes[0].figure and axes[1].get_xlabel() == "$ν$"


def test_plot_products_draws_one_bar_per_shape_and_the_bound():
    names, products = ["a", "b", "c"], [0.5, 0.52, 0.7]
    ax = plots.plot_products(names, products, bound=0.5)
    assert [bar.get_width() for bar in ax.patches] == products
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    (bound,) = ax.get_lines()
    assert list(bound.get_xdata()) == [0.5, 0.5]


def test_plot_tradeoff_draws_the_points_and_the_hyperbola():
    dxs, dps = np.array([0.5, 1.0, 2.0]), np.array([1.0, 0.5, 0.25])
    ax = plots.plot_tradeoff(dxs, dps)
    hyperbola, points = ax.get_lines()
    np.testing.assert_allclose(hyperbola.get_ydata() * hyperbola.get_xdata(), 0.5)
    np.testing.assert_array_equal(points.get_ydata(), dps)
    assert ax.get_xlabel() == r"$\Delta x$" and ax.get_ylabel() == r"$\Delta p$"


# --- Chapter 2 ---------------------------------------------------------------------------------


def test_plot_input_gradients_two_rows_of_n_images():
    x, g = torch.rand(5, 1, 6, 6), torch.randn(5, 1, 6, 6)
    fig = plots.plot_input_gradients(x, g, labels=torch.arange(5), n=4)
    assert len(fig.axes) == 2 * 4
    assert all(len(ax.get_images()) == 1 for ax in fig.axes)
    np.testing.assert_array_equal(fig.axes[0].get_images()[0].get_array(), x[0, 0].numpy())
    assert fig.axes[0].get_title() == "y = 0"
    clim = fig.axes[4].get_images()[0].get_clim()  # the gradient row: a symmetric scale
    assert clim[0] == -clim[1] == pytest.approx(-float(g[0].abs().max()))


def test_plot_attack_examples_three_rows_and_red_titles_for_mistakes():
    x = torch.rand(3, 3, 5, 5)
    x_adv = (x + 0.05).clamp(0, 1)
    y, clean, adv = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])
    fig = plots.plot_attack_examples(x, x_adv, y, clean, adv, eps=0.05, n=3, classes=["a", "b", "c"])
    assert len(fig.axes) == 9
    titles = [(ax.get_title(), ax.title.get_color()) for ax in fig.axes[3:6]]  # the attacked row
    assert [t for t, _ in titles] == ["→ a", "→ c", "→ c"]
    assert titles[1][1] == "C3" and titles[0][1] == "k"
    assert fig.axes[6].get_images()[0].get_clim() == (-0.05, 0.05)
    assert "0.05" in fig.get_suptitle()


@pytest.mark.parametrize("name, key", [("plot_accuracy_vs_eps", "eps"), ("plot_loss_along_directions", "t"),
                                       ("plot_training_curves", "epochs")])
def test_line_plots_draw_one_line_per_curve_with_its_data_and_legend(name, key):
    t = np.array([0.0, 0.1, 0.2])
    curves = {"one": [0.9, 0.5, 0.1], "two first order": [0.8, 0.6, 0.4]}
    ax = getattr(plots, name)(t, curves)
    assert [list(y) for y in ydata(ax)] == list(curves.values())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    assert ax.get_xlabel()


# --- Chapters 3 and 4 --------------------------------------------------------------------------


def test_plot_toy_classifier_regions_and_one_scatter_per_class():
    nodes = np.linspace(0, 1, 5)
    predicted = np.arange(25).reshape(5, 5) % 3
    x, y = np.random.default_rng(0).random((12, 2)), np.arange(12) % 3
    ax = plots.plot_toy_classifier(nodes, predicted, x, y)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), predicted.T)
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3
    np.testing.assert_array_equal(scatters[1].get_offsets(), x[y == 1])


def test_plot_wave_functions_one_panel_with_colour_bar_per_class():
    nodes = np.linspace(0, 1, 26)
    psis = [np.outer(nodes, nodes) * (k + 1) for k in range(2)]
    grads = [np.stack([np.ones((26, 26)), np.zeros((26, 26))]) for _ in range(2)]
    axes = plots.plot_wave_functions(nodes, psis, grads, x=np.full((4, 2), 0.5), y=np.array([0, 1, 0, 1]))
    assert len(axes) == 2
    fig = axes[0].figure
    assert len(colourbars(fig)) == 2
    np.testing.assert_array_equal(axes[1].get_images()[0].get_array(), psis[1].T)
    assert axes[0].get_title() == r"$\psi_{0}$ and $\nabla\psi_{0}$"
    assert any(type(c).__name__ == "Quiver" for c in axes[0].collections)


def test_plot_profiles_and_bounds_lines_bars_and_bound_ticks():
    x = np.linspace(0, 1, 11)
    profiles = {"sin": np.sin(np.pi * x), "tent": 1 - abs(2 * x - 1)}
    products, bounds = {"sin": 0.57, "tent": 0.55}, {"sin": 0.1, "tent": 0.2}
    left, right = plots.plot_profiles_and_bounds(x, profiles, products, bounds)
    assert [list(y) for y in ydata(left)] == [list(v) for v in profiles.values()]
    assert [bar.get_width() for bar in right.patches] == [0.57, 0.55]
    ticks = [c for c in right.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_array_equal(ticks.get_offsets()[:, 0], [0.1, 0.2])


def test_plot_coordinate_bounds_points_at_bound_and_product():
    ax = plots.plot_coordinate_bounds([0.6, 0.7], [0.1, 0.3], labels=["a", "b"])
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_array_equal(points.get_offsets(), [[0.1, 0.6], [0.3, 0.7]])
    assert ax.get_xlabel() == r"$|1 - B_i|/2$"
    assert [t.get_text() for t in ax.texts] == ["a", "b"]


def test_plot_dimension_growth_draws_both_forms_and_their_floors():
    dims = np.array([1, 10, 100])
    ax = plots.plot_dimension_growth(dims, [1, 3, 9], [0.6, 5, 50])
    lines = ydata(ax)
    assert list(lines[0]) == [1, 3, 9] and list(lines[1]) == [0.6, 5, 50]
    np.testing.assert_allclose(lines[2], dims / np.sqrt(2))
    assert ax.get_xscale() == ax.get_yscale() == "log"


# --- Chapter 5 ---------------------------------------------------------------------------------


def test_plot_convergence_error_bars_per_series_and_the_reference():
    ns = [100, 1000]
    ax = plots.plot_convergence(ns, {"uniform": ([1.0, 1.1], [0.1, 0.05])}, reference=1.05, ylabel="Δx")
    assert ax.get_ylabel() == "Δx" and ax.get_xscale() == "log"
    data_line = ax.containers[0].lines[0]
    np.testing.assert_array_equal(data_line.get_ydata(), [1.0, 1.1])
    assert any(np.allclose(y, 1.05) for y in ydata(ax))
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "1,000"]


def test_plot_error_scaling_draws_series_and_two_guides():
    ns = np.array([10, 100, 1000])
    ax = plots.plot_error_scaling(ns, {"err": [1.0, 0.3, 0.1]})
    lines = ydata(ax)
    assert len(lines) == 3 and list(lines[0]) == [1.0, 0.3, 0.1]
    np.testing.assert_allclose(lines[1], ns[0] ** 0.5 / ns**0.5)


def test_plot_pixel_maps_three_images_each_with_a_colour_bar():
    product, boundary = np.random.default_rng(0).random((2, 4, 4))
    axes = plots.plot_pixel_maps(product, boundary, product > 0.5, title="maps")
    assert len(axes) == 3 and len(colourbars(axes[0].figure)) == 3
    np.testing.assert_array_equal(axes[0].get_images()[0].get_array(), product)
    assert axes[2].get_images()[0].get_clim() == (0, 1)


def test_plot_convergence_panels_one_panel_per_quantity_extra_hidden():
    panels = {"Δx": {"u": ([1, 2], [0.1, 0.1])}, "Δp": {"u": ([3, 4], [0.1, 0.1])}, "B": {"u": ([5, 6], [0, 0])}}
    axes = plots.plot_convergence_panels([10, 20], panels, references={"Δp": 3.5}, ncols=2)
    assert axes.shape == (2, 2)
    assert [ax.get_ylabel() for ax in axes.flat[:3]] == list(panels)
    assert not axes.flat[3].get_visible()


# --- Chapters 6–8 --------------------------------------------------------------------------------


def test_plot_feature_embedding_clean_dots_and_attacked_crosses():
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 4
    embedding = rng.normal(size=(40, 2))
    ax = plots.plot_feature_embedding(embedding, labels, highlight=2, k=3)
    clean, attacked = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(clean.get_offsets(), embedding[:20][labels == 2])
    np.testing.assert_array_equal(attacked.get_offsets(), embedding[20:][labels == 2])
    assert len(ax.get_images()) == 1 and ax.get_title() == "class 2"


def test_plot_dx_dp_epochs_points_coloured_by_epoch_with_colour_bar():
    dx, dp = [1.0, 1.1, 1.2], [2.0, 1.9, 1.8]
    ax = plots.plot_dx_dp_epochs(dx, dp, [0.01] * 3, [0.02] * 3, [1, 2, 3])
    points = [c for c in ax.collections if isinstance(c, PathCollection)][0]
    np.testing.assert_array_equal(points.get_offsets(), np.c_[dx, dp])
    np.testing.assert_array_equal(points.get_array(), [1, 2, 3])
    assert len(colourbars(ax.figure)) == 1
    bare = plots.plot_dx_dp_epochs(dx, dp, None, None, [1, 2, 3], colorbar=False)
    assert colourbars(bare.figure) == []


def test_plot_epoch_diagnostics_three_panels_one_line_per_space():
    spaces = {name: {"frac_below_half": [0.1, 0.2], "mean_boundary": [0.5, 0.4], "min_product": [0.3, 0.2]}
              for name in ("pixel", "feature")}
    axes = plots.plot_epoch_diagnostics([1, 2], spaces)
    assert len(axes) == 3
    assert [list(y) for y in ydata(axes[0])] == [[0.1, 0.2], [0.1, 0.2]]
    assert axes[2].get_yscale() == "log" and len(axes[2].get_lines()) == 3  # plus the 1/2 line


def test_every_public_plot_function_has_a_smoke_test():
    public = {name for name in dir(plots) if name.startswith("plot_")}
    tested = {name for name in globals() if name.startswith("test_")}
    source = open(__file__, encoding="utf-8").read()
    assert tested and all(f"plots.{name}" in source or f'"{name}"' in source for name in public), public
