"""The peers' recognition clients against the real `faces` binary, unchanged:
deepstack-python's `DeepstackFace.register` / `recognize` / `get_registered_faces`
(what the Home Assistant DeepStack face integration calls), compreface-sdk's
recognition service (subjects, examples, recognize), and double-take's requests for
both flavours exactly as its `api/src/util/detectors/{deepstack,compreface}.js` sends
them; then the documented errors, without and with `--api-key`.

The formats, statuses and the confidence scale these tests hold the server to are in
docs/design/recognition-peers.md (sections 1-8): a face within the match distance of
a subject's example is named with confidence/similarity >= 0.67 (DeepStack's default),
a face beyond it is `unknown` (DeepStack) or has no subject (CompreFace) whatever
threshold the client sends.

The people are the face_recognition library's example photos in
`../shared/data/known_counts`: `fr_obama.jpg`, `fr_obama3.jpg` and `fr_32bit.png` show
Barack Obama, `fr_biden.jpg` Joe Biden, `fr_obama_and_biden.jpg` both and a child,
`fr_johnsnow_test1.jpg` Kit Harington, `fr_kit_with_rose.jpg` Kit Harington and Rose
Leslie, `fr_alex-lacamoire.png` Alex Lacamoire, `fr_two_people.jpg` Biden and Obama.

Run: `python tests/peers/test_recognition_clients.py [test_name ...]` (or with
pytest), with the same environment as tests/peers/test_clients.py (`FACES_BIN`,
`FACES_TEST_DATA`) and its packages (`.ci/run` installs them).
"""

import re
import sys
import traceback
import uuid
from pathlib import Path
from urllib.parse import quote

import requests
from PIL import Image
from compreface import CompreFace
from deepstack.core import DeepstackException, DeepstackFace, get_recognized_faces

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_clients import KEY, KNOWN, NO_FACE, Server  # noqa: E402  (the shared harness)

TIMEOUT = 120  # seconds; a debug build computes embeddings slowly
MATCH_CONFIDENCE = 0.67  # what a face within the match distance gets at least (design §7)
RECOGNITION_KEY = "00000000-0000-0000-0000-000000000002"  # CompreFace's keys are UUIDs

OBAMA = KNOWN / "fr_obama.jpg"
OBAMA_OTHER = KNOWN / "fr_obama3.jpg"
OBAMA_32BIT = KNOWN / "fr_32bit.png"
BIDEN = KNOWN / "fr_biden.jpg"
OBAMA_AND_BIDEN = KNOWN / "fr_obama_and_biden.jpg"
KIT = KNOWN / "fr_johnsnow_test1.jpg"
KIT_WITH_ROSE = KNOWN / "fr_kit_with_rose.jpg"
ALEX = KNOWN / "fr_alex-lacamoire.png"
TWO_PEOPLE = KNOWN / "fr_two_people.jpg"


# ---- readable failures ----

def answer(response, status):
    """The JSON body of `response`, which must have `status`; otherwise a failure
    naming the request and showing what came back."""
    request = response.request
    where = f"{request.method} {re.sub(r'^https?://[^/]+', '', request.url)}"
    if response.status_code != status:
        raise AssertionError(
            f"{where}: expected {status}, got {response.status_code}: {response.text[:300]!r}")
    try:
        return response.json()
    except ValueError:
        raise AssertionError(f"{where}: the answer is not JSON: {response.text[:300]!r}") from None


def client_call(what, function, *args, **kwargs):
    """A client library's call; what it raises becomes a failure saying which call
    (deepstack-python raises on any status but 200, compreface-sdk parses any answer
    as JSON)."""
    try:
        return function(*args, **kwargs)
    except DeepstackException as error:
        raise AssertionError(f"{what}: deepstack-python raised: {error}") from None
    except ValueError as error:  # requests' JSONDecodeError
        raise AssertionError(f"{what}: the answer is not JSON ({error}); is the route served?") from None
    except KeyError as error:  # deepstack-python reads ["faces"] from any answer
        raise AssertionError(f"{what}: the answer has no {error}; is the route served?") from None


def same(actual, expected, what=""):
    if actual != expected:
        raise AssertionError(f"{what + ': ' if what else ''}expected {expected!r}, got {actual!r}")


