"""The examples run with short settings, and the numbers they print are right."""
import pathlib
import re
import runpy
import sys

import numpy as np
import pytest

from tinycore._examples import (
    EXAMPLES, activation_functions, backprop_by_hand, digits, gradient_descent,
    vanishing_gradients,
)

CHECKOUT = pathlib.Path(__file__).resolve().parents[1]
NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"


def run(module, argv, capsys):
    code = module.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err


# -- gradient descent ----------------------------------------------------------------

def gd_runs(out):
    """{lr: [(k, w, J), ...]} from the printed tables."""
    runs, current = {}, None
    for line in out.splitlines():
        head = re.match(r"lr = (\S+) \(SGD lr (\S+) on sse\)", line)
        if head:
            current = runs.setdefault(float(head.group(1)), [])
            assert float(head.group(2)) == pytest.approx(2 * float(head.group(1)))
            continue
        row = re.fullmatch(rf"\s*(\d+)\s+({NUMBER})\s+({NUMBER})", line)
        if row and current is not None:
            current.append((int(row.group(1)), float(row.group(2)), float(row.group(3))))
    return runs


def test_gradient_descent_prints_the_hand_formula(capsys):
    code, out, _ = run(gradient_descent, ["--steps", "6"], capsys)
    assert code == 0
    runs = gd_runs(out)
    assert sorted(runs) == [0.4, 1.5, 2.5]
    x = np.array([0.3, 0.4, 0.5])
    z = 2 * x
    for lr, rows in runs.items():
        assert [k for k, _, _ in rows] == list(range(7))
        w = 0.2
        for _, printed_w, printed_J in rows:
            # The seed's cost and step, by hand: J = sum (z - w x)^2,
            # w <- w - lr dJ/dw with dJ/dw = -2 sum x (z - w x).
            assert printed_w == pytest.approx(w, rel=1e-9, abs=1e-12)
            assert printed_J == pytest.approx(np.sum((z - w * x) ** 2), rel=1e-9)
            w = w - lr * (-2 * np.sum(x * (z - w * x)))
    # The closed forms: w_k - 2 = -1.8 (1 - lr)^k, since S = sum x^2 = 0.5.
    for lr, rows in runs.items():
        for k, w, _ in rows:
            assert w - 2 == pytest.approx(-1.8 * (1 - lr) ** k, rel=1e-9)
    assert runs[0.4][1][1] == pytest.approx(0.92) and runs[0.4][2][1] == pytest.approx(1.352)
    assert "stable for 0 < lr < 1/S = 2" in out
    assert "converges: every step" in out
    assert "overshoots" in out and "diverges" in out
    assert "J/2" in out                             # which cost the lr applies to


def test_gradient_descent_options_and_bad_arguments(capsys, tmp_path):
    code, out, _ = run(gradient_descent, ["--lr", "0.1", "--overshoot-lr", "1.2",
                                          "--diverge-lr", "3", "--steps", "2", "--w0", "1"],
                       capsys)
    assert code == 0 and sorted(gd_runs(out)) == [0.1, 1.2, 3.0]
    assert gd_runs(out)[0.1][1][1] == pytest.approx(1 + 0.1 * 1.0)   # w1 = w0 - lr (w0 - 2)
    for argv in (["--steps", "0"], ["--lr", "-1"], ["--lr", "abc"], ["--bogus"]):
        code, _, err = run(gradient_descent, argv, capsys)
        assert_one_line_error(code, err)


def test_gradient_descent_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = run(gradient_descent, ["--steps", "3", "--plot", str(tmp_path / "d.png")],
                       capsys)
    assert code == 0
    for lr in ("0.4", "1.5", "2.5"):
        assert (tmp_path / f"d_lr{lr}.png").stat().st_size > 1000


# -- backprop by hand --------------------------------------------------------------------

def bp_table(out):
    rows = {}
    for line in out.splitlines():
        row = re.fullmatch(rf"(\S+(?: \S+)?)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})", line)
        if row:
            rows[row.group(1)] = tuple(float(row.group(i)) for i in (2, 3, 4))
    return rows


