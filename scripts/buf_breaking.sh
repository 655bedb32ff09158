#!/usr/bin/env bash
# buf breaking (rules FILE) of protos/ against the previous commit (AGAINST, default HEAD~1).
# When there is no previous commit, or it has no protos yet, there is nothing to break: say so.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${VENV_BIN:-$ROOT/.venv/bin}"
AGAINST="${AGAINST:-HEAD~1}"
cd "$ROOT"
if ! git rev-parse -q --verify "$AGAINST^{commit}" >/dev/null; then
  echo "buf breaking: no commit $AGAINST (first commit or shallow clone): nothing to compare"
  exit 0
fi
if ! git ls-tree -r --name-only "$AGAINST" -- protos | grep -q '\.proto$'; then
  echo "buf breaking: $AGAINST has no protos yet: nothing to compare"
  exit 0
fi
"$BIN/buf" breaking --against ".git#ref=$AGAINST,subdir=protos"
echo "buf breaking: no breaking change against $AGAINST"
