"""Smoke tests for qnnlib.plots (Agg backend): each function draws on the axes it promises, the data
it was given (plotted y-data equals the input), with its labels, and a colour bar where it draws a
colour map."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from types import SimpleNamespace  # noqa: E402

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
    assert ax.get_xlabel() == r"$\Delta x\cdot\Delta p$"
    assert plots.plot_products(names, products, xlabel="Δt·Δν").get_xlabel() == "Δt·Δν"
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
    assert len(fig.axes) == 2 * 4 + 1 and len(colourbars(fig)) == 1  # one bar for the gradient row
    assert all(len(ax.get_images()) == 1 for ax in fig.axes[:8])
    np.testing.assert_array_equal(fig.axes[0].get_images()[0].get_array(), x[0, 0].numpy())
    assert fig.axes[0].get_title() == "y = 0"
    clim = fig.axes[4].get_images()[0].get_clim()  # the gradient row: a symmetric scale
    assert clim[0] == -clim[1] == pytest.approx(-float(g[0].abs().max()))


def test_plot_attack_examples_three_rows_and_red_titles_for_mistakes():
    x = torch.rand(3, 3, 5, 5)
    x_adv = (x + 0.05).clamp(0, 1)
    y, clean, adv = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2]), torch.tensor([0, 2, 2])
    fig = plots.plot_attack_examples(x, x_adv, y, clean, adv, eps=0.05, n=3, classes=["a", "b", "c"])
    assert len(fig.axes) == 9 + 1 and len(colourbars(fig)) == 1  # one bar for the δ row
    assert colourbars(fig)[0].get_ylim() == pytest.approx((-0.05, 0.05))
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


# --- The book's figure style: every function, drawn with its own figure -----------------------

_RNG = np.random.default_rng(1)
_NODES = np.linspace(0, 1, 26)
_X = np.linspace(-10, 10, 401)
_PSI = quantum.gaussian_packet(_X, width=1.5)
_P, _PHI = quantum.momentum_wavefunction(_X, _PSI)
_IMAGES = torch.rand(8, 1, 8, 8)
_CURVES = {"clean test accuracy": [0.9, 0.95, 0.97], "robust, pixels (PGD-4, ε = 8/255)": [0.1, 0.05, 0.02]}
_SPACES = {s: {"frac_below_half": [0.0, 0.0, 0.0], "mean_boundary": [1.00001, 1.00002, 1.00003],
               "min_product": [0.6, 0.7, 0.8]} for s in ("pixel", "feature")}

# One call per public plot function, each drawing its default (own) figure; returns the figure.
_FACE = SimpleNamespace(boundary=np.array([1.2, 0.8, 1.0]), boundary_stderr=np.array([0.1, 0.1, 0.1]),
                        volume_boundary=np.array([1.01, 0.99, 1.0]), volume_boundary_stderr=np.zeros(3), n_face=64)

DRAW = {
    "plot_packet": lambda: plots.plot_packet(_X, _PSI, _P, _PHI, quantum.spreads(_X, _PSI)),
    "plot_products": lambda: plots.plot_products(list(quantum.PACKETS), [0.5, 0.52, 0.55, 0.6, 1.2][: len(quantum.PACKETS)]).figure,
    "plot_tradeoff": lambda: plots.plot_tradeoff([0.5, 1.0, 2.0], [1.0, 0.5, 0.25]).figure,
    "plot_input_gradients": lambda: plots.plot_input_gradients(_IMAGES, torch.randn(8, 1, 8, 8), labels=torch.arange(8)),
    "plot_attack_examples": lambda: plots.plot_attack_examples(
        _IMAGES, (_IMAGES + 0.1).clamp(0, 1), torch.arange(8), torch.arange(8), torch.arange(8).flip(0), eps=0.1),
    "plot_accuracy_vs_eps": lambda: plots.plot_accuracy_vs_eps([0, 0.1, 0.2], _CURVES, dataset="MNIST").figure,
    "plot_loss_along_directions": lambda: plots.plot_loss_along_directions([0, 0.1, 0.2], _CURVES).figure,
    "plot_toy_classifier": lambda: plots.plot_toy_classifier(
        _NODES, (np.add.outer(np.arange(26), np.arange(26)) // 18), _RNG.random((30, 2)), np.arange(30) % 3).figure,
    "plot_wave_functions": lambda: plots.plot_wave_functions(
        _NODES, [np.outer(_NODES, _NODES) * (k + 1) for k in range(3)],
        [np.stack([np.ones((26, 26)), np.zeros((26, 26))])] * 3)[0].figure,
    "plot_profiles_and_bounds": lambda: plots.plot_profiles_and_bounds(
        _NODES, {"sine": np.sin(np.pi * _NODES), "tent": 1 - abs(2 * _NODES - 1)},
        {"sine": 0.57, "tent": 0.55}, {"sine": 0.1, "tent": 0.2})[0].figure,
    "plot_coordinate_bounds": lambda: plots.plot_coordinate_bounds([0.6, 0.7], [0.1, 0.3], labels=["Y=0, $x_1$", "Y=1, $x_2$"]).figure,
    "plot_dimension_growth": lambda: plots.plot_dimension_growth(np.array([1, 10, 100, 784]), [1, 3, 9, 25], [0.6, 5, 50, 390]).figure,
    "plot_convergence": lambda: plots.plot_convergence([100, 1000, 10000], {"uniform": ([1.0, 1.1, 1.05], [0.1, 0.05, 0.01])},
                                                       reference=1.05).figure,
    "plot_error_scaling": lambda: plots.plot_error_scaling(np.array([10, 100, 1000]), {"uniform": [1.0, 0.3, 0.1]}).figure,
    "plot_pixel_maps": lambda: plots.plot_pixel_maps(*_RNG.random((2, 28, 28)), np.ones((28, 28)), title="maps")[0].figure,
    "plot_convergence_panels": lambda: plots.plot_convergence_panels(
        [10, 100, 1000], {q: {"uniform": ([1, 2, 3], [0.1, 0.1, 0.1]), "sobol": ([1, 2, 3], [0.1, 0.1, 0.1])}
                          for q in (r"$\Delta x$", r"$\Delta p$", "$B$", "product")}, title="panels")[0, 0].figure,
    "plot_feature_embedding": lambda: plots.plot_feature_embedding(_RNG.normal(size=(80, 2)), np.arange(40) % 10, k=3).figure,
    "plot_training_curves": lambda: plots.plot_training_curves([1, 2, 3], _CURVES).figure,
    "plot_dx_dp_epochs": lambda: plots.plot_dx_dp_epochs([27.00012, 27.00015, 27.00019], [2.0, 1.9, 1.8], [1e-5] * 3,
                                                         [0.02] * 3, [1, 2, 3]).figure,
    "plot_epoch_diagnostics": lambda: plots.plot_epoch_diagnostics([1, 2, 3], _SPACES)[0].figure,
    "plot_face_vs_volume": lambda: plots.plot_face_vs_volume(_FACE).figure,
    "plot_fragility": lambda: plots.plot_fragility(
        {"min_eps": _RNG.uniform(0.01, 0.2, 40), "dp": _RNG.uniform(10, 30, 40), "margin": _RNG.uniform(0.5, 30, 40),
         "reliable": np.arange(40) % 7 != 0}, ["dp", "margin"], labels={"dp": r"local $\Delta p$"},
        rho={"dp": {"rho": -0.06, "low": -0.15, "high": 0.03}})[0].figure,
}


def test_every_public_plot_function_is_drawn_in_the_style_tests_and_uses_the_style():
    public = {name for name in dir(plots) if name.startswith("plot_")}
    assert public == set(DRAW), public ^ set(DRAW)
    assert all(getattr(getattr(plots, name), "book_style", False) for name in public)


def _visible_texts(fig):
    fig.canvas.draw()
    return [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]


def _has_offset(axis):
    """Whether an axis prints an offset ("+1", "1e−5+1"), not just a scale factor ("1e−5")."""
    text = axis.get_offset_text().get_text()
    return "+" in text or text.startswith(("−", "-"))


def _draw_outside_the_style(name):
    """Draw with matplotlib's defaults, as if a reader had reset them: the style must still hold."""
    with matplotlib.rc_context(matplotlib.rcParamsDefault):
        matplotlib.use("Agg")
        return DRAW[name]()


