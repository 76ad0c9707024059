"""The README's Python examples run as written, and print what their comments say.

The blocks are taken from README.md itself, so an example that stops working,
or whose numbers drift from its comments, fails here.  The last block (training
on several processes) needs mpiexec and a model of the reader's: the MPI
tests run its kind of script (tests/mpi).
"""
import contextlib
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.fixture(scope="module")
def readme_run():
    """The namespace and output of the README's first three blocks, run in order
    (each goes on from the last one's names)."""
    blocks = _python_blocks()
    assert len(blocks) == 4, "the README's Python examples changed: update this test"
    assert "mpi4py" in blocks[3]
    namespace, outputs = {}, []
    for block in blocks[:3]:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block, str(README), "exec"), namespace)
        outputs.append(printed.getvalue())
    return namespace, outputs


def test_the_spiral_network_learns_the_spirals(readme_run):
    # It prints the last epoch's validation accuracy, then evaluate()'s scores
    # (taken before the step by hand below changed the model).
    _, outputs = readme_run
    val_accuracy, scores = outputs[0].split(" ", 1)
    assert float(val_accuracy) >= 0.95
    assert "'accuracy': " in scores
    assert float(scores.split("'accuracy': ")[1].rstrip("}\n")) >= 0.95


def test_one_step_by_hand_fills_the_gradients(readme_run):
    namespace, outputs = readme_run
    layer = namespace["model"].layers[0]
    assert layer.dW.shape == (2, 64)                 # as the comment says
    assert outputs[1].splitlines()[1].startswith("(2, 64) [")


def test_the_vanishing_gradients_are_measured_and_flagged(readme_run):
    namespace, outputs = readme_run
    norms = namespace["history"].history["grad_norms"][-1]
    # "first layer ~1e-6 x the last"
    assert 1e-8 < norms[0] / norms[-1] < 1e-4
    assert "layer 0 Dense(2, 32, activation='sigmoid'): gradient" in outputs[2]
    assert "smaller than the last layer's" in outputs[2]


def test_with_relu_the_first_layer_keeps_its_gradient(readme_run):
    # "with ReLU ~1x": the same network and run with ReLU in the hidden layers.
    namespace, _ = readme_run
    tc, X, y = namespace["tc"], namespace["X"], namespace["y"]
    relu = tc.Sequential([tc.Dense(2, 32, activation="relu")]
                         + [tc.Dense(32, 32, activation="relu") for _ in range(8)]
                         + [tc.Dense(32, 3, activation="softmax")], seed=0)
    relu.compile(loss="cross_entropy", optimizer=tc.SGD(lr=0.1))
    norms = relu.fit(X, y, epochs=3, verbose=0, track_gradients=True).history["grad_norms"][-1]
    assert 0.1 < norms[0] / norms[-1] < 10
