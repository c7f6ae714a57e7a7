"""The peers' own client libraries against the real `faces` binary, unchanged:
deepstack-python's `DeepstackFace.detect` (what Home Assistant integrations use),
compreface-sdk's detection service, and raw requests as CodeProject.AI clients
(Blue Iris, Agent DVR) send them: multipart `image`, no part content type.

On `known_counts` each gets the known counts at its own default threshold, every
box inside the image; then the documented errors, without and with `--api-key`.

Run: `python tests/peers/test_clients.py` (or with pytest), with `FACES_BIN` naming
the binary (default: the debug build in CARGO_TARGET_DIR) and the photos in
FACES_TEST_DATA (default: ../shared/data beside the repository). Needs
deepstack-python, compreface-sdk, requests and Pillow (`.ci/run` installs them).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import requests
from PIL import Image
from compreface import CompreFace
from deepstack.core import DeepstackException, DeepstackFace

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("FACES_TEST_DATA", ROOT.parent / "shared" / "data"))
KNOWN = DATA / "known_counts"
NO_FACE = DATA / "nonface" / "skimage_coffee.png"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/faces-ci/target"))
FACES_BIN = os.environ.get("FACES_BIN", str(TARGET / "debug" / "faces"))
KEY = "peer-key-1"


class Server:
    """`faces serve --host 127.0.0.1 --port 0` on a temporary data dir; learns its
    port from the `faces listening addr=` log line."""

    def __init__(self, *args):
        self.dir = tempfile.TemporaryDirectory()
        env = dict(os.environ, FACES_LOG="warn,faces_service::app=info")
        env.pop("FACES_PUBLIC_URL", None)
        self.process = subprocess.Popen(
            [FACES_BIN, "serve", "--host", "127.0.0.1", "--port", "0",
             "--data-dir", self.dir.name, *args],
            stdout=subprocess.PIPE, stderr=sys.stderr, env=env, text=True)
        ready = threading.Event()
        self.port = None

        def read_log():
            for line in self.process.stdout:
                match = re.search(r"faces listening.*addr=127\.0\.0\.1:(\d+)", line)
                if match and self.port is None:
                    self.port = int(match.group(1))
                    ready.set()
            ready.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not ready.wait(60) or self.port is None:
            self.stop()
            raise RuntimeError("faces serve did not start")
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.dir.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def known_counts():
    """(path, count) for each photo of known_counts whose count is meaningful."""
    photos = []
    for line in (KNOWN / "counts.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["faces"] is not None:
            photos.append((KNOWN / entry["file"], entry["faces"]))
    assert len(photos) >= 18, photos
    return photos


def assert_inside(box, path):
    width, height = Image.open(path).size
    assert 0 <= box["x_min"] < box["x_max"] <= width, (path.name, box, width)
    assert 0 <= box["y_min"] < box["y_max"] <= height, (path.name, box, height)
    for key in ("x_min", "x_max", "y_min", "y_max"):
        assert isinstance(box[key], int), (path.name, box)


def deepstack_client(server, **kwargs):
    # deepstack-python builds http://{ip}:{port}/v1/vision; its defaults otherwise
    # (api_key "", min_confidence 0.45).
    return DeepstackFace(ip="127.0.0.1", port=server.port, **kwargs)


def compreface_detection(server, api_key, options=None):
    sdk = CompreFace("http://127.0.0.1", str(server.port), options or {})
    return sdk.init_face_detection(api_key)


def blue_iris_post(server, path, fields=None):
    """CodeProject.AI as Blue Iris and Agent DVR call it: multipart `image`, a file
    name, no part content type, `min_confidence` as a form field or not at all."""
    files = {"image": ("image.jpg", path.read_bytes())}
    return requests.post(f"{server.base}/v1/vision/face", files=files, data=fields or {}, timeout=30)


# ---- the known counts, at each client's default threshold ----

def check_known_counts(server, api_key=""):
    deepstack = deepstack_client(server, api_key=api_key, timeout=30)
    detection = compreface_detection(server, api_key or "no-key-configured")
    counts = {}
    for path, expected in known_counts():
        predictions = deepstack.detect(path.read_bytes())
        assert len(predictions) == expected, ("deepstack-python", path.name, predictions)
        for face in predictions:
            assert_inside(face, path)
            assert face["confidence"] >= 0.45, (path.name, face)

        answer = detection.detect(str(path))
        assert "result" in answer, ("compreface-sdk", path.name, answer)
        assert len(answer["result"]) == expected, ("compreface-sdk", path.name, answer)
        for face in answer["result"]:
            assert_inside(face["box"], path)
            assert face["box"]["probability"] >= 0.8, (path.name, face)

        fields = {"api_key": api_key} if api_key else {}
        response = blue_iris_post(server, path, fields)
        assert response.status_code == 200, (path.name, response.text)
        assert "content-length" in response.headers, "Blue Iris needs Content-Length"
        assert response.headers.get("transfer-encoding") is None
        body = response.json()
        assert body["success"] is True and body["count"] == expected, (path.name, body)
        assert body["moduleId"] == "FaceProcessing" and body["code"] == 200, body
        for face in body["predictions"]:
            assert_inside(face, path)
        counts[path.name] = (len(predictions), len(answer["result"]), body["count"], expected)
    return counts


def test_known_counts_without_keys():
    with Server() as server:
        counts = check_known_counts(server)
    print("photo: deepstack-python, compreface-sdk, CodeProject.AI request; expected")
    for name, (ds, cf, cp, expected) in sorted(counts.items()):
        print(f"  {name}: {ds}, {cf}, {cp}; {expected}")


def test_compreface_sdk_options():
    path = KNOWN / "fr_two_people.jpg"
    with Server() as server:
        detection = compreface_detection(server, "x", {
            "limit": 0, "det_prob_threshold": 0.8,
            "face_plugins": "landmarks,age,gender", "status": "true"})
        answer = detection.detect(str(path))
        assert len(answer["result"]) == 2, answer
        width, height = Image.open(path).size
        for face in answer["result"]:
            assert len(face["landmarks"]) == 5, face
            assert all(0 <= x < width and 0 <= y < height for x, y in face["landmarks"]), face
            assert "detector" in face["execution_time"], face
        assert "detector" in answer["plugins_versions"], answer
        one = compreface_detection(server, "x", {"limit": 1}).detect(str(path))
        assert len(one["result"]) == 1, one
        # Raw bytes go as `image.jpg`, whatever their format.
        png = KNOWN / "fr_alex-lacamoire.png"
        answer = compreface_detection(server, "x").detect(png.read_bytes())
        assert len(answer["result"]) == 1, answer


# ---- the documented errors ----

def test_errors_without_keys():
    with Server() as server:
        # deepstack-python raises on any status but 200.
        client = deepstack_client(server, timeout=30)
        try:
            client.detect(b"not an image")
            raise AssertionError("an invalid image was accepted")
        except DeepstackException as error:
            assert "400" in str(error), error
        assert client.detect(NO_FACE.read_bytes()) == []

        photo = KNOWN / "fr_biden.jpg"
        url = f"{server.base}/v1/vision/face"
        cases = [
            ({"data": {"min_confidence": "0.5"}}, 400, "No valid image file found"),
            ({"files": {"image": ("image", photo.read_bytes())}, "data": {"min_confidence": "x"}},
             400, "Invalid value for min_confidence"),
            ({"files": {"image": ("image", photo.read_bytes())}, "data": {"min_confidence": "2"}},
             400, "min_confidence cannot be greater than 1"),
            ({"files": {"image": ("image", b"plain text, not an image")}}, 400, "invalid image"),
        ]
        for kwargs, status, error in cases:
            response = requests.post(url, timeout=30, **kwargs)
            assert response.status_code == status, (error, response.text)
            assert response.json() == {"success": False, "error": error, "duration": 0}, response.text

        detection = compreface_detection(server, "x")
        assert detection.detect(str(NO_FACE)) == {
            "message": "No face is found in the given image", "code": 28}
        bad = detection.detect(b"plain text, not an image")
        assert bad["code"] == 21, bad
        response = requests.post(f"{server.base}/api/v1/detection/detect", timeout=30)
        assert (response.status_code, response.json()["code"]) == (400, 34), response.text
        response = requests.post(f"{server.base}/api/v1/detection/detect", json={"file": "%%%"}, timeout=30)
        assert response.json() == {"message": "Provided value is not Base64", "code": 21}
        response = requests.post(
            f"{server.base}/api/v1/detection/detect?&det_prob_threshold=7",
            files={"file": ("a.jpg", photo.read_bytes())}, timeout=30)
        assert (response.status_code, response.json()["code"]) == (400, 26), response.text


def test_with_api_keys():
    with Server("--api-key", KEY, "--api-key", "peer-key-2") as server:
        check_known_counts(server, api_key=KEY)
        photo = KNOWN / "fr_obama.jpg"
        for key in ("", "wrong"):
            try:
                deepstack_client(server, api_key=key, timeout=30).detect(photo.read_bytes())
                raise AssertionError(f"key {key!r} was accepted")
            except DeepstackException as error:
                assert "401" in str(error), error
        response = blue_iris_post(server, photo)
        assert response.status_code == 401
        assert response.json() == {"success": False, "error": "Incorrect api key", "duration": 0}

        answer = compreface_detection(server, "wrong").detect(str(photo))
        assert answer["code"] == 10, answer
        response = requests.post(f"{server.base}/api/v1/detection/detect",
                                 files={"file": ("obama.jpg", photo.read_bytes())}, timeout=30)
        assert response.status_code == 400
        assert response.json() == {"message": "Missing header: x-api-key", "code": 20}


def main():
    tests = [(name, test) for name, test in globals().items()
             if name.startswith("test_") and callable(test)]
    passed = failed = 0
    for name, test in tests:
        try:
            test()
            passed += 1
            print(f"ok {name}")
        except Exception:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print(f"FAILED {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
