"""One network trained with each of the seven activations.

A thin wrapper: the example lives in the package (tinycore/_examples/activation_functions.py)
so that `python -m tinycore demo activation_functions` works from an installed tinycore too.
Run `python examples/activation_functions.py --help` for its options.
"""
import sys

from tinycore._examples.activation_functions import main

if __name__ == "__main__":
    sys.exit(main())