def test_backprop_by_hand_agrees_with_tinycore(capsys):
    code, out, _ = run(backprop_by_hand, [], capsys)
    assert code == 0
    rows = bp_table(out)
    assert len(rows) == 13
    for name, (hand, engine, difference) in rows.items():
        assert hand == pytest.approx(engine, abs=1e-10), name
        assert difference < 1e-10
    # The seed's numbers (tests/test_worked_examples.py has the arithmetic).
    assert rows["a1"][0] == pytest.approx(0.602286, abs=1e-6)
    assert rows["a2"][0] == pytest.approx(0.715252, abs=1e-6)
    assert rows["E"][0] == pytest.approx(0.108230, abs=1e-6)
    assert rows["dE/dw2"][0] == pytest.approx(0.057070, abs=1e-6)
    assert rows["new w2"][0] == pytest.approx(0.427172, abs=1e-6)
    assert rows["new b2"][0] == pytest.approx(0.612098, abs=1e-6)
    assert rows["new w1"][0] == pytest.approx(0.149591, abs=1e-6)
    assert rows["new b1"][0] == pytest.approx(0.395914, abs=1e-6)
    assert "they agree" in out


def test_backprop_by_hand_other_numbers(capsys):
    code, out, _ = run(backprop_by_hand, ["--x", "1", "--target", "0.9", "--lr", "1"], capsys)
    assert code == 0
    rows = bp_table(out)
    # new w1 = w1 - lr dE/dw1, in the printed numbers themselves.
    assert rows["new w1"][0] == pytest.approx(0.15 - rows["dE/dw1"][0], abs=2e-10)
    assert all(abs(hand - engine) < 1e-10 for hand, engine, _ in rows.values())
    code, _, err = run(backprop_by_hand, ["--lr", "0"], capsys)
    assert_one_line_error(code, err)
    code, _, err = run(backprop_by_hand, ["--x", "nan"], capsys)
    assert_one_line_error(code, err)


# -- vanishing gradients -------------------------------------------------------------

def test_vanishing_gradients(capsys):
    code, out, _ = run(vanishing_gradients, ["--epochs", "2", "--samples", "64"], capsys)
    assert code == 0
    norms = []
    before_training = out.split("first/last ratio")[0]
    for line in before_training.splitlines():
        row = re.fullmatch(rf"\s*(\d+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})",
                           line)
        if row:
            norms.append([float(row.group(i)) for i in range(1, 6)])
    assert [row[0] for row in norms] == list(range(10))
    sigmoid, relu = [row[1] for row in norms], [row[3] for row in norms]
    # The printed ratio columns are the norms over the last layer's.
    for k in range(10):
        assert norms[k][2] == pytest.approx(sigmoid[k] / sigmoid[-1], rel=2e-2)
        assert norms[k][4] == pytest.approx(relu[k] / relu[-1], rel=2e-2)
    ratios = dict(re.findall(rf"^  (sigmoid|relu)\s+({NUMBER})  \(about", out, re.M))
    sigmoid_ratio, relu_ratio = float(ratios["sigmoid"]), float(ratios["relu"])
    assert sigmoid_ratio == pytest.approx(sigmoid[0] / sigmoid[-1], rel=2e-3)
    # Sigmoid: near the 0.25^9 = 3.8e-6 of the seed; ReLU with He init: no vanishing.
    assert sigmoid_ratio < 1e-4
    assert relu_ratio > 1e-2
    assert "0.25^9 = 3.815e-06" in out
    assert "<-- vanishing" in out and "saturating activation" in out
    epochs = re.findall(rf"^\s+(\d+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})$",
                        out.split("training, SGD")[1], re.M)
    assert [int(row[0]) for row in epochs] == [1, 2]
    assert "test accuracy" in out