def deepstack_error(response, status, error):
    body = answer(response, status)
    assert body == {"success": False, "error": error, "duration": 0}, body


def compreface_error(result, code, message=None):
    """compreface-sdk hands back the error body as the result."""
    assert isinstance(result, dict) and result.get("code") == code, (code, result)
    if message is not None:
        assert result.get("message") == message, (message, result)


def assert_box_inside(box, path):
    width, height = Image.open(path).size
    for key in ("x_min", "x_max", "y_min", "y_max"):
        assert isinstance(box[key], int), (path.name, box)
    assert 0 <= box["x_min"] < box["x_max"] <= width, (path.name, box, width)
    assert 0 <= box["y_min"] < box["y_max"] <= height, (path.name, box, height)


# ---- the clients ----

def deepstack(server, **kwargs):
    """deepstack-python as Home Assistant builds it: its defaults (api_key "",
    min_confidence 0.45) unless given."""
    return DeepstackFace(ip="127.0.0.1", port=server.port, timeout=TIMEOUT, **kwargs)


def recognition(server, api_key=RECOGNITION_KEY, options=None):
    return CompreFace("http://127.0.0.1", str(server.port), options or {}).init_face_recognition(api_key)


def deepstack_post(server, route, fields=None, files=None):
    """A raw DeepStack request: `fields` form-urlencoded without `files`, multipart with."""
    return requests.post(f"{server.base}/v1/vision/face/{route}", data=fields or {},
                         files=files, timeout=TIMEOUT)


class DoubleTake:
    """double-take's requests (api/src/util/detectors/*.js at 8e2728d), one photo per
    request: axios with form-data, the file as `fs.createReadStream(path)` (its base
    name and a guessed type), query parameters encoded as axios's `buildURL` does
    (spaces as `+`), and its `normalize` with the default thresholds (unknown 40,
    match 60, match min_area 10000)."""

    def __init__(self, server, key=RECOGNITION_KEY):
        self.base = server.base
        self.key = key

    @staticmethod
    def _file(field, path):
        kind = "image/png" if path.suffix == ".png" else "image/jpeg"
        return (field, (path.name, path.read_bytes(), kind))

    @staticmethod
    def _query(**params):
        # axios: encodeURIComponent, then %3A %24 %2C %20 back to : $ , +
        return "&".join(f"{k}={quote(str(v), safe=':$,').replace('%20', '+')}"
                        for k, v in params.items())

    # DeepStack flavour: no min_confidence is sent, the server's default applies.
    def deepstack_train(self, name, path):
        files = [self._file("image", path), ("userid", (None, name))]
        return requests.post(f"{self.base}/v1/vision/face/register", files=files, timeout=TIMEOUT)

    def deepstack_recognize(self, path):
        return requests.post(f"{self.base}/v1/vision/face/recognize",
                             files=[self._file("image", path)], timeout=TIMEOUT)

    def deepstack_remove(self, name):
        return requests.post(f"{self.base}/v1/vision/face/delete",
                             files=[("userid", (None, name))], timeout=TIMEOUT)

    # CompreFace flavour: `face_plugins` is unset in the defaults, so the template
    # string writes `undefined`.
    def compreface_train(self, name, path):
        return requests.post(f"{self.base}/api/v1/recognition/faces?{self._query(subject=name)}",
                             files=[self._file("file", path)], headers={"x-api-key": self.key},
                             timeout=TIMEOUT)

    def compreface_recognize(self, path):
        url = (f"{self.base}/api/v1/recognition/recognize?face_plugins=undefined"
               f"&{self._query(det_prob_threshold=0.8)}")
        return requests.post(url, files=[self._file("file", path)],
                             headers={"x-api-key": self.key}, timeout=TIMEOUT)

    def compreface_remove(self, name):
        return requests.delete(f"{self.base}/api/v1/recognition/faces?{self._query(subject=name)}",
                               headers={"x-api-key": self.key}, timeout=TIMEOUT)

    @staticmethod
    def normalize_deepstack(data):
        if not data.get("success"):
            return []
        faces = []
        for obj in data["predictions"]:
            confidence = round(obj["confidence"] * 100, 2)
            area = (obj["x_max"] - obj["x_min"]) * (obj["y_max"] - obj["y_min"])
            faces.append({
                "name": obj["userid"].lower() if confidence >= 40 else "unknown",
                "confidence": confidence,
                "match": obj["userid"] != "unknown" and confidence >= 60 and area >= 10000,
            })
        return faces

    @staticmethod
    def normalize_compreface(data):
        if "result" not in data:
            if data.get("code") == 28:
                return []
            raise AssertionError(f"double-take would throw: {data.get('message')!r} ({data})")
        faces = []
        for obj in data["result"]:
            face = obj["subjects"][0] if obj["subjects"] else None
            confidence = round(face["similarity"] * 100, 2) if face else 0
            box = obj["box"]
            area = (box["x_max"] - box["x_min"]) * (box["y_max"] - box["y_min"])
            faces.append({
                "name": face["subject"].lower() if face and confidence >= 40 else "unknown",
                "confidence": confidence,
                "match": confidence >= 60 and area >= 10000,
            })
        return faces


