"""The tests in this folder run only under ``mpiexec`` (every rank runs the
same tests, in the same order, and they talk to each other):

    mpiexec -n 2 pytest tests/mpi -p no:cacheprovider -q
    mpiexec -n 1 pytest tests/mpi -p no:cacheprovider -q
    mpiexec -n 3 pytest tests/mpi -p no:cacheprovider -q

A plain ``pytest`` (no ``mpiexec``: MPICH's launcher sets ``PMI_SIZE``) does
not even import them, so the ordinary suite needs no mpi4py.
"""
import os
import tempfile

import pytest

if "PMI_SIZE" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
    collect_ignore_glob = ["test_*.py"]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # Every rank is a pytest process of its own.  Sharing pytest's default
    # temporary root, each one prunes the others' old numbered folders while
    # they scan it, and the unclosed scandir iterator that leaves behind is
    # an error under filterwarnings = error (seen once in CI on 2 ranks).  So
    # each rank gets a root of its own, unless --basetemp says otherwise;
    # tests that share a folder take rank 0's tmp_path by broadcast.
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK")
    if rank is not None and config.option.basetemp is None:
        config.option.basetemp = os.path.join(
            tempfile.gettempdir(), f"tinycore-mpi-{os.getuid()}-rank{rank}")