def test_vanishing_gradients_plot_and_bad_arguments(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    target = tmp_path / "curves.png"
    code, out, _ = run(vanishing_gradients, ["--epochs", "1", "--samples", "32",
                                             "--plot", str(target)], capsys)
    assert code == 0
    for path in (target, tmp_path / "curves_grads_sigmoid.png",
                 tmp_path / "curves_grads_relu.png"):
        assert path.stat().st_size > 1000
    for argv in (["--epochs", "0"], ["--seed", "-1"], ["--width", "x"], ["--samples", "3"]):
        code, _, err = run(vanishing_gradients, argv, capsys)
        assert_one_line_error(code, err)


# -- activation functions ----------------------------------------------------------------

def test_activation_functions_table(capsys):
    code, out, _ = run(activation_functions, ["--epochs", "3", "--samples", "64"], capsys)
    assert code == 0
    table = {}
    for line in out.splitlines():
        row = re.fullmatch(rf"(\w+)\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})\s+({NUMBER})"
                           rf"\s+({NUMBER})", line)
        if row:
            table[row.group(1)] = [float(row.group(i)) for i in range(2, 7)]
    assert list(table) == ["sigmoid", "tanh", "relu", "leaky_relu", "linear", "step",
                           "softmax"]
    for name, (loss, train_acc, test_acc, grad, moved) in table.items():
        assert np.isfinite(loss) and 0 <= train_acc <= 1 and 0 <= test_acc <= 1
        if name == "step":
            assert grad == 0 and moved == 0       # no gradient, no movement
        else:
            assert grad > 0 and moved > 0
    assert "derivative is 0 everywhere" in out


def test_activation_functions_subset_plot_and_bad_arguments(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    code, out, _ = run(activation_functions, ["--epochs", "2", "--samples", "32",
                                              "--activations", "relu,step",
                                              "--plot", str(tmp_path / "a.png")], capsys)
    assert code == 0 and "tanh" not in out.split("W0 moved")[1].split("linear:")[0]
    assert (tmp_path / "a.png").stat().st_size > 1000
    code, _, err = run(activation_functions, ["--activations", "relux"], capsys)
    assert_one_line_error(code, err)


# -- the scripts in examples/ ------------------------------------------------------------

SHORT = {
    "gradient_descent": ["--steps", "2"],
    "backprop_by_hand": [],
    "vanishing_gradients": ["--epochs", "1", "--samples", "32"],
    "activation_functions": ["--epochs", "1", "--samples", "32"],
    "digits": ["--epochs", "1", "--timing-steps", "2"],
}


# -- digits ---------------------------------------------------------------------------

def test_digits_reaches_95_percent_and_times_numpy(capsys):
    pytest.importorskip("sklearn")
    code, out, _ = run(digits, ["--timing-steps", "5"], capsys)
    assert code == 0
    assert "1438 training and 359 test images" in out
    accuracy = float(re.search(rf"test accuracy ({NUMBER})", out).group(1))
    assert accuracy >= 0.95
    tinycore_us, numpy_us, ratio = map(float, re.search(
        rf"tinycore ({NUMBER}) us, NumPy ({NUMBER}) us \(({NUMBER})x\)", out).groups())
    assert ratio == pytest.approx(numpy_us / tinycore_us, rel=0.06)


def test_digits_split_is_stratified():
    pytest.importorskip("sklearn")
    X_train, y_train, X_test, y_test = digits.load_digits(seed=0)
    assert X_train.dtype == np.float32 and 0 <= X_train.min() and X_train.max() <= 1
    assert len(X_train) + len(X_test) == 1797
    # About a fifth of every digit is held out.
    for digit in range(10):
        held_out, total = np.sum(y_test == digit), np.sum(y_test == digit) + np.sum(y_train == digit)
        assert held_out / total == pytest.approx(0.2, abs=0.01)


def test_digits_without_scikit_learn_names_the_extra(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    code, _, err = run(digits, [], capsys)
    assert_one_line_error(code, err)
    assert 'pip install "tinycore[examples]"' in err


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_scripts_are_thin_wrappers(name, monkeypatch, capsys):
    if name == "digits":
        pytest.importorskip("sklearn")
    script = CHECKOUT / "examples" / f"{name}.py"
    if not script.exists():
        pytest.skip("examples/ is not shipped beside this test run")
    monkeypatch.setattr(sys, "argv", [str(script), *SHORT[name]])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_help(name, capsys):
    module = sys.modules[f"tinycore._examples.{name}"]
    code, out, _ = run(module, ["--help"], capsys)
    assert code == 0 and out.startswith("usage: tinycore demo " + name)
