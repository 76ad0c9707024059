"""One backpropagation step on a two-neuron sigmoid chain, by hand and by tinycore.

A thin wrapper: the example lives in the package (tinycore/_examples/backprop_by_hand.py)
so that `python -m tinycore demo backprop_by_hand` works from an installed tinycore too.
Run `python examples/backprop_by_hand.py --help` for its options.
"""
import sys

from tinycore._examples.backprop_by_hand import main

if __name__ == "__main__":
    sys.exit(main())
