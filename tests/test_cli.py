"""``python -m tinycore``: the default run, train, demo, bench; bad input exits 2 in one line."""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import tinycore as tc
from tinycore import __main__ as cli
from tinycore._examples import EXAMPLES

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def run(argv, capsys):
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], err
    for word in words:
        assert word in lines[0]


def test_no_arguments_trains_on_spirals_as_before(capsys):
    # The README's first command: a ReLU network, softmax output, spirals,
    # one line per epoch, then the held-out accuracy.
    code, out, err = run([], capsys)
    assert code == 0, err
    epochs = re.findall(rf"^epoch (\d+)/30 - loss ({NUMBER}) - accuracy ({NUMBER})", out, re.M)
    assert [int(e[0]) for e in epochs] == list(range(1, 31))
    assert float(epochs[-1][1]) < float(epochs[0][1])
    final = re.search(rf"test loss ({NUMBER}) - test accuracy ({NUMBER}) \(300 held-out",
                      out)
    assert final and float(final.group(2)) > 0.8
    assert "Dense(2, 64, activation='relu')" in out and "softmax" in out


def test_old_options_without_a_command_still_work(capsys):
    code, out, _ = run(["--epochs", "2", "--hidden", "8", "--lr", "0.3"], capsys)
    assert code == 0
    assert "epoch 2/2" in out and "Dense(2, 8" in out


def test_train_on_moons_with_options(capsys):
    code, out, _ = run(["train", "--data", "moons", "--samples", "120", "--layers", "2,8,8,2",
                        "--activation", "tanh", "--lr", "0.3", "--epochs", "3",
                        "--batch-size", "16", "--seed", "1", "--dtype", "float64"], capsys)
    assert code == 0
    assert "Dense(2, 8, activation='tanh')" in out and "float64" in out
    assert len(re.findall(r"^epoch \d/3", out, re.M)) == 3
    assert re.search(rf"test accuracy {NUMBER} \(40 held-out points\)", out)


@pytest.mark.parametrize("name", sorted(tc.optimizers.OPTIMIZERS))
def test_train_with_each_optimizer(name, capsys):
    code, out, err = run(["train", "--optimizer", name, "--epochs", "2", "--samples", "90",
                          "--quiet"], capsys)
    assert code == 0, err
    assert "optimizer " in out and "test accuracy" in out


def test_train_binary_output_uses_sigmoid(capsys):
    code, out, _ = run(["train", "--data", "moons", "--samples", "60", "--layers", "2,4,1",
                        "--epochs", "2", "--quiet"], capsys)
    assert code == 0
    assert "Dense(4, 1, activation='sigmoid')" in out
    assert "epoch" not in out and "test accuracy" in out


def test_train_is_reproducible(capsys):
    argv = ["train", "--epochs", "2", "--samples", "90", "--quiet"]
    first = run(argv, capsys)[1]
    assert run(argv, capsys)[1] == first


def test_train_on_csv_and_npz(tmp_path, capsys):
    X, y = tc.datasets.make_moons(60, seed=0)
    labels = np.where(y == 0, 3, 7)                       # renumbered to 0, 1
    csv = tmp_path / "moons.csv"
    with open(csv, "w") as handle:
        handle.write("x1,x2,label\n")                    # one header line is skipped
        for row, label in zip(X, labels):
            handle.write(f"{row[0]},{row[1]},{label}\n")
    code, out, err = run(["train", "--data", str(csv), "--epochs", "2", "--hidden", "8"],
                         capsys)
    assert code == 0, err
    assert "60 points from" in out and "2 classes" in out
    npz = tmp_path / "moons.npz"
    np.savez(npz, X=X, y=labels)
    code, out, err = run(["train", "--data", str(npz), "--epochs", "2", "--quiet"], capsys)
    assert code == 0, err
    assert "test accuracy" in out


def test_load_data_renumbers_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("0,0,5\n1,1,2\n2,2,5\n")
    X, y = cli.load_data(str(path))
    assert X.shape == (3, 2) and y.tolist() == [1, 0, 1] and y.dtype == np.int64


@pytest.mark.parametrize("content, words", [
    ("", "CSV"),
    ("a,b\nc,d\n", "CSV"),
    ("1\n2\n", "two columns"),
    ("0,1,0.5\n1,0,1\n", "class numbers"),
    ("0,1,1\n1,0,1\n", "two classes"),
])
def test_bad_csv_files(tmp_path, capsys, content, words):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    code, _, err = run(["train", "--data", str(path), "--epochs", "1"], capsys)
    assert_one_line_error(code, err, words)


def test_bad_npz_files(tmp_path, capsys):
    missing = tmp_path / "missing_y.npz"
    np.savez(missing, X=np.zeros((4, 2)))
    code, _, err = run(["train", "--data", str(missing)], capsys)
    assert_one_line_error(code, err, "'X' and 'y'")
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    code, _, err = run(["train", "--data", str(garbage)], capsys)
    assert_one_line_error(code, err, ".npz")


