"""tinycore.plot: every figure renders headless to a PNG; matplotlib stays optional."""
import inspect
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import tinycore as tc
from tinycore import plot

PNG = b"\x89PNG\r\n\x1a\n"
CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


def assert_png(path):
    data = pathlib.Path(path).read_bytes()
    assert data.startswith(PNG) and len(data) > 1000


def trained_history(**extra):
    X, y = tc.datasets.make_moons(64, seed=0)
    model = tc.Sequential([tc.Dense(2, 8, "relu"), tc.Dense(8, 8, "tanh"),
                           tc.Dense(8, 2, "softmax")], seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.3))
    return model.fit(X, y, epochs=3, batch_size=16, verbose=0, **extra)


# -- without matplotlib ------------------------------------------------------------

CALLS = [
    lambda: plot.activations(),
    lambda: plot.history({"loss": [1.0, 0.5]}),
    lambda: plot.gradient_flow([[1.0, 2.0]]),
    lambda: plot.descent_path(),
]


@pytest.mark.parametrize("call", CALLS, ids=["activations", "history", "gradient_flow",
                                             "descent_path"])
def test_missing_matplotlib_names_the_extra(call, monkeypatch):
    # None in sys.modules makes "import matplotlib" raise ImportError.
    for name in [name for name in sys.modules if name.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'pip install "tinycore\[plot\]"'):
        call()


def test_importing_tinycore_does_not_import_matplotlib(tmp_path):
    # From a neutral folder: "python -c" puts the working directory first on
    # sys.path, and the checkout's tinycore/ has no compiled modules.
    code = "import sys, tinycore; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, cwd=tmp_path)
    assert result.stdout.strip() == "False"


def test_plot_extra_is_declared():
    tomllib = pytest.importorskip("tomllib")          # Python 3.11+
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    assert any(req.startswith("matplotlib") for req in
               project["project"]["optional-dependencies"]["plot"])
    assert "tinycore._examples" in project["tool"]["setuptools"]["packages"]


# -- with matplotlib ---------------------------------------------------------------

@pytest.fixture
def mpl():
    return pytest.importorskip("matplotlib")


def test_activations(mpl, tmp_path):
    from matplotlib.figure import Figure
    fig = plot.activations(path=tmp_path / "all.png")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * len(tc.activations.NAMES)   # f and f' side by side
    assert_png(tmp_path / "all.png")
    fig = plot.activations(["softmax", "step"], path=tmp_path / "two.png")
    assert len(fig.axes) == 4
    assert_png(tmp_path / "two.png")
    # softmax([z, 0])[0] is sigmoid(z); its derivative peaks at 0.25.
    z, values = fig.axes[0].lines[0].get_data()
    np.testing.assert_allclose(values, 1 / (1 + np.exp(-z)), rtol=1e-12)
    _, slopes = fig.axes[1].lines[0].get_data()
    assert slopes.max() == pytest.approx(0.25, abs=1e-4)
    # step's derivative is 0 everywhere.
    assert not np.any(fig.axes[3].lines[0].get_data()[1])
    with pytest.raises(ValueError, match="unknown activation"):
        plot.activations(["relux"])


def test_no_pyplot_state(mpl, tmp_path):
    plot.descent_path(path=tmp_path / "d.png")
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:          # imported by someone else: we added no figure
        assert pyplot.get_fignums() == []


def test_history(mpl, tmp_path):
    history = trained_history()
    fig = plot.history(history, path=tmp_path / "h.png")
    assert len(fig.axes) == 2                  # loss, accuracy
    assert_png(tmp_path / "h.png")
    fig = plot.history(history.history)        # the dict itself
    np.testing.assert_allclose(fig.axes[0].lines[0].get_data()[1], history.history["loss"])
    fig = plot.history({"a": history, "b": {"loss": [3.0, 2.0, 1.0]}},
                       path=tmp_path / "runs.png")
    assert {line.get_label() for line in fig.axes[0].lines} == {"a loss", "b loss"}
    assert_png(tmp_path / "runs.png")
    assert len(plot.history({"loss": [1.0, 0.5]}).axes) == 1
    with pytest.raises(ValueError, match="no metrics"):
        plot.history({})
    with pytest.raises(TypeError):
        plot.history([1, 2])


def test_gradient_flow(mpl, tmp_path):
    norms = [[1e-6, 1e-3, 1e-1], [2e-6, 2e-3, 2e-1], [0.0, 1e-3, 1e-1]]
    fig = plot.gradient_flow(norms, path=tmp_path / "g.png")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert len(ax.lines) == 3                  # one line per layer
    assert np.isnan(ax.lines[0].get_data()[1][2])   # a zero is not drawn on a log scale
    assert_png(tmp_path / "g.png")
    assert len(plot.gradient_flow([1e-3, 1e-1]).axes[0].lines) == 2   # one epoch
    assert len(plot.gradient_flow({"grad_norms": norms}).axes[0].lines) == 3
    with pytest.raises(ValueError, match="grad_norms"):
        plot.gradient_flow(trained_history())
    with pytest.raises(ValueError, match="list"):
        plot.gradient_flow([[1.0, 2.0], [1.0]])


def test_gradient_flow_from_fit_tracking(mpl, tmp_path):
    if "track_gradients" not in inspect.signature(tc.Sequential.fit).parameters:
        pytest.skip("fit(track_gradients=True) not available")
    history = trained_history(track_gradients=True)
    fig = plot.gradient_flow(history, path=tmp_path / "tracked.png")
    assert len(fig.axes[0].lines) == 3
    assert_png(tmp_path / "tracked.png")
    # The per-layer lists are left out of the loss/accuracy curves.
    assert len(plot.history(history).axes) == 2


def test_descent_path(mpl, tmp_path):
    fig = plot.descent_path(path=tmp_path / "d.png")
    assert_png(tmp_path / "d.png")
    # The drawn steps are the seed's: w_k = 2 - 1.8 * 0.6^k with lr 0.4 on
    # J = sum (z - w x)^2 over x = 0.3, 0.4, 0.5.
    ws, costs = fig.axes[0].lines[1].get_data()
    np.testing.assert_allclose(ws, [2 - 1.8 * 0.6 ** k for k in range(11)], rtol=1e-12)
    np.testing.assert_allclose(costs, 0.5 * (np.asarray(ws) - 2) ** 2, rtol=1e-9)
    # A diverging rate stops before the numbers blow up; a custom cost works.
    fig = plot.descent_path(lr=2.5, steps=100)
    assert np.all(np.abs(fig.axes[0].lines[1].get_data()[0]) <= 1e6)
    fig = plot.descent_path(loss_fn=lambda w: (w - 1.0) ** 2, w0=0.0, lr=0.25, steps=3,
                            path=tmp_path / "custom.png")
    ws = fig.axes[0].lines[1].get_data()[0]
    np.testing.assert_allclose(ws, [0.0, 0.5, 0.75, 0.875], atol=1e-8)
    assert_png(tmp_path / "custom.png")
    with pytest.raises(ValueError, match="steps"):
        plot.descent_path(steps=-1)
