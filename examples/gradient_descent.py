"""Fit z = 2x from w0 = 0.2: converging, overshooting and diverging learning rates.

A thin wrapper: the example lives in the package (tinycore/_examples/gradient_descent.py)
so that `python -m tinycore demo gradient_descent` works from an installed tinycore too.
Run `python examples/gradient_descent.py --help` for its options.
"""
import sys

from tinycore._examples.gradient_descent import main

if __name__ == "__main__":
    sys.exit(main())