def names(faces):
    return sorted(face["name"] for face in faces)


# ---- deepstack-python (Home Assistant) ----

def test_deepstack_python_register_recognize_list_delete():
    with Server() as server:
        client = deepstack(server)
        same(client_call("list", client.get_registered_faces), [], "nobody registered yet")
        message = client_call("register", client.register, "obama", OBAMA.read_bytes())
        assert message == "face added", message
        # A second photo of a known userid adds an example: DeepStack's word for it.
        message = client_call("register again", client.register, "obama", OBAMA_32BIT.read_bytes())
        assert message == "face updated", message

        predictions = client_call("recognize", client.recognize, OBAMA_OTHER.read_bytes())
        assert len(predictions) == 1, predictions
        face = predictions[0]
        assert face["userid"] == "obama", face
        assert MATCH_CONFIDENCE <= face["confidence"] <= 1, face
        assert_box_inside(face, OBAMA_OTHER)
        assert set(get_recognized_faces(predictions)) == {"obama"}, predictions

        for stranger in (BIDEN, ALEX):
            predictions = client_call("recognize a stranger", client.recognize, stranger.read_bytes())
            assert [(p["userid"], p["confidence"]) for p in predictions] == [("unknown", 0)], \
                (stranger.name, predictions)
        same(client_call("recognize no face", client.recognize, NO_FACE.read_bytes()), [])

        # A stricter client threshold is stricter matching: 0.99 is far inside the
        # match distance, which this other photo is not.
        strict = deepstack(server, min_confidence=0.99)
        predictions = client_call("recognize at 0.99", strict.recognize, OBAMA_OTHER.read_bytes())
        assert [p["userid"] for p in predictions] == ["unknown"], predictions

        same(client_call("list", client.get_registered_faces), ["obama"])
        # deepstack-python has no delete: a raw form-urlencoded request, as DeepStack's docs.
        body = answer(deepstack_post(server, "delete", {"userid": "obama"}), 200)
        assert body["success"] is True, body
        same(client_call("list after delete", client.get_registered_faces), [])
        predictions = client_call("recognize after delete", client.recognize, OBAMA_OTHER.read_bytes())
        assert [p["userid"] for p in predictions] == ["unknown"], predictions


def test_deepstack_several_people_and_image_parts():
    with Server() as server:
        # Any file part counts as an image (DeepStack iterates all; CodeProject.AI
        # documents `imageN`): two photos of one person in one request.
        files = {"image1": ("a.jpg", OBAMA.read_bytes()), "image2": ("b.png", OBAMA_32BIT.read_bytes())}
        body = answer(deepstack_post(server, "register", {"userid": "Barack Obama"}, files), 200)
        assert body["success"] is True and body["message"] == "face added", body
        body = answer(deepstack_post(server, "register", {"userid": "Joe Biden"},
                                     {"image": ("image", BIDEN.read_bytes())}), 200)
        assert body["success"] is True, body

        client = deepstack(server)
        predictions = client_call("recognize", client.recognize, OBAMA_AND_BIDEN.read_bytes())
        assert sorted(p["userid"] for p in predictions) == ["Barack Obama", "Joe Biden", "unknown"], \
            predictions
        for face in predictions:
            assert_box_inside(face, OBAMA_AND_BIDEN)
            if face["userid"] == "unknown":
                assert face["confidence"] == 0, face
            else:
                assert MATCH_CONFIDENCE <= face["confidence"] <= 1, face
        assert sorted(client_call("list", client.get_registered_faces)) == ["Barack Obama", "Joe Biden"]


