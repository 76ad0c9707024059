#!/usr/bin/env bash
# Build tinycore's extensions with AddressSanitizer + UndefinedBehaviorSanitizer
# into a fresh virtual environment outside the checkout, then run the test
# suite (and the fuzz suite) against that installed copy from a neutral folder.
#
#   scripts/sanitize.sh                 # pass 1 (ASan+UBSan), then pass 2 (+ Cython bounds checks)
#   SANITIZE_PASSES=1 scripts/sanitize.sh
#   SANITIZE_PYTEST_ARGS="-x" scripts/sanitize.sh   # extra arguments for pytest
#   SANITIZE_REUSE=1 scripts/sanitize.sh   # reuse the last build (tests refreshed)
#
# ASAN_OPTIONS has allocator_may_return_null=1: a request beyond memory then
# fails as malloc does without ASan (MemoryError) instead of aborting.
#
# Pass 1: TINYCORE_SANITIZE=address,undefined, the whole suite minus the
#         @pytest.mark.slow tests (the fuzz file included, "ci" profile).
# Pass 2: the same build plus TINYCORE_DEBUG_CYTHON=1 (Cython bounds,
#         wraparound and initialisation checks on), running the input-facing
#         suites: test_fuzz.py, test_bad_input.py, test_plan.py, test_serialization.py.
#
# The venv reuses the interpreter's site-packages (numpy, scipy, pytest,
# hypothesis, safetensors: --system-site-packages) so no download is needed;
# only tinycore is built.  Nothing is written inside the checkout.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${SANITIZE_WORKDIR:-/tmp/tinycore-sanitize}"
PASSES="${SANITIZE_PASSES:-2}"
JOBS_ARGS=(${SANITIZE_PYTEST_ARGS:-})

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
if [[ ! -e "$ASAN_LIB" ]]; then
    echo "sanitize.sh: libasan.so not found (gcc -print-file-name=libasan.so gave $ASAN_LIB)" >&2
    exit 2
fi

# Copy the sources (not build products, caches or VCS data) out of the checkout.
copy_sources() {
    local dest="$1"
    rm -rf "$dest"
    mkdir -p "$dest"
    # (tar rather than rsync, which is not always installed.)
    tar -C "$REPO" -cf - \
        --exclude='./.git' --exclude='./build' --exclude='./dist' --exclude='*.egg-info' \
        --exclude='__pycache__' --exclude='*.so' --exclude='./tinycore/*.c' \
        --exclude='.pytest_cache' --exclude='.benchmarks' --exclude='.hypothesis' \
        --exclude='.ruff_cache' --exclude='.venv' --exclude='*.html' . \
        | tar -C "$dest" -xf -
}

# build_venv NAME DEBUG_CYTHON -> prints the venv path
build_venv() {
    local name="$1" debug="$2"
    local src="$WORK/$name/src" venv="$WORK/$name/venv"
    if [[ "${SANITIZE_REUSE:-0}" == 1 && -x "$venv/bin/python" ]]; then
        # Reuse the last build, refreshing only the tests (quick reruns).
        rm -rf "$src/tests" && cp -a "$REPO/tests" "$src/tests"
        echo "$venv"
        return
    fi
    copy_sources "$src"
    rm -rf "$venv"
    # --without-pip: the bundled (older) pip/setuptools would shadow the
    # interpreter's, which the build needs (PEP 639 license field).
    "$PYTHON" -m venv --system-site-packages --without-pip "$venv"
    echo "== building $name (TINYCORE_SANITIZE=address,undefined TINYCORE_DEBUG_CYTHON=$debug)" >&2
    (
        cd "$src"
        TINYCORE_SANITIZE=address,undefined TINYCORE_DEBUG_CYTHON="$debug" \
            "$venv/bin/python" -m pip install --no-build-isolation --no-deps --no-cache-dir \
            -q . >&2
    )
    # The extensions must really be instrumented.
    local so
    so="$(ls "$venv"/lib/python*/site-packages/tinycore/_plan*.so)"
    # (grep without -q reads all of nm's output: with -q, nm could die of
    # SIGPIPE and pipefail would call a good build uninstrumented.)
    if ! nm -D "$so" | grep __asan_ > /dev/null; then
        echo "sanitize.sh: $so is not ASan-instrumented" >&2
        exit 3
    fi
    echo "$venv"
}

run_tests() {
    local name="$1" venv="$2"; shift 2
    local run="$WORK/$name/run"
    mkdir -p "$run"
    echo "== $name: pytest $*" >&2
    (
        cd "$run"     # neutral folder: neither the checkout nor the copy is on sys.path
        env LD_PRELOAD="$ASAN_LIB" \
            ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:abort_on_error=1:print_summary=1" \
            UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
            PYTHONMALLOC=malloc \
            PYTHONDONTWRITEBYTECODE=1 \
            TINYCORE_FUZZ_PROFILE="${TINYCORE_FUZZ_PROFILE:-ci}" \
            "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
    )
}

mkdir -p "$WORK"
status=0

venv1="$(build_venv pass1 0)"
# From $WORK: run from the checkout, Python would import the checkout's copy.
(cd "$WORK" && LD_PRELOAD="$ASAN_LIB" ASAN_OPTIONS=detect_leaks=0 \
    "$venv1/bin/python" -c "import tinycore; print('tinycore from', tinycore.__file__)")
SRC1="$WORK/pass1/src"
start=$(date +%s)
# Matplotlib's own C extensions abort under the preloaded ASan runtime while
# being imported (not tinycore code), so the plotting tests are left out
# (test_reliability skips its memory tests itself under ASan).
run_tests pass1 "$venv1" "$SRC1/tests" -m "not slow" \
    --ignore="$SRC1/tests/test_plot.py" -k "not plot" \
    "${JOBS_ARGS[@]}" || status=$?
echo "== pass 1 finished in $(( $(date +%s) - start )) s with status $status" >&2

if [[ "$PASSES" -ge 2 ]]; then
    venv2="$(build_venv pass2 1)"
    SRC2="$WORK/pass2/src"
    start=$(date +%s)
    s2=0
    run_tests pass2 "$venv2" "$SRC2/tests/test_fuzz.py" "$SRC2/tests/test_bad_input.py" \
        "$SRC2/tests/test_plan.py" "$SRC2/tests/test_serialization.py" \
        -m "not slow" "${JOBS_ARGS[@]}" || s2=$?
    echo "== pass 2 finished in $(( $(date +%s) - start )) s with status $s2" >&2
    [[ $status -eq 0 ]] && status=$s2
fi

echo "== sanitize.sh: exit status $status" >&2
exit $status
