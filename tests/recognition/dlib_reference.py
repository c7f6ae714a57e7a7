"""The reference for faces' recognition: dlib's own 5-point landmarks, face chips and
128-D descriptors, through `face_recognition` 1.3.0 exactly as its users call it.

Reads JSON from stdin: {"faces": [{"path": "...", "rect": [left, top, right, bottom]}]}
(dlib rectangles, right and bottom edges inside) and writes JSON to stdout:
{"faces": [{"landmarks": [[x, y] x5], "embedding": [128 floats], "ms": float}],
 "version": {...}}. `ms` is `face_recognition.face_encodings` for that one face
(landmarks + descriptor), best of `--repeat` runs, one thread.

Needs a virtualenv with dlib-bin, face_recognition_models and face_recognition==1.3.0
(installed with --no-deps); `.ci/run` makes one.
"""

import json
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
import dlib  # noqa: E402
import face_recognition  # noqa: E402
import face_recognition.api as fr_api  # noqa: E402
import numpy as np  # noqa: E402


def main():
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 1
    chips_dir = sys.argv[sys.argv.index("--chips") + 1] if "--chips" in sys.argv else None
    request = json.load(sys.stdin)
    images = {}
    out = []
    for i, face in enumerate(request["faces"]):
        path = face["path"]
        if path not in images:
            images[path] = face_recognition.load_image_file(path)
        image = images[path]
        left, top, right, bottom = face["rect"]
        rect = dlib.rectangle(left, top, right, bottom)
        shape = fr_api.pose_predictor_5_point(image, rect)
        landmarks = [[shape.part(j).x, shape.part(j).y] for j in range(shape.num_parts)]
        # face_encodings takes (top, right, bottom, left) and makes the same rectangle.
        location = [(top, right, bottom, left)]
        best = None
        for _ in range(repeat):
            start = time.perf_counter()
            embedding = face_recognition.face_encodings(image, known_face_locations=location)[0]
            elapsed = (time.perf_counter() - start) * 1000.0
            best = elapsed if best is None else min(best, elapsed)
        if chips_dir:
            chip = dlib.get_face_chip(image, shape, size=150, padding=0.25)
            np.save(os.path.join(chips_dir, f"{i}.npy"), chip)
        out.append({"landmarks": landmarks, "embedding": embedding.tolist(), "ms": best})
    json.dump({"faces": out, "version": {"dlib": dlib.__version__,
                                          "face_recognition": face_recognition.__version__}},
              sys.stdout)


if __name__ == "__main__":
    main()
