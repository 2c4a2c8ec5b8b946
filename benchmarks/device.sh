#!/usr/bin/env bash
# The one-shot GPU benchmark (method: benchmarks/device.py's docstring).
#
#   bash benchmarks/device.sh [--wheels DIR] [--dry-run] [--check-only]
#                             [device.py's flags: --out FILE, --write_markdown,
#                              --budget_s S, ...; see device.py --help]
#
# Checks that the modules benchmarks/device.py imports are installed (and says
# which are not), installs the missing ones from a directory of wheels with
# --wheels DIR (pip --no-index: never the network), prints the versions and
# the device, and runs benchmarks/device.py within a hard time limit (SIGINT
# at DEVICE_HARD_LIMIT_S, default 480 s, after which the script skips the
# cases left and writes its report; SIGKILL 30 s later).
#
#   --dry-run      the same code on CPU at tiny shapes (JAX_PLATFORMS=cpu
#                  unless set), in 1-2 minutes on 2 cores, mostly compiling;
#                  for CI (tests/test_benchmarks_device.py runs a part)
#   --check-only   stop after the import check and the versions
#   --wheels DIR   pip install --no-index --find-links DIR <missing modules>
#                  (extra pip flags in $PIP_EXTRA_ARGS, e.g.
#                  --break-system-packages)
#
# $PYTHON picks the interpreter (default: python3). Exit status: 0 when the
# run finished (whatever its targets say), 2 when a required module is
# missing, 124 when the hard limit stopped it (the JSON and the report hold
# what was measured by then), else the Python's.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
dry_run=0
check_only=0
wheels=""
py_args=()
while (($#)); do
  case "$1" in
    --dry-run|--dry_run) dry_run=1; py_args+=(--dry_run) ;;
    --check-only|--check_only) check_only=1 ;;
    --wheels) wheels="${2:?--wheels needs a directory}"; shift ;;
    --wheels=*) wheels="${1#*=}" ;;
    -h|--help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0 ;;
    *) py_args+=("$1") ;;
  esac
  shift
done

# module to import -> what pip installs it as: what device.py and the
# package's training loop import on the way (the toy data needs neither
# sentencepiece nor tensorboardX). torch is optional (the SDPA comparison).
missing_modules() {
  "$PYTHON" - <<'EOF'
import importlib.util
REQUIRED = {
    'jax': 'jax', 'jaxlib': 'jaxlib', 'numpy': 'numpy', 'flax': 'flax',
    'optax': 'optax', 'orbax.checkpoint': 'orbax-checkpoint',
    'ml_collections': 'ml_collections', 'absl': 'absl-py', 'grain': 'grain',
    'array_record': 'array_record', 'sacrebleu': 'sacrebleu',
    'matplotlib': 'matplotlib', 'PIL': 'pillow',
}
def present(module):
  try:
    return importlib.util.find_spec(module) is not None
  except (ImportError, ValueError):  # a parent package that is missing
    return False
print(' '.join(pip for module, pip in REQUIRED.items() if not present(module)))
EOF
}

missing="$(missing_modules)"
if [[ -n "$missing" && -n "$wheels" ]]; then
  echo "device.sh: installing from $wheels: $missing"
  # shellcheck disable=SC2086  # word splitting of the names is intended
  "$PYTHON" -m pip install --no-index --find-links "$wheels" \
      ${PIP_EXTRA_ARGS:-} $missing || {
    echo "device.sh: pip could not install '$missing' from $wheels" \
         "(without the network): add their wheels and their dependencies'" \
         "(or, if pip refuses an externally managed Python," \
         "PIP_EXTRA_ARGS=--break-system-packages)." >&2
    exit 2
  }
  missing="$(missing_modules)"
fi
if [[ -n "$missing" ]]; then
  echo "device.sh: missing Python packages: $missing" >&2
  echo "  install them (pip install $missing), or bring their wheels and" \
       "run: bash benchmarks/device.sh --wheels DIR" >&2
  exit 2
fi

echo "== versions"
"$PYTHON" - <<'EOF'
import importlib.metadata, platform
names = ('jax', 'jaxlib', 'jax-cuda12-plugin', 'jax-cuda13-plugin', 'flax',
         'optax', 'orbax-checkpoint', 'numpy', 'torch')
print(f'python {platform.python_version()}')
for name in names:
  try:
    print(f'{name} {importlib.metadata.version(name)}')
  except importlib.metadata.PackageNotFoundError:
    if not name.endswith('-plugin'):
      print(f'{name}: not installed' + (' (optional: the torch SDPA column '
                                        'says so)' if name == 'torch' else ''))
EOF
echo "== device"
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader || echo "nvidia-smi failed"
else
  echo "no nvidia-smi on this machine"
fi
if ((check_only)); then
  echo "device.sh: imports present (--check-only: nothing run)"
  exit 0
fi

# JAX would take 75% of the GPU's memory at start, and torch needs some too.
export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"
if ((dry_run)); then
  export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
  # Its numbers mean nothing: compile without LLVM's optimizations (40% less
  # time on 2 cores; a flag in $XLA_FLAGS comes later and wins).
  export XLA_FLAGS="--xla_backend_optimization_level=0 ${XLA_FLAGS:-}"
fi
limit="${DEVICE_HARD_LIMIT_S:-480}"
echo "== benchmarks/device.py ${py_args[*]:-} (hard limit ${limit} s)"
if command -v timeout >/dev/null 2>&1; then
  exec timeout --signal=INT --kill-after=30 "$limit" \
    "$PYTHON" benchmarks/device.py ${py_args[@]+"${py_args[@]}"}
fi
exec "$PYTHON" benchmarks/device.py ${py_args[@]+"${py_args[@]}"}
