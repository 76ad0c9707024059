"""``python -m tinycore`` (and the ``tinycore`` script): train, demo, bench.

=====================================  ============================================
command                                what it does
=====================================  ============================================
``python -m tinycore``                 train a ReLU network on generated spirals
                                       (the README's first command; same as
                                       ``train`` with its defaults)
``python -m tinycore train ...``       train a configurable network on spirals,
                                       moons, or a CSV / .npz file
``python -m tinycore demo NAME ...``   run one of the seeds' examples
``python -m tinycore bench ...``       time a training step against plain NumPy
=====================================  ============================================

Every sub-command has ``--help``.  A bad argument or an unreadable file gives
one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from tinycore._examples import (
    EXAMPLES, ArgumentParser, fail, parse, positive_float, positive_int,
)

_DATA = ("spirals", "moons")


# -- train ----------------------------------------------------------------------

def _layer_sizes(text: str) -> list[int]:
    """argparse type for --layers: "2,64,64,3"."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer sizes such as 2,64,64,3, got {text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected at least two sizes >= 1 (inputs and outputs), got {text!r}")
    return sizes


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _read_csv(path: str) -> np.ndarray:
    """Numbers of a comma-separated file, skipping one header line if there is one."""
    for skip in (0, 1):
        try:
            with warnings.catch_warnings():
                # An empty file is reported below, in one line.
                warnings.simplefilter("ignore", UserWarning)
                table = np.loadtxt(path, delimiter=",", ndmin=2, skiprows=skip)
        except ValueError:
            continue
        if table.size:
            return table
    raise ValueError(f"{path}: not a CSV file of numbers (one header line is allowed)")


def load_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    """X and integer labels from a .npz file (arrays X and y) or a CSV file
    (last column = label).  Labels are renumbered 0..k-1 in sorted order."""
    if path.lower().endswith(".npz"):
        try:
            archive = np.load(path, allow_pickle=False)
        except (OSError, EOFError, ValueError):
            raise ValueError(f"{path}: not a .npz archive of arrays X and y") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path}: holds a single array; expected a .npz archive of "
                             "arrays X and y")
        try:
            with archive:
                missing = [key for key in ("X", "y") if key not in archive.files]
                if missing:
                    raise ValueError(f"{path}: expected arrays 'X' and 'y', found "
                                     f"{', '.join(archive.files) or 'none'}")
                X, y = archive["X"], archive["y"]
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: cannot read as .npz ({exc})") from None
    else:
        table = _read_csv(path)
        if table.shape[1] < 2:
            raise ValueError(f"{path}: needs at least two columns (features, then the label)")
        X, y = table[:, :-1], table[:, -1]
    X = np.asarray(X)
    y = np.asarray(y).reshape(-1)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"{path}: X must be 2-D with one row per label; got X of shape "
                         f"{X.shape} and {y.shape[0]} labels")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{path}: labels (the last column) must be class numbers")
    elif y.dtype.kind not in "biu":
        raise ValueError(f"{path}: labels must be class numbers, got dtype {y.dtype}")
    classes, labels = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"{path}: needs at least two classes, found {len(classes)}")
    return X, labels.astype(np.int64)


