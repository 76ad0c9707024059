"""Train on scikit-learn's 8x8 digits to >= 95% test accuracy; compare the speed with NumPy.

A thin wrapper: the example lives in the package (tinycore/_examples/digits.py)
so that `python -m tinycore demo digits` works from an installed tinycore too.
Needs scikit-learn for the data: pip install "tinycore[examples]".
Run `python examples/digits.py --help` for its options.
"""
import sys

from tinycore._examples.digits import main

if __name__ == "__main__":
    sys.exit(main())
