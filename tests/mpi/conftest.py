"""The tests in this folder run only under ``mpiexec`` (every rank runs the
same tests, in the same order, and they talk to each other):

    mpiexec -n 2 pytest tests/mpi -p no:cacheprovider -q
    mpiexec -n 1 pytest tests/mpi -p no:cacheprovider -q
    mpiexec -n 3 pytest tests/mpi -p no:cacheprovider -q

A plain ``pytest`` (no ``mpiexec``: MPICH's launcher sets ``PMI_SIZE``) does
not even import them, so the ordinary suite needs no mpi4py.
"""
import os

if "PMI_SIZE" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
    collect_ignore_glob = ["test_*.py"]