def _train_parser(sub) -> None:
    import tinycore as tc

    parser = sub.add_parser(
        "train", help="train a network and report its test accuracy",
        description="Train a dense network (ReLU hidden layers by default, softmax "
                    "output, cross-entropy) on generated data or on a file, and "
                    "report the accuracy on held-out points.",
    )
    parser.add_argument("--data", default="spirals", metavar="spirals|moons|PATH",
                        help="generated spirals or moons, or a CSV file (last column = "
                             "label) or .npz file (arrays X and y) (spirals)")
    parser.add_argument("--samples", type=positive_int, default=900,
                        help="points of generated data (900)")
    parser.add_argument("--noise", type=float, default=None,
                        help="noise of generated data (spirals 0.15, moons 0.2)")
    parser.add_argument("--layers", type=_layer_sizes, default=None, metavar="SIZES",
                        help="layer sizes, inputs first: 2,64,64,3 (default: the "
                             "data's features, two hidden layers of --hidden, classes)")
    parser.add_argument("--hidden", type=positive_int, default=64,
                        help="units per hidden layer when --layers is not given (64)")
    parser.add_argument("--activation", default="relu", choices=tc.activations.NAMES,
                        help="activation of the hidden layers (relu)")
    parser.add_argument("--optimizer", default="sgd", choices=sorted(tc.optimizers.OPTIMIZERS),
                        help="(sgd)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="learning rate (0.5 for sgd, else the optimizer's default)")
    parser.add_argument("--epochs", type=positive_int, default=30, help="(30)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="(32)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the data, the split, the weights and the shuffling (0)")
    parser.add_argument("--test-fraction", type=_fraction, default=1 / 3,
                        help="share of the points held out for testing (1/3)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                        help="(float32)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    parser.add_argument("--save", metavar="PATH", help="save the trained model to PATH")
    parser.set_defaults(run=_train, command_parser=parser)


def _train(args, parser) -> int:
    import tinycore as tc

    if args.seed < 0:
        return fail(parser, f"--seed must be >= 0, got {args.seed}")
    if args.save:
        folder = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(folder):
            return fail(parser, f"--save: folder {folder} does not exist")
    try:
        if args.data in _DATA:
            noise = args.noise if args.noise is not None else (
                0.15 if args.data == "spirals" else 0.2)
            if noise < 0:
                return fail(parser, f"--noise must be >= 0, got {noise}")
            if args.data == "spirals":
                X, y = tc.datasets.make_spirals(args.samples, n_classes=3, noise=noise,
                                                seed=args.seed)
            else:
                X, y = tc.datasets.make_moons(args.samples, noise=noise, seed=args.seed)
            source = f"{args.samples} generated {args.data} points"
        else:
            if not os.path.exists(args.data):
                return fail(parser, f"--data: no such file or data set: {args.data!r} "
                                    f"(generated: {', '.join(_DATA)})")
            X, y = load_data(args.data)
            source = f"{len(X)} points from {args.data}"
    except (OSError, ValueError, TypeError) as exc:
        return fail(parser, str(exc))
    n_classes = int(y.max()) + 1
    n_test = int(round(len(X) * args.test_fraction))
    if n_test < 1 or len(X) - n_test < 1:
        return fail(parser, f"cannot split {len(X)} points into training and test sets "
                            f"with --test-fraction {args.test_fraction:g}")
    sizes = args.layers or [X.shape[1], args.hidden, args.hidden, n_classes]
    if sizes[0] != X.shape[1]:
        return fail(parser, f"--layers starts with {sizes[0]} inputs but the data has "
                            f"{X.shape[1]} features")
    binary = sizes[-1] == 1 and n_classes == 2
    if sizes[-1] != n_classes and not binary:
        return fail(parser, f"--layers ends with {sizes[-1]} outputs but the data has "
                            f"{n_classes} classes")
    try:
        layers = [tc.Dense(sizes[i], sizes[i + 1], args.activation)
                  for i in range(len(sizes) - 2)]
        layers.append(tc.Dense(sizes[-2], sizes[-1], "sigmoid" if binary else "softmax"))
        model = tc.Sequential(layers, dtype=args.dtype, seed=args.seed)
        optimizer_class = tc.optimizers.OPTIMIZERS[args.optimizer]
        if args.lr is not None:
            optimizer = optimizer_class(lr=args.lr)
        elif args.optimizer == "sgd":
            optimizer = optimizer_class(lr=0.5)     # the README's first run
        else:
            optimizer = optimizer_class()
        model.compile(loss="binary_cross_entropy" if binary else "cross_entropy",
                      optimizer=optimizer)
        target = y.astype(np.float64) if binary else y
        shuffled = np.random.default_rng(args.seed).permutation(len(X))
        train, test = shuffled[:len(X) - n_test], shuffled[len(X) - n_test:]
        print(f"data: {source}, {n_classes} classes; {len(train)} for training, "
              f"{len(test)} held out; optimizer {optimizer!r}")
        print(model)
        model.fit(X[train], target[train], epochs=args.epochs, batch_size=args.batch_size,
                  verbose=0 if args.quiet else 2)
        result = model.evaluate(X[test], target[test])
    except (ValueError, TypeError) as exc:
        return fail(parser, str(exc))
    print(f"test loss {result['loss']:.4f} - test accuracy {result['accuracy']:.3f} "
          f"({len(test)} held-out points)")
    if args.save:
        if not hasattr(model, "save"):
            print("tinycore train: saving is not available yet in this version of "
                  "tinycore; the model was not saved", file=sys.stderr)
            return 1
        try:
            model.save(args.save)
        except (ImportError, OSError, ValueError) as exc:
            return fail(parser, f"cannot save the model: {exc}")
        print(f"model saved to {args.save}")
    return 0


# -- demo and bench ------------------------------------------------------------------

def _demo_parser(sub) -> None:
    listing = "\n".join(f"  {name:<22} {text}" for name, text in EXAMPLES.items())
    parser = sub.add_parser(
        "demo", help="run one of the seeds' examples",
        description="Run one of the examples that make the seeds runnable. Options "
                    "after NAME go to the example (NAME --help lists them).",
        epilog=f"examples:\n{listing}", formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the example to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the example's options")
    parser.set_defaults(run=_demo, command_parser=parser)


def _demo(args, parser) -> int:
    from tinycore._examples import run

    if args.name is None:
        print("examples (python -m tinycore demo NAME [--help]):")
        for name, text in EXAMPLES.items():
            print(f"  {name:<22} {text}")
        return 0
    if args.name.replace("-", "_") not in EXAMPLES:
        return fail(parser, f"unknown example {args.name!r}; expected one of "
                            f"{', '.join(EXAMPLES)}")
    return run(args.name, args.options)


def _bench_parser(sub) -> None:
    # Listed for --help only: main() hands "bench ..." straight to the bench
    # example's own parser (argparse cannot forward options after a
    # sub-command without a positional argument first).
    sub.add_parser("bench", help="time a training step against plain NumPy",
                   add_help=False)


# -- the command -------------------------------------------------------------------

def _parser() -> ArgumentParser:
    import tinycore as tc

    parser = ArgumentParser(
        prog="tinycore",
        description="tinycore: a small, fast deep-learning engine for dense networks. "
                    "Without a command, trains a ReLU network on generated spirals "
                    "(the same as 'train').",
    )
    parser.add_argument("--version", action="version", version=f"tinycore {tc.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=ArgumentParser)
    _train_parser(sub)
    _demo_parser(sub)
    _bench_parser(sub)
    return parser


def main(argv=None) -> int:
    """Entry point of ``python -m tinycore`` and of the ``tinycore`` script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # No command (or only options, as before there were commands): train.
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["train", *argv]
    try:
        if argv[0] == "bench":
            from tinycore._examples import bench
            return bench.main(argv[1:])
        parser = _parser()
        args, code = parse(parser, argv)
        if args is None:
            return code
        if not hasattr(args, "run"):
            return fail(parser, "expected a command: train, demo or bench")
        return args.run(args, args.command_parser)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (| head): stop quietly.
        # (Python's documented recipe: point stdout at devnull so that the
        # flush at exit does not raise again.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
