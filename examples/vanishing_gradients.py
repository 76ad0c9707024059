"""A 10-layer sigmoid network against the same with ReLU and He initialisation.

A thin wrapper: the example lives in the package (tinycore/_examples/vanishing_gradients.py)
so that `python -m tinycore demo vanishing_gradients` works from an installed tinycore too.
Run `python examples/vanishing_gradients.py --help` for its options.
"""
import sys

from tinycore._examples.vanishing_gradients import main

if __name__ == "__main__":
    sys.exit(main())