def test_deepstack_errors():
    with Server() as server:
        client = deepstack(server)
        try:
            client.register("nobody", NO_FACE.read_bytes())
            raise AssertionError("a photo without a face was registered")
        except DeepstackException as error:
            assert "400" in str(error), error
        deepstack_error(deepstack_post(server, "register", {"userid": "nobody"},
                                       {"image": ("image", NO_FACE.read_bytes())}),
                        400, "no face detected")
        deepstack_error(deepstack_post(server, "register", {"userid": "nobody"},
                                       {"image": ("image", b"plain text, not an image")}),
                        400, "invalid image")
        deepstack_error(deepstack_post(server, "register", {},
                                       {"image": ("image", OBAMA.read_bytes())}),
                        400, "userid not specified")
        deepstack_error(deepstack_post(server, "register", {"userid": "nobody"}),
                        400, "No valid image file found")
        same(client_call("list", client.get_registered_faces), [], "a failed register stored a face")

        deepstack_error(deepstack_post(server, "recognize", {"min_confidence": "0.5"}),
                        400, "No valid image file found")
        deepstack_error(deepstack_post(server, "recognize", {"min_confidence": "x"},
                                       {"image": ("image", OBAMA.read_bytes())}),
                        400, "Invalid value for min_confidence")
        deepstack_error(deepstack_post(server, "recognize", {"min_confidence": "2"},
                                       {"image": ("image", OBAMA.read_bytes())}),
                        400, "min_confidence cannot be greater than 1")
        body = answer(deepstack_post(server, "recognize", {}, {"image": ("image", NO_FACE.read_bytes())}), 200)
        assert body["success"] is True and body["predictions"] == [], body

        # Deleting someone unknown is a success, as in DeepStack; no userid is not.
        body = answer(deepstack_post(server, "delete", {"userid": "nobody"}), 200)
        assert body["success"] is True, body
        deepstack_error(deepstack_post(server, "delete", {}), 400, "userid not specified")


# ---- compreface-sdk ----

