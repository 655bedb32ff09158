#!/usr/bin/env bash
# Generates the Python stubs (messages, .pyi types, gRPC stubs) from protos/.
#
#   scripts/gen_protos.sh [OUT_DIR]     (default: the repository root)
#   scripts/gen_protos.sh --check       fail when the committed stubs differ from the protos
#
# The proto package livemesh.<domain>.v1 lands in OUT_DIR/livemesh/<domain>/v1/.
# buf compiles (offline, from the buf-bin wheel), grpc_tools.protoc writes Python:
# grpcio-tools has no protoc-gen-grpc_python plugin for `buf generate` (DESIGN.md §9).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${VENV_BIN:-$ROOT/.venv/bin}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
if [ "${1:-}" = "--check" ]; then
  "$0" "$TMP/out"
  cd "$ROOT"
  status=0
  for d in $(cd "$TMP/out" && find livemesh -mindepth 2 -maxdepth 2 -type d -name 'v*' | sort); do
    diff -r -x __pycache__ "$TMP/out/$d" "$ROOT/$d" || status=1
  done
  for d in livemesh/*/v[0-9]*; do  # stubs of a proto that no longer exists
    [ -e "$TMP/out/$d" ] || { echo "stale: $d has no proto"; status=1; }
  done
  [ $status = 0 ] && echo "stubs: up to date" || echo "stubs: stale, run make protos"
  exit $status
fi
OUT="${1:-$ROOT}"

cd "$ROOT"
"$BIN/buf" build --as-file-descriptor-set -o "$TMP/fds.binpb"
mapfile -t FILES < <(cd protos && find livemesh -name '*.proto' | LC_ALL=C sort)
mkdir -p "$OUT"
"$BIN/python" -m grpc_tools.protoc --descriptor_set_in="$TMP/fds.binpb" \
  --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT" "${FILES[@]}"
# Regular packages, so setuptools' find and mypy see the generated modules.
for f in "${FILES[@]}"; do
  d="$(dirname "$f")"
  touch "$OUT/$d/__init__.py" "$OUT/$(dirname "$d")/__init__.py"
done
