"""The seeds, runnable: the examples behind ``python -m tinycore demo NAME``.

Each module has a ``main(argv=None) -> int`` that parses its own small set of
options, prints its numbers and returns an exit code; the scripts in the
checkout's ``examples/`` folder only call it.  They live in the package so that
``tinycore demo`` works from an installed wheel.
"""
from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["EXAMPLES", "ArgumentParser", "run", "parse", "fail", "positive_int",
           "positive_float"]

#: Example name -> one-line description.
EXAMPLES = {
    "gradient_descent": "fit z = 2x from w0 = 0.2: converging, overshooting and "
                        "diverging learning rates",
    "backprop_by_hand": "one backpropagation step on a two-neuron sigmoid chain, by "
                        "hand and by tinycore",
    "vanishing_gradients": "a 10-layer sigmoid network against the same with ReLU "
                           "and He initialisation",
    "activation_functions": "one network trained with each of the seven activations",
    "digits": "a real data set: scikit-learn's 8x8 digits to >= 95% test accuracy, "
              "and the speed against NumPy",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad argument gives one line on stderr and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def parse(parser: argparse.ArgumentParser, argv):
    """Parse ``argv``; return (namespace, None) or (None, exit code) for
    --help and bad arguments, so that ``main`` returns instead of exiting."""
    try:
        return parser.parse_args(argv), None
    except SystemExit as stop:
        return None, (stop.code if isinstance(stop.code, int) else 2)


def fail(parser: argparse.ArgumentParser, message: str) -> int:
    """Print one error line, as argparse would, and return exit code 2."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def run(name: str, argv=None) -> int:
    """Run the example called ``name`` with command-line arguments ``argv``."""
    key = name.replace("-", "_")
    if key not in EXAMPLES:
        print(f"tinycore demo: error: unknown example {name!r}; expected one of "
              f"{', '.join(EXAMPLES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"tinycore._examples.{key}")
    return module.main(argv)