@pytest.mark.parametrize("argv, words", [
    (["train", "--data", "no/such/file.csv"], "no such file"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--epochs", "many"], "--epochs"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--layers", "2,x,3"], "--layers"),
    (["train", "--layers", "2"], "--layers"),
    (["train", "--layers", "5,8,3", "--epochs", "1"], "5 inputs"),
    (["train", "--layers", "2,8,4", "--epochs", "1"], "3 classes"),
    (["train", "--activation", "relux"], "--activation"),
    (["train", "--optimizer", "adamx"], "--optimizer"),
    (["train", "--test-fraction", "1.5"], "--test-fraction"),
    (["train", "--seed", "-3"], "--seed"),
    (["train", "--save", "no/such/dir/model.bin"], "does not exist"),
    (["train", "--bogus"], "unrecognized"),
    (["frobnicate"], "invalid choice"),
    (["demo", "nope"], "unknown example"),
    (["demo", "gradient_descent", "--steps", "-1"], "--steps"),
    (["bench", "--sizes", "huge"], "unknown size"),
    (["bench", "--steps", "0"], "--steps"),
])
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys):
    code, _, err = run(argv, capsys)
    assert_one_line_error(code, err, words)


def test_save(tmp_path, capsys):
    if not hasattr(tc.Sequential, "save"):
        pytest.skip("Sequential.save is not available")
    target = tmp_path / "model.safetensors"
    code, out, err = run(["train", "--epochs", "1", "--samples", "60", "--quiet",
                          "--save", str(target)], capsys)
    if code == 2 and "cannot save" in err:
        pytest.skip(f"saving needs an optional dependency: {err.strip()}")
    assert code == 0, err
    assert target.exists() and f"model saved to {target}" in out


def test_save_not_available_yet(tmp_path, capsys, monkeypatch):
    if hasattr(tc.Sequential, "save"):
        monkeypatch.delattr(tc.Sequential, "save")
    code, out, err = run(["train", "--epochs", "1", "--samples", "60", "--quiet",
                          "--save", str(tmp_path / "m.bin")], capsys)
    assert code == 1
    assert "test accuracy" in out
    assert "saving is not available yet" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.bin").exists()


SHORT = {
    "gradient_descent": (["--steps", "2"], "factor 1 - 2 lr S"),
    "backprop_by_hand": ([], "they agree"),
    "vanishing_gradients": (["--epochs", "1", "--samples", "32"], "0.25^9"),
    "activation_functions": (["--epochs", "1", "--samples", "32"], "step"),
    "digits": (["--epochs", "1", "--timing-steps", "2"], "test accuracy"),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_demo_runs_each_example(name, capsys):
    if name == "digits":
        pytest.importorskip("sklearn")
    argv, marker = SHORT[name]
    code, out, _ = run(["demo", name.replace("_", "-"), *argv], capsys)
    assert code == 0 and marker in out


def test_demo_without_a_name_lists_the_examples(capsys):
    code, out, _ = run(["demo"], capsys)
    assert code == 0
    assert all(name in out for name in EXAMPLES)


def test_bench(capsys):
    code, out, _ = run(["bench", "--steps", "2", "--sizes", "small"], capsys)
    assert code == 0
    row = re.search(rf"^small\s+32\s+2-64-64-3\s+({NUMBER}) us\s+({NUMBER}) us\s+"
                    rf"({NUMBER})x$", out, re.M)
    assert row, out
    ours, theirs, ratio = (float(row.group(i)) for i in (1, 2, 3))
    assert ours > 0 and theirs > 0
    assert ratio == pytest.approx(theirs / ours, rel=0.02, abs=0.01)


def test_bench_numpy_step_matches_tinycore(rng):
    # The NumPy peer does the same step: after one step both have the same weights.
    from tinycore._examples.bench import NumpyStep
    layers = [tc.Dense(4, 8, "relu"), tc.Dense(8, 3, "softmax")]
    model = tc.Sequential(layers, dtype="float32", seed=0)
    model.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.5))
    reference = NumpyStep([(layer.W, layer.b) for layer in model.layers], 6, 0.5)
    X = rng.normal(size=(6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 6)
    assert reference(X, y) == pytest.approx(model.train_step(X, y), rel=1e-5)
    for k, layer in enumerate(model.layers):
        np.testing.assert_allclose(reference.W[k], layer.W, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(reference.b[k], layer.b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["demo", "--help"],
                                  ["bench", "--help"], ["demo", "backprop_by_hand", "--help"]])
def test_help(argv, capsys):
    code, out, _ = run(argv, capsys)
    assert code == 0 and out.startswith("usage:")


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and tc.__version__ in out


def test_python_dash_m(tmp_path):
    # The module runs as a program (its __main__ guard), and a bad argument
    # leaves one line on stderr and exit status 2.
    ok = subprocess.run([sys.executable, "-m", "tinycore", "--epochs", "1", "--samples", "90"],
                        capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "test accuracy" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "tinycore", "train", "--epochs", "x"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_source_tree_without_kernels_gives_a_clear_error(tmp_path):
    # A copy of the package's Python files without its compiled modules, as in
    # a fresh checkout: importing it must say what is wrong and what to do.
    source = pathlib.Path(tc.__file__).parent
    tree = tmp_path / "tinycore"
    tree.mkdir()
    for module in source.glob("*.py"):
        (tree / module.name).write_text(module.read_text())
    result = subprocess.run([sys.executable, "-c", "import tinycore"], cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "compiled kernels could not be imported" in result.stderr
    assert "tinycore` command" in result.stderr