@pytest.mark.parametrize("name", sorted(DRAW))
def test_figure_fits_the_column(name):
    fig = _draw_outside_the_style(name)
    width, _ = fig.get_size_inches()
    assert width <= plots.COLUMN_WIDTH + 1e-9, f"{name}: {width:.2f} in wide"


@pytest.mark.parametrize("name", sorted(DRAW))
def test_every_text_is_at_least_the_minimum_font_size(name):
    fig = _draw_outside_the_style(name)
    small = [(t.get_text()[:30], t.get_fontsize()) for t in _visible_texts(fig)
             if t.get_fontsize() < plots.MIN_FONT_SIZE]
    assert not small, f"{name}: text below {plots.MIN_FONT_SIZE} pt: {small}"


@pytest.mark.parametrize("name", sorted(DRAW))
def test_every_colour_map_has_a_colour_bar(name):
    """An image on a continuous colour map needs a bar; grey pictures and class regions do not."""
    from matplotlib.colors import ListedColormap

    fig = _draw_outside_the_style(name)
    mapped = [image for ax in fig.axes if ax.get_label() != "<colorbar>" for image in ax.get_images()
              if image.get_cmap().name != "gray" and not isinstance(image.get_cmap(), ListedColormap)]
    mapped += [c for ax in fig.axes if ax.get_label() != "<colorbar>" for c in ax.collections
               if isinstance(c, PathCollection) and c.get_array() is not None]
    if mapped:
        assert colourbars(fig), f"{name}: {len(mapped)} colour-mapped artists, no colour bar"


