#!/usr/bin/env bash
# The one command to run on the device machine (one GPU, no registry access, no venv travels):
#
#     bash bench/gpu_smoke.sh            # installs the project, runs bench/gpu_smoke.py, prints the JSON
#
# What it does:
#  1. installs the project in place: pip install --no-deps --no-build-isolation --ignore-requires-python -e .
#     (the machine has Python 3.12; pyproject says <3.12 for the pinned stack). If that fails (e.g. no
#     setuptools there) it falls back to a shadow package tree on PYTHONPATH with the same layout.
#  2. installs every wheel under bench/wheels/ when there is one (--no-index --no-deps): DeepSpeed is a
#     small pure-Python package that JIT-builds its ops with the machine's nvcc. Fetch the wheels here,
#     where the registry is reachable, and never commit them (bench/wheels/ is untracked; untracked files
#     travel with the working tree, 64 MiB in all):
#         pip download deepspeed==0.19.8 --no-deps -d bench/wheels
#         pip download hjson py-cpuinfo msgpack ninja pydantic pydantic-core annotated-types \
#             typing-inspection --no-deps --only-binary=:all: --python-version 3.12 \
#             --platform manylinux2014_x86_64 -d bench/wheels      # DeepSpeed's own imports, if absent there
#     Without DeepSpeed the zero3 section is recorded as skipped, with the reason.
#  3. runs bench/gpu_smoke.py under `timeout` (GPU_SMOKE_TIMEOUT, default 470 s; the script's own section
#     budget is --budget-s 420) and prints the JSON; results land in $OUT when the runner sets it
#     (the device tool copies $OUT back), else bench/results/gpu_smoke.json.
# Extra arguments go to bench/gpu_smoke.py (e.g. --only lm,zero3).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
T0=$(date +%s)

if ! $PY -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
        --ignore-requires-python -e . 2>/tmp/gpu_smoke_pip.log; then
    echo "gpu_smoke.sh: editable install failed (tail of the log below); using a shadow tree on PYTHONPATH" >&2
    tail -5 /tmp/gpu_smoke_pip.log >&2
    SHADOW=$(mktemp -d)/src
    mkdir -p "$SHADOW/videopoet"
    for f in infra/*; do ln -s "$PWD/$f" "$SHADOW/videopoet/$(basename "$f")"; done
    for d in pipeline tokenizers trainer eval configs; do ln -s "$PWD/$d" "$SHADOW/videopoet/$d"; done
    export PYTHONPATH="$SHADOW${PYTHONPATH:+:$PYTHONPATH}"
fi

if compgen -G "bench/wheels/*.whl" >/dev/null; then
    $PY -m pip install --quiet --disable-pip-version-check --no-index --no-deps bench/wheels/*.whl \
        || echo "gpu_smoke.sh: installing bench/wheels/*.whl failed; the zero3 section will say why" >&2
else
    echo "gpu_smoke.sh: no wheels under bench/wheels/ (DeepSpeed only if the machine has it)" >&2
fi
echo "gpu_smoke.sh: setup took $(( $(date +%s) - T0 )) s" >&2

RESULT=${OUT:-bench/results}/gpu_smoke.json
mkdir -p "$(dirname "$RESULT")"
timeout "${GPU_SMOKE_TIMEOUT:-470}" $PY -P bench/gpu_smoke.py --budget-s 420 --out "$RESULT" "$@" \
    > "${RESULT%.json}.log" 2>&1
rc=$?
tail -40 "${RESULT%.json}.log" | grep -v '^[ {}]' >&2
echo "== $RESULT (exit $rc, total $(( $(date +%s) - T0 )) s)"
cat "$RESULT" 2>/dev/null && echo || echo "gpu_smoke.sh: no JSON written"
tail -1 "${RESULT%.json}.log"
exit $rc