def test_compreface_sdk_subjects_examples_recognize():
    with Server() as server:
        service = recognition(server)
        subjects, collection = service.get_subjects(), service.get_face_collection()

        same(client_call("add subject", subjects.add, "Kit Harington"), {"subject": "Kit Harington"})
        compreface_error(client_call("add it again", subjects.add, "kit harington"), 43,
                         "Subject already exists")
        same(client_call("list subjects", subjects.list), {"subjects": ["Kit Harington"]})

        added = client_call("add example", collection.add, str(KIT), "Kit Harington")
        assert added.get("subject") == "Kit Harington", added
        image_id = added.get("image_id")
        uuid.UUID(str(image_id))  # a UUID, as CompreFace's
        listed = client_call("list examples", collection.list)
        assert listed.get("faces") == [{"image_id": image_id, "subject": "Kit Harington"}], listed
        assert listed.get("total_elements") == 1 and listed.get("page_number") == 0, listed

        # Kit is named; Rose, nobody's example, has no subject at all.
        answer_ = client_call("recognize", service.recognize, str(KIT_WITH_ROSE))
        result = answer_.get("result")
        assert result is not None and len(result) == 2, answer_
        named = [face for face in result if face["subjects"]]
        assert len(named) == 1, result
        best = named[0]["subjects"][0]
        assert best["subject"] == "Kit Harington" and MATCH_CONFIDENCE <= best["similarity"] <= 1, named
        assert [face["subjects"] for face in result if face is not named[0]] == [[]], result
        for face in result:
            assert_box_inside(face["box"], KIT_WITH_ROSE)
            assert "embedding" not in face, "the embedding only with face_plugins=calculator"

        answer_ = client_call("recognize a stranger", service.recognize, str(BIDEN))
        assert [face.get("subjects") for face in answer_.get("result", [])] == [[]], answer_

        # The calculator plugin: our 128 numbers; prediction_count lists distinct subjects.
        answer_ = client_call("recognize with calculator", service.recognize, str(KIT), {
            "prediction_count": 2, "face_plugins": "calculator", "status": "true"})
        face = answer_["result"][0]
        assert len(face.get("embedding", [])) == 128, face
        assert all(isinstance(x, float) for x in face["embedding"]), face
        assert [s["subject"] for s in face["subjects"]] == ["Kit Harington"], face
        assert "calculator" in answer_.get("plugins_versions", {}), answer_

        # The stored photo comes back as it was sent.
        url = f"{server.base}/api/v1/recognition/faces/{image_id}/img"
        response = requests.get(url, headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == KIT.read_bytes(), \
            (response.status_code, len(response.content))
        response = requests.get(f"{server.base}/api/v1/recognition/faces/{uuid.uuid4()}/img",
                                headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        assert response.status_code == 200 and response.content == b"", \
            (response.status_code, response.content[:100])

        # Rename, then recognize under the new name; bytes go as `image.jpg`.
        same(client_call("rename", subjects.update, "Kit Harington", "Kit"), {"updated": True})
        same(client_call("list subjects", subjects.list), {"subjects": ["Kit"]})
        answer_ = client_call("recognize bytes", service.recognize, KIT_WITH_ROSE.read_bytes())
        assert sorted(s["subject"] for face in answer_["result"] for s in face["subjects"]) == ["Kit"], answer_

        # Delete the example by id (the subject stays), then the subject.
        same(client_call("delete example", collection.delete, image_id),
             {"image_id": image_id, "subject": "Kit"})
        compreface_error(client_call("delete it again", collection.delete, image_id), 44,
                         f"Image {image_id} not found")
        same(client_call("delete subject", subjects.delete, "Kit"), {"subject": "Kit"})
        compreface_error(client_call("delete it again", subjects.delete, "Kit"), 42, "Subject Kit not found")

        # Adding an example creates its subject; deleting all its examples deletes it.
        added = client_call("add example", collection.add, str(OBAMA), "Barack Obama")
        assert added.get("subject") == "Barack Obama", added
        same(client_call("list subjects", subjects.list), {"subjects": ["Barack Obama"]})
        same(client_call("delete examples", collection.delete_all, "Barack Obama"), {"deleted": 1})
        same(client_call("list subjects", subjects.list), {"subjects": []})
        client_call("add subject", subjects.add, "A")
        client_call("add subject", subjects.add, "B")
        same(client_call("delete all subjects", subjects.delete_all), {"deleted": 2})


def test_compreface_errors():
    with Server() as server:
        service = recognition(server)
        subjects, collection = service.get_subjects(), service.get_face_collection()
        compreface_error(client_call("add a photo without a face", collection.add, str(NO_FACE), "x"),
                         28, "No face is found in the given image")
        compreface_error(client_call("add a photo of two people", collection.add, str(TWO_PEOPLE), "x"),
                         31, "More than one face in the source image")
        same(client_call("list subjects", subjects.list), {"subjects": []}, "a failed add made a subject")
        response = requests.post(f"{server.base}/api/v1/recognition/faces?subject=x",
                                 files={"file": ("coffee.png", NO_FACE.read_bytes())},
                                 headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        same(answer(response, 400), {"message": "No face is found in the given image", "code": 28})

        compreface_error(client_call("recognize no face", service.recognize, str(NO_FACE)),
                         28, "No face is found in the given image")
        response = requests.post(f"{server.base}/api/v1/recognition/recognize",
                                 headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        assert answer(response, 400)["code"] == 34, response.text

        compreface_error(client_call("delete unknown subject", subjects.delete, "nobody"),
                         42, "Subject nobody not found")
        compreface_error(client_call("rename unknown subject", subjects.update, "nobody", "x"),
                         42, "Subject nobody not found")
        compreface_error(client_call("bad subject name", subjects.add, "a;b"), 26)
        unknown = str(uuid.uuid4())
        compreface_error(client_call("delete unknown example", collection.delete, unknown),
                         44, f"Image {unknown} not found")
        same(client_call("delete unknown subject's examples", collection.delete_all, "nobody"),
             {"deleted": 0})
        response = requests.post(f"{server.base}/api/v1/recognition/faces/delete", json=[unknown],
                                 headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        same(answer(response, 200), [], response.text)
        response = requests.delete(f"{server.base}/api/v1/recognition/subjects/nobody",
                                   headers={"x-api-key": RECOGNITION_KEY}, timeout=TIMEOUT)
        same(answer(response, 404), {"message": "Subject nobody not found", "code": 42})


def test_compreface_sdk_verify():
    """compreface-sdk's two verifications: a photo's faces against a stored example
    (`get_face_collection().verify`) and a source photo's face against a target's
    (`init_face_verification(key).verify`). Every face gets a similarity; the same
    person's is above the match confidence, another person's below."""
    with Server() as server:
        collection = recognition(server).get_face_collection()
        image_id = client_call("add example", collection.add, str(OBAMA), "Barack Obama")["image_id"]

        verified = client_call("verify against the example", collection.verify,
                               str(OBAMA_AND_BIDEN), image_id, {"face_plugins": "landmarks"})
        faces = verified.get("result")
        assert faces is not None and len(faces) == 3, verified
        similarities = sorted(face["similarity"] for face in faces)
        print(f"    {OBAMA_AND_BIDEN.name} against {OBAMA.name}: similarities {similarities}")
        assert similarities[-1] >= MATCH_CONFIDENCE > similarities[-2], similarities
        for face in faces:
            assert_box_inside(face["box"], OBAMA_AND_BIDEN)
            assert len(face["landmarks"]) == 5, face
        compreface_error(client_call("verify against no example", collection.verify, str(OBAMA_OTHER),
                                     image_id.replace(image_id[:8], "00000000")), 44)

        verification = CompreFace("http://127.0.0.1", str(server.port), {}).init_face_verification(RECOGNITION_KEY)
        verified = client_call("verify two photos", verification.verify, str(OBAMA_OTHER), str(OBAMA_AND_BIDEN))
        result = verified.get("result")
        assert result is not None and len(result) == 1, verified
        assert_box_inside(result[0]["source_image_face"]["box"], OBAMA_OTHER)
        matches = sorted(face["similarity"] for face in result[0]["face_matches"])
        print(f"    {OBAMA_AND_BIDEN.name} against {OBAMA_OTHER.name}: similarities {matches}")
        assert len(matches) == 3 and matches[-1] >= MATCH_CONFIDENCE > matches[-2], verified
        verified = client_call("verify a stranger", verification.verify, str(BIDEN), str(ALEX))
        [match] = verified["result"][0]["face_matches"]
        assert 0 <= match["similarity"] < MATCH_CONFIDENCE, verified
        compreface_error(client_call("a source of two people", verification.verify, str(TWO_PEOPLE), str(OBAMA)),
                         31, "More than one face in the source image")
        same(client_call("nothing stored", recognition(server).get_subjects().list),
             {"subjects": ["Barack Obama"]})


# ---- double-take ----

def test_double_take_deepstack():
    with Server() as server:
        double_take = DoubleTake(server)
        for name, path in (("Barack Obama", OBAMA), ("Barack Obama", OBAMA_32BIT), ("Joe Biden", BIDEN)):
            body = answer(double_take.deepstack_train(name, path), 200)
            assert body["success"] is True, (name, path.name, body)

        faces = double_take.normalize_deepstack(answer(double_take.deepstack_recognize(OBAMA_OTHER), 200))
        assert [(f["name"], f["match"]) for f in faces] == [("barack obama", True)], faces
        faces = double_take.normalize_deepstack(answer(double_take.deepstack_recognize(OBAMA_AND_BIDEN), 200))
        assert names(faces) == ["barack obama", "joe biden", "unknown"], faces
        assert sorted(f["match"] for f in faces) == [False, True, True], faces
        faces = double_take.normalize_deepstack(answer(double_take.deepstack_recognize(ALEX), 200))
        assert [(f["name"], f["match"]) for f in faces] == [("unknown", False)], faces

        # Untrain: double-take deletes the userid (and re-trains the photos it keeps).
        body = answer(double_take.deepstack_remove("Barack Obama"), 200)
        assert body["success"] is True, body
        faces = double_take.normalize_deepstack(answer(double_take.deepstack_recognize(OBAMA_OTHER), 200))
        assert names(faces) == ["unknown"], faces
        answer(double_take.deepstack_train("Barack Obama", OBAMA_32BIT), 200)
        faces = double_take.normalize_deepstack(answer(double_take.deepstack_recognize(OBAMA_OTHER), 200))
        assert [(f["name"], f["match"]) for f in faces] == [("barack obama", True)], faces


def test_double_take_compreface():
    with Server() as server:
        double_take = DoubleTake(server)
        for name, path in (("Barack Obama", OBAMA), ("Barack Obama", OBAMA_32BIT), ("Joe Biden", BIDEN)):
            body = answer(double_take.compreface_train(name, path), 201)
            assert body.get("subject") == name, (path.name, body)  # `+` read as a space

        faces = double_take.normalize_compreface(answer(double_take.compreface_recognize(OBAMA_OTHER), 200))
        assert [(f["name"], f["match"]) for f in faces] == [("barack obama", True)], faces
        faces = double_take.normalize_compreface(answer(double_take.compreface_recognize(OBAMA_AND_BIDEN), 200))
        assert names(faces) == ["barack obama", "joe biden", "unknown"], faces
        assert sorted(f["match"] for f in faces) == [False, True, True], faces
        faces = double_take.normalize_compreface(answer(double_take.compreface_recognize(ALEX), 200))
        assert [(f["name"], f["match"]) for f in faces] == [("unknown", False)], faces
        # No face: code 28, which double-take takes as no result.
        response = double_take.compreface_recognize(NO_FACE)
        same(double_take.normalize_compreface(answer(response, 400)), [])

        same(answer(double_take.compreface_remove("Barack Obama"), 200), {"deleted": 2})
        faces = double_take.normalize_compreface(answer(double_take.compreface_recognize(OBAMA_OTHER), 200))
        assert names(faces) == ["unknown"], faces
        same(answer(double_take.compreface_remove("Barack Obama"), 200), {"deleted": 0})


# ---- keys ----

def test_with_api_keys():
    with Server("--api-key", KEY) as server:
        client = deepstack(server, api_key=KEY)
        same(client_call("register", client.register, "obama", OBAMA.read_bytes()), "face added")
        same(client_call("list", client.get_registered_faces), ["obama"])
        predictions = client_call("recognize", client.recognize, OBAMA_OTHER.read_bytes())
        assert [p["userid"] for p in predictions] == ["obama"], predictions
        for key in ("", "wrong"):
            try:
                deepstack(server, api_key=key).recognize(OBAMA_OTHER.read_bytes())
                raise AssertionError(f"key {key!r} was accepted")
            except DeepstackException as error:
                assert "401" in str(error), error
            for route, fields in (("list", {}), ("delete", {"userid": "obama"})):
                deepstack_error(deepstack_post(server, route, dict(fields, api_key=key)),
                                401, "Incorrect api key")
        body = answer(deepstack_post(server, "delete", {"userid": "obama", "api_key": KEY}), 200)
        assert body["success"] is True, body

        service = recognition(server, api_key=KEY)
        added = client_call("add example", service.get_face_collection().add, str(KIT), "Kit")
        assert added.get("subject") == "Kit", added
        compreface_error(client_call("wrong key", recognition(server, api_key="wrong").get_subjects().list),
                         10, "Recognition service with API Key wrong not found")
        verification = CompreFace("http://127.0.0.1", str(server.port), {}).init_face_verification
        compreface_error(client_call("wrong key", verification("wrong").verify, str(OBAMA), str(BIDEN)),
                         10, "Verification service with API Key wrong not found")
        verified = client_call("verify with the key", verification(KEY).verify, str(OBAMA), str(BIDEN))
        assert len(verified.get("result", [{}])[0].get("face_matches", [])) == 1, verified
        response = requests.get(f"{server.base}/api/v1/recognition/subjects", timeout=TIMEOUT)
        same(answer(response, 400), {"message": "Missing header: x-api-key", "code": 20})


def main(selected):
    tests = [(name, test) for name, test in globals().items()
             if name.startswith("test_") and callable(test) and (not selected or name in selected)]
    passed = failed = 0
    for name, test in tests:
        try:
            test()
            passed += 1
            print(f"ok {name}")
        except AssertionError as error:
            failed += 1
            frames = traceback.extract_tb(error.__traceback__)
            frame = [f for f in frames if f.name == name][-1]
            print(f"FAILED {name} (line {frame.lineno}: {frame.line})\n    {error}")
        except Exception:  # noqa: BLE001 - report every failure, then fail
            failed += 1
            print(f"FAILED {name}")
            traceback.print_exc()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