@pytest.mark.parametrize("name", sorted(DRAW))
def test_no_offset_on_the_axes_and_legends_clear_of_the_labels(name):
    fig = _draw_outside_the_style(name)
    fig.canvas.draw()  # ticks, offsets and the legend's place are decided when drawing
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            assert not _has_offset(axis), f"{name}: axis offset {axis.get_offset_text().get_text()!r}"
        legend = ax.get_legend()
        if legend is None:
            continue
        box = legend.get_window_extent(renderer)
        labels = [ax.xaxis.label, ax.yaxis.label, ax.title] + ax.get_xticklabels() + ax.get_yticklabels()
        covered = [t.get_text() for t in labels
                   if t.get_visible() and t.get_text() and box.overlaps(t.get_window_extent(renderer))]
        assert not covered, f"{name}: the legend covers {covered}"


def test_the_style_checks_fail_on_a_figure_that_breaks_them():
    """Tests of the tests: a too-wide figure with 7-pt text, a colour map without bar, a +1 offset."""
    fig, ax = plt.subplots(figsize=(10, 3))
    ax.imshow(np.random.default_rng(0).random((4, 4)), cmap="viridis")
    ax.set_title("small", fontsize=7)
    fig.canvas.draw()
    assert fig.get_size_inches()[0] > plots.COLUMN_WIDTH
    assert any(t.get_fontsize() < plots.MIN_FONT_SIZE for t in _visible_texts(fig))
    assert not colourbars(fig)
    with matplotlib.rc_context({"axes.formatter.useoffset": True}):
        fig2, ax2 = plt.subplots()
        ax2.plot([1.00001, 1.00002, 1.00003])
        fig2.canvas.draw()
        assert _has_offset(ax2.yaxis)
    with plots.book_style():
        fig3, ax3 = plt.subplots()
        ax3.plot([1.00001, 1.00002, 1.00003])
        fig3.canvas.draw()
        assert not _has_offset(ax3.yaxis)


def test_subplots_keeps_the_column_width_and_refuses_wider():
    fig, axes = plots.subplots(1, 3)
    assert tuple(fig.get_size_inches()) == (plots.COLUMN_WIDTH, 2.9) and len(axes) == 3
    with pytest.raises(ValueError, match="width must be in"):
        plots.subplots(1, 3, width=9)


def test_panel_selections_draw_fewer_panels_and_refuse_unknown_ones():
    psis = [np.outer(_NODES, _NODES) * (k + 1) for k in range(3)]
    grads = [np.stack([np.ones((26, 26)), np.zeros((26, 26))])] * 3
    axes = plots.plot_wave_functions(_NODES, psis, grads, classes=[2])
    assert len(axes) == 1 and axes[0].get_title() == r"$\psi_{2}$ and $\nabla\psi_{2}$"
    np.testing.assert_array_equal(axes[0].get_images()[0].get_array(), psis[2].T)
    with pytest.raises(ValueError, match="classes"):
        plots.plot_wave_functions(_NODES, psis, grads, classes=[3])
    maps = plots.plot_pixel_maps(*_RNG.random((3, 4, 4)), panels=("boundary",))
    assert len(maps) == 1 and maps[0].get_title() == "$B_i$"
    with pytest.raises(ValueError, match="panels"):
        plots.plot_pixel_maps(*_RNG.random((3, 4, 4)), panels=("ess",))
    diag = plots.plot_epoch_diagnostics([1, 2, 3], _SPACES, keys=["min_product"])
    assert len(diag) == 1 and diag[0].get_yscale() == "log" and diag[0].get_xlabel() == "epoch"
    with pytest.raises(ValueError, match="keys"):
        plots.plot_epoch_diagnostics([1, 2, 3], _SPACES, keys=["ess"])


def test_a_log_axis_over_several_decades_labels_its_major_ticks_only():
    """Fig. 6.6's smallest Δx_iΔp_i spans 1e-4 to 0.5: labelled minor ticks overprinted each other."""
    wide = {"pixel": {"min_product": [1e-4, 3e-3, 0.4]}}
    narrow = {"pixel": {"min_product": [0.55, 0.6, 0.7]}}
    for spaces, minor_labels in ((wide, False), (narrow, True)):
        (ax,) = plots.plot_epoch_diagnostics([1, 2, 3], spaces, keys=["min_product"])
        ax.figure.canvas.draw()
        labels = [t.get_text() for t in ax.yaxis.get_minorticklabels() if t.get_visible() and t.get_text()]
        assert bool(labels) == minor_labels, labels
        plt.close(ax.figure)


def test_plot_dx_dp_epochs_draws_unreliable_epochs_hollow():
    dx, dp = [1.0, 1.1, 1.2], [2.0, 1.9, 1.8]
    ax = plots.plot_dx_dp_epochs(dx, dp, None, None, [1, 2, 3], reliable=[True, False, True])
    filled, hollow = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(filled.get_offsets(), [[1.0, 2.0], [1.2, 1.8]])
    np.testing.assert_array_equal(hollow.get_offsets(), [[1.1, 1.9]])
    assert hollow.get_facecolors().size == 0  # hollow: no face colour


def test_plot_training_curves_marks_unreliable_epochs_hollow():
    ax = plots.plot_training_curves([1, 2, 3], {"Δp": [1.0, 5.0, 2.0], "acc": [0.1, 0.2, 0.3]},
                                    reliable={"Δp": [True, False, True]})
    lines = ax.get_lines()
    assert len(lines) == 3  # two curves and one set of hollow markers
    hollow = [line for line in lines if line.get_markerfacecolor() == "none"]
    assert len(hollow) == 1 and list(hollow[0].get_xdata()) == [2] and list(hollow[0].get_ydata()) == [5.0]


def test_plot_feature_embedding_shades_by_the_given_regions():
    rng = np.random.default_rng(0)
    emb = np.r_[rng.normal(size=(20, 2)), rng.normal(size=(20, 2))]
    ax = plots.plot_feature_embedding(emb, np.zeros(20, int), regions=np.full(20, 3))
    assert np.all(ax.get_images()[0].get_array() == 3)  # the regions, not the labels


def test_plot_face_vs_volume_one_point_per_coordinate_sorted_by_volume_form():
    ax = plots.plot_face_vs_volume(_FACE)
    face_line, volume_line = [line for line in ax.get_lines() if line.get_marker() in ("o", "s")]
    assert list(volume_line.get_ydata()) == [0.99, 1.0, 1.01]
    assert list(face_line.get_ydata()) == [0.8, 1.0, 1.2]  # each face value stays with its coordinate


def test_plot_fragility_one_panel_per_predictor_unreliable_hollow_and_rho_in_the_title():
    columns = {"min_eps": np.array([0.01, 0.02, 0.05, 0.2]), "dp": np.array([1.0, 2.0, 3.0, 4.0]),
               "margin": np.array([0.5, 2.0, 8.0, 40.0]), "reliable": np.array([True, True, False, True])}
    axes = plots.plot_fragility(columns, ["dp", "margin"], rho={"margin": {"rho": 0.9, "low": 0.8, "high": 0.95}})
    assert len(axes) == 2
    dots = [c for c in axes[0].collections]
    assert [len(c.get_offsets()) for c in dots] == [3, 1]           # reliable filled, unreliable apart
    assert axes[1].get_xscale() == "log" and axes[0].get_xscale() == "linear"  # margin spans > a decade
    assert axes[0].get_yscale() == "log"                              # ε* spans a decade
    assert "+0.90" in axes[1].get_title() and axes[0].get_title() == ""
    assert axes[0].get_legend() is not None and axes[1].get_legend() is None   # one legend per figure
    with pytest.raises(ValueError, match="not in the table"):
        plots.plot_fragility(columns, ["lipschitz"])
