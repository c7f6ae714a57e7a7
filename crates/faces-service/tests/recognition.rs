//! Recognition end to end, as a user meets it: subjects and their example faces,
//! every face named (or not) in results and on the feed, "this is Anna" from the
//! gallery, and "find this person". Real server, real photos (the reference
//! library's own: Obama, Biden, Kit Harington and Rose Leslie), real model.

mod common;

use std::time::Duration;

use common::{next_message, read, TestApp, DEADLINE};
use faces_service::recognition::Recognition;
use faces_service::Role;
use serde_json::{json, Value};

/// `method path` with a JSON body; the status and the JSON answer (`null` if none).
async fn send(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app.http.request(method, app.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates subject `name`; returns its id.
async fn subject(app: &TestApp, name: &str) -> String {
    let (status, body) = send(app, "POST", "/subjects", Some(json!({ "name": name }))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Posts `photo` (shared test data) as multipart field `image` to `path`.
async fn post_photo(app: &TestApp, path: &str, photo: &str) -> (u16, Value) {
    post_bytes(app, path, read(photo), "photo.jpg").await
}

async fn post_bytes(app: &TestApp, path: &str, bytes: Vec<u8>, name: &str) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let form = reqwest::multipart::Form::new().part("image", part);
    let response = app
        .http
        .post(app.url(path))
        .multipart(form)
        .send()
        .await
        .expect("photo sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Uploads `photo` and waits for its result.
async fn processed(app: &TestApp, photo: &str) -> Value {
    let id = app.upload(photo).await;
    let result = app.wait_processed(&id).await;
    assert_eq!(result["status"], "done", "{result}");
    result
}

fn keys(object: &Value) -> Vec<&str> {
    object
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

fn names(result: &Value) -> Vec<Value> {
    result["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|face| face["subject"].clone())
        .collect()
}

#[tokio::test]
async fn subjects_are_created_listed_renamed_and_deleted() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let (status, created) = send(&app, "POST", "/subjects", Some(json!({"name": "  Anna "}))).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        keys(&created),
        ["id", "name", "created_at", "examples_count", "examples"]
    );
    assert_eq!(created["name"], "Anna", "trimmed");
    assert_eq!(created["examples_count"], 0);
    let anna = created["id"].as_str().unwrap();
    subject(&app, "Ben").await;

    let (status, list) = send(&app, "GET", "/subjects", None).await;
    assert_eq!(status, 200);
    let listed: Vec<&str> = list["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["Anna", "Ben"]);

    let (status, renamed) = send(
        &app,
        "PATCH",
        &format!("/subjects/{anna}"),
        Some(json!({"name": "Anna Karenina"})),
    )
    .await;
    assert_eq!((status, &renamed["name"]), (200, &json!("Anna Karenina")));
    let (status, shown) = send(&app, "GET", &format!("/subjects/{anna}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["name"], "Anna Karenina");
    assert_eq!(shown["examples"], json!([]));

    // Refusals: keyed by the field at fault, nothing changed.
    for (body, field, sentence) in [
        (json!({}), "name", "This field is required."),
        (json!({"name": "   "}), "name", "Enter a name."),
        (json!({"name": 7}), "name", "Enter the name as a string."),
        (
            json!({"name": "x".repeat(201)}),
            "name",
            "Ensure this name has at most 200 characters.",
        ),
        (
            json!({"name": "Ben"}),
            "name",
            "A subject named “Ben” already exists.",
        ),
    ] {
        let (status, error) = send(&app, "POST", "/subjects", Some(body.clone())).await;
        let expected = if sentence.contains("already") {
            409
        } else {
            400
        };
        assert_eq!(status, expected, "{body}: {error}");
        assert_eq!(error, json!({ field: [sentence] }), "{body}");
    }
    let (status, error) = send(
        &app,
        "PATCH",
        &format!("/subjects/{anna}"),
        Some(json!({"name": "Ben"})),
    )
    .await;
    assert_eq!(
        (status, error),
        (
            409,
            json!({"name": ["A subject named “Ben” already exists."]})
        )
    );
    let response = app
        .http
        .post(app.url("/subjects"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"detail": ["The body is not valid JSON."]})
    );
    let not_found = json!({"detail": ["Not found."]});
    for (method, path) in [
        ("GET", format!("/subjects/{}", uuid::Uuid::new_v4())),
        ("GET", "/subjects/not-an-id".to_owned()),
        ("DELETE", format!("/subjects/{}", uuid::Uuid::new_v4())),
        (
            "DELETE",
            format!("/subjects/{anna}/examples/{}", uuid::Uuid::new_v4()),
        ),
    ] {
        let (status, error) = send(&app, method, &path, None).await;
        assert_eq!((status, &error), (404, &not_found), "{method} {path}");
    }
    let (status, error) = send(
        &app,
        "PATCH",
        &format!("/subjects/{}", uuid::Uuid::new_v4()),
        Some(json!({"name": "Carl"})),
    )
    .await;
    assert_eq!((status, error), (404, not_found));

    let response = app
        .http
        .delete(app.url(&format!("/subjects/{anna}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, list) = send(&app, "GET", "/subjects", None).await;
    assert_eq!(list["subjects"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_example_photo_must_show_exactly_one_face() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let anna = subject(&app, "Obama").await;
    let path = format!("/subjects/{anna}/examples");
    let (status, error) = post_photo(&app, &path, "known_counts/fr_two_people.jpg").await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(
        error,
        json!({"image": ["2 faces were found in the photo; an example photo must show exactly one face."]})
    );
    let (status, error) = post_photo(&app, &path, "nonface/skimage_coffee.png").await;
    assert_eq!(
        (status, error),
        (
            400,
            json!({"image": ["No face was found in the photo; an example photo must show exactly one face."]})
        )
    );
    let (status, error) = post_bytes(&app, &path, b"not an image".to_vec(), "a.jpg").await;
    assert_eq!(
        (status, error),
        (
            400,
            json!({"image": ["Upload a valid image. The file you uploaded was either not an image or a corrupted image."]})
        )
    );
    let (status, error) = post_bytes(&app, &path, Vec::new(), "a.jpg").await;
    assert_eq!(
        (status, error),
        (400, json!({"image": ["The submitted file is empty."]}))
    );
    let form = reqwest::multipart::Form::new().text("name", "x");
    let response = app
        .http
        .post(app.url(&path))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"image": ["No file was submitted."]})
    );
    let (status, error) = post_photo(
        &app,
        &format!("/subjects/{}/examples", uuid::Uuid::new_v4()),
        "known_counts/fr_obama.jpg",
    )
    .await;
    assert_eq!((status, error), (404, json!({"detail": ["Not found."]})));

    let (status, example) = post_photo(&app, &path, "known_counts/fr_obama.jpg").await;
    assert_eq!(status, 201, "{example}");
    assert_eq!(
        keys(&example),
        ["id", "subject_id", "created_at", "image_id", "face", "box"]
    );
    assert_eq!(example["subject_id"], anna.as_str());
    assert_eq!(example["image_id"], Value::Null);
    assert!(example["box"]["width"].as_i64().unwrap() > 50, "{example}");
    // The photo is kept beside the originals, and goes with its example.
    let stored = app.store().await.list("examples").await.unwrap();
    assert_eq!(stored.len(), 1);
    let (_, shown) = send(&app, "GET", &format!("/subjects/{anna}"), None).await;
    assert_eq!(shown["examples_count"], 1);
    assert_eq!(shown["examples"][0]["id"], example["id"]);
    let response = app
        .http
        .delete(app.url(&format!("{path}/{}", example["id"].as_str().unwrap())))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(app.store().await.list("examples").await.unwrap().is_empty());
    let (_, shown) = send(&app, "GET", &format!("/subjects/{anna}"), None).await;
    assert_eq!(shown["examples_count"], 0);
}

#[tokio::test]
async fn every_face_gains_subject_and_distance_after_the_existing_fields() {
    let app = TestApp::start().await;
    let mut ws = app.feed().await;
    let result = processed(&app, "known_counts/fr_two_people.jpg").await;
    for face in result["faces"].as_array().unwrap() {
        assert_eq!(
            keys(face),
            [
                "x",
                "y",
                "width",
                "height",
                "score",
                "landmarks",
                "subject",
                "distance"
            ]
        );
        assert_eq!(
            (&face["subject"], &face["distance"]),
            (&Value::Null, &Value::Null)
        );
    }
    let message = next_message(&mut ws, DEADLINE).await.expect("feed message");
    assert_eq!(keys(&message["faces"][0]), keys(&result["faces"][0]));
}

#[tokio::test]
async fn a_person_is_named_in_other_photos_of_them_and_only_there() {
    let app = TestApp::start().await;
    let obama = subject(&app, "Barack").await;
    let (status, example) = post_photo(
        &app,
        &format!("/subjects/{obama}/examples"),
        "known_counts/fr_obama.jpg",
    )
    .await;
    assert_eq!(status, 201, "{example}");
    let mut ws = app.feed().await;

    let other = processed(&app, "known_counts/fr_obama3.jpg").await;
    assert_eq!(names(&other), [json!("Barack")], "{other}");
    let distance = other["faces"][0]["distance"].as_f64().unwrap();
    assert!(distance > 0.0 && distance <= 0.6, "{distance}");
    let message = next_message(&mut ws, DEADLINE).await.expect("feed message");
    assert_eq!(message["faces"][0]["subject"], "Barack");
    assert_eq!(
        message["faces"][0]["distance"],
        other["faces"][0]["distance"]
    );

    let biden = processed(&app, "known_counts/fr_biden.jpg").await;
    assert_eq!(names(&biden), [Value::Null], "{biden}");
    let (status, waited, _) = app
        .upload_with(
            "wait=30",
            &[],
            read("known_counts/fr_obama-240p.jpg"),
            "small.jpg",
        )
        .await;
    assert_eq!(status, 200, "{waited}");
    assert_eq!(names(&waited), [json!("Barack")]);

    // Names are read, not frozen: a rename shows at once, a deletion unnames.
    let id = other["id"].as_str().unwrap();
    let (status, _) = send(
        &app,
        "PATCH",
        &format!("/subjects/{obama}"),
        Some(json!({"name": "Obama"})),
    )
    .await;
    assert_eq!(status, 200);
    let (_, renamed) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(names(&renamed), [json!("Obama")]);
    let (_, page) = app.get_json("/images?limit=10").await;
    assert!(page["images"]
        .as_array()
        .unwrap()
        .iter()
        .any(|image| image["id"] == id && names(image) == [json!("Obama")]));
    let response = app
        .http
        .delete(app.url(&format!("/subjects/{obama}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, unnamed) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(names(&unnamed), [Value::Null]);
    assert!(app.store().await.list("examples").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_face_from_the_gallery_becomes_an_example() {
    // Every face gets an embedding, subjects or not (the default waits for one).
    let app = TestApp::start_with(|c| c.recognition = Recognition::All).await;
    let pair = processed(&app, "known_counts/fr_kit_with_rose.jpg").await;
    let pair_id = pair["id"].as_str().unwrap();
    assert_eq!(pair["faces_count"], 2);
    let rose = subject(&app, "Rose").await;
    let examples = format!("/subjects/{rose}/examples");
    // Which of the two is Rose Leslie: the left one.
    let faces = pair["faces"].as_array().unwrap();
    let left = if faces[0]["x"].as_i64() < faces[1]["x"].as_i64() {
        0
    } else {
        1
    };
    let (status, example) = send(
        &app,
        "POST",
        &examples,
        Some(json!({"image_id": pair_id, "face": left})),
    )
    .await;
    assert_eq!(status, 201, "{example}");
    assert_eq!(example["image_id"], pair_id);
    assert_eq!(example["face"], left);
    assert_eq!(example["box"]["x"], faces[left]["x"]);

    let (_, named) = app.get_json(&format!("/image/{pair_id}")).await;
    let mut expected = vec![Value::Null, Value::Null];
    expected[left] = json!("Rose");
    assert_eq!(names(&named), expected);
    assert_eq!(named["faces"][left]["distance"], 0.0, "its own example");

    let missing = uuid::Uuid::new_v4();
    for (body, status, error) in [
        (
            json!({"face": 0}),
            400,
            json!({"image_id": ["This field is required."]}),
        ),
        (
            json!({"image_id": "x", "face": 0}),
            400,
            json!({"image_id": ["Enter the id of an image."]}),
        ),
        (
            json!({"image_id": missing, "face": 0}),
            400,
            json!({"image_id": ["No image has this id."]}),
        ),
        (
            json!({"image_id": pair_id}),
            400,
            json!({"face": ["This field is required."]}),
        ),
        (
            json!({"image_id": pair_id, "face": -1}),
            400,
            json!({"face": ["Enter the face's index in the image's faces, from 0."]}),
        ),
        (
            json!({"image_id": pair_id, "face": 2}),
            400,
            json!({"face": ["This image has 2 faces: face must be 0 to 1."]}),
        ),
    ] {
        let (got, answer) = send(&app, "POST", &examples, Some(body.clone())).await;
        assert_eq!((got, answer), (status, error), "{body}");
    }
    let none = processed(&app, "nonface/skimage_coffee.png").await;
    let (got, answer) = send(
        &app,
        "POST",
        &examples,
        Some(json!({"image_id": none["id"], "face": 0})),
    )
    .await;
    assert_eq!(
        (got, answer),
        (400, json!({"face": ["This image has no faces."]}))
    );
}

#[tokio::test]
async fn recognition_off_stores_no_embedding_yet_a_face_can_still_be_named() {
    let app = TestApp::start_with(|c| c.recognition = Recognition::Off).await;
    let pair = processed(&app, "known_counts/fr_kit_with_rose.jpg").await;
    let id = pair["id"].as_str().unwrap();
    let kit = subject(&app, "Kit").await;
    // Nothing to compare: unnamed, even as its own example's photo.
    let (status, example) = send(
        &app,
        "POST",
        &format!("/subjects/{kit}/examples"),
        Some(json!({"image_id": id, "face": 0})),
    )
    .await;
    assert_eq!(status, 201, "{example}");
    let (_, shown) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(names(&shown), [Value::Null, Value::Null]);
    // And not searchable: the search finds no stored face.
    let (status, found) = app.get_json(&format!("/search?image_id={id}&face=0")).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["matches"], json!([]));
}

#[tokio::test]
async fn recognition_for_subjects_starts_with_the_first_subject() {
    let app = TestApp::start_with(|c| c.recognition = Recognition::Subjects).await;
    let before = processed(&app, "known_counts/fr_biden.jpg").await;
    let before_id = before["id"].as_str().unwrap();
    subject(&app, "Someone").await;
    let after = processed(&app, "known_counts/fr_biden.jpg").await;
    let after_id = after["id"].as_str().unwrap();
    let search = |id: &str| format!("/search?image_id={id}&face=0");
    let found_ids = |found: &Value| -> Vec<Value> {
        found["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["image_id"].clone())
            .collect()
    };
    // Only the photo processed once a subject existed has embeddings to find. The
    // search index hears of a processed photo through the feed's relay, a moment
    // after its result commits.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let found = loop {
        let (_, found) = app.get_json(&search(after_id)).await;
        if !found_ids(&found).is_empty() || tokio::time::Instant::now() >= deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found_ids(&found), [json!(after_id)], "{found}");
    // Searching by (or naming) a face of the earlier photo embeds its faces then and
    // keeps them: from now on both photos are found.
    let (_, found) = app.get_json(&search(before_id)).await;
    let mut ids = found_ids(&found);
    ids.sort_by_key(|v| v.to_string());
    let mut want = vec![json!(before_id), json!(after_id)];
    want.sort_by_key(|v| v.to_string());
    assert_eq!(ids, want, "{found}");
}

#[tokio::test]
async fn find_this_person_newest_first_by_photo_or_stored_face() {
    // Every face gets an embedding, subjects or not (the default waits for one).
    let app = TestApp::start_with(|c| c.recognition = Recognition::All).await;
    let mut obama = Vec::new();
    for photo in [
        "known_counts/fr_obama.jpg",
        "known_counts/fr_biden.jpg",
        "known_counts/fr_obama3.jpg",
    ] {
        let result = processed(&app, photo).await;
        if photo.contains("obama") {
            obama.push(result["id"].as_str().unwrap().to_owned());
        }
    }
    obama.reverse();
    let (status, found) = post_photo(&app, "/search", "known_counts/fr_obama-240p.jpg").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(keys(&found), ["matches", "distance", "next_before"]);
    let ids: Vec<&str> = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["image_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, obama, "Obama's photos, newest first, not Biden's");
    // The index's size is on /metrics: three photos of one face each, no example.
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\nfaces_search_index_faces 3\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nfaces_examples 0\n"), "{metrics}");
    let first = &found["matches"][0];
    assert_eq!(
        keys(first),
        ["image_id", "face", "distance", "created_at", "image_url"]
    );
    assert!(first["distance"].as_f64().unwrap() <= 0.6);
    assert_eq!(found["distance"], 0.6);
    let response = app
        .http
        .get(first["image_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the marked copy");

    let (status, by_face) = app
        .get_json(&format!("/search?image_id={}&face=0", obama[1]))
        .await;
    assert_eq!(status, 200, "{by_face}");
    assert_eq!(by_face["matches"][1]["distance"], 0.0, "the face itself");
    // A page at a time, older pages through `before`.
    let (_, first_page) = app
        .get_json(&format!("/search?image_id={}&face=0&limit=1", obama[1]))
        .await;
    assert_eq!(first_page["matches"].as_array().unwrap().len(), 1);
    assert_eq!(first_page["next_before"], obama[0].as_str());
    let (_, second_page) = app
        .get_json(&format!(
            "/search?image_id={}&face=0&limit=1&before={}",
            obama[1], obama[0]
        ))
        .await;
    assert_eq!(second_page["matches"][0]["image_id"], obama[1].as_str());
    assert_eq!(second_page["next_before"], Value::Null);
    // A tight distance finds only the face itself.
    let (_, tight) = app
        .get_json(&format!(
            "/search?image_id={}&face=0&distance=0.0001",
            obama[1]
        ))
        .await;
    assert_eq!(tight["matches"].as_array().unwrap().len(), 1);

    for (query, field, sentence) in [
        ("face=0".to_owned(), "image_id", "This field is required."),
        (
            format!("image_id={}", obama[0]),
            "face",
            "This field is required.",
        ),
        (
            format!("image_id={}&face=x", obama[0]),
            "face",
            "Enter the face's index in the image's faces, from 0.",
        ),
        (
            format!("image_id={}&face=0&distance=-1", obama[0]),
            "distance",
            "“-1” is not a distance above 0, such as 0.6",
        ),
        (
            format!("image_id={}&face=0&limit=0", obama[0]),
            "limit",
            "Enter a whole number from 1 to 1000.",
        ),
        (
            format!("image_id={}&face=0&before=x", obama[0]),
            "before",
            "Enter the id of an image.",
        ),
        (
            format!("image_id={}&face=3", obama[0]),
            "face",
            "This image has 1 faces: face must be 0 to 0.",
        ),
    ] {
        let (status, error) = app.get_json(&format!("/search?{query}")).await;
        assert_eq!(
            (status, error),
            (400, json!({ field: [sentence] })),
            "{query}"
        );
    }
    // A node started later reads the stored faces from the database.
    let later = TestApp::start_config(common::sibling(&app.config), Role::Serve).await;
    let (status, again) = later
        .get_json(&format!("/search?image_id={}&face=0", obama[1]))
        .await;
    assert_eq!(status, 200, "{again}");
    let ids = |found: &Value| -> Vec<Value> {
        found["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["image_id"].clone())
            .collect()
    };
    assert_eq!(ids(&again), ids(&by_face));

    let (status, error) = post_photo(&app, "/search", "known_counts/fr_two_people.jpg").await;
    assert_eq!(
        (status, error),
        (
            400,
            json!({"image": ["2 faces were found in the photo; a photo to search by must show exactly one face."]})
        )
    );
}

#[tokio::test]
async fn a_rename_on_one_node_reaches_the_others() {
    let first = TestApp::start_with(|c| c.recognition = Recognition::All).await;
    let second = TestApp::start_config(common::sibling(&first.config), Role::Serve).await;
    let result = processed(&first, "known_counts/fr_biden.jpg").await;
    let id = result["id"].as_str().unwrap();
    let biden = subject(&first, "Joe").await;
    let (status, _) = send(
        &first,
        "POST",
        &format!("/subjects/{biden}/examples"),
        Some(json!({"image_id": id, "face": 0})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        &second,
        "PATCH",
        &format!("/subjects/{biden}"),
        Some(json!({"name": "Joseph"})),
    )
    .await;
    assert_eq!(status, 200);
    // The first node hears of it (NOTIFY on PostgreSQL, else its next look at the version).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, shown) = first.get_json(&format!("/image/{id}")).await;
        if names(&shown) == [json!("Joseph")] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_photo_embedded_later_on_one_node_is_found_by_the_others() {
    // Processed before any subject: no embeddings yet.
    let first = TestApp::start().await;
    let second = TestApp::start_config(common::sibling(&first.config), Role::Serve).await;
    let result = processed(&first, "known_counts/fr_obama.jpg").await;
    let id = result["id"].as_str().unwrap();
    let (status, found) = post_photo(&first, "/search", "known_counts/fr_obama3.jpg").await;
    assert_eq!((status, &found["matches"]), (200, &json!([])), "{found}");
    // Searching by its face on the second node embeds the photo and keeps them.
    let (status, by_face) = second
        .get_json(&format!("/search?image_id={id}&face=0"))
        .await;
    assert_eq!(status, 200, "{by_face}");
    assert_eq!(by_face["matches"][0]["image_id"], id);
    // The first node hears of it (its next look at `kept_embeddings`).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, found) = post_photo(&first, "/search", "known_counts/fr_obama3.jpg").await;
        assert_eq!(status, 200, "{found}");
        if found["matches"].as_array().unwrap().len() == 1 {
            assert_eq!(found["matches"][0]["image_id"], id);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{found}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `POST /v1/vision/face/<route>` with `fields` and image parts `(field, photo)`.
async fn deepstack(
    app: &TestApp,
    route: &str,
    fields: &[(&str, &str)],
    images: &[(&str, &str)],
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    for (field, photo) in images {
        let part = reqwest::multipart::Part::bytes(read(photo)).file_name("image");
        form = form.part(field.to_string(), part);
    }
    let response = app
        .http
        .post(app.url(&format!("/v1/vision/face/{route}")))
        .multipart(form)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn userids(body: &Value) -> Vec<(String, bool)> {
    let mut found: Vec<(String, bool)> = body["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let confidence = p["confidence"].as_f64().unwrap();
            let userid = p["userid"].as_str().unwrap().to_owned();
            let consistent = if userid == "unknown" {
                confidence == 0.0
            } else {
                (0.67..=1.0).contains(&confidence)
            };
            (userid, consistent)
        })
        .collect();
    found.sort();
    found
}

#[tokio::test]
async fn deepstack_registers_recognises_lists_and_deletes_subjects() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let (status, listed) = deepstack(&app, "list", &[], &[]).await;
    assert_eq!(
        (status, listed),
        (200, json!({"success": true, "faces": [], "duration": 0}))
    );
    let (status, added) = deepstack(
        &app,
        "register",
        &[("userid", "Barack Obama")],
        &[
            ("image1", "known_counts/fr_obama.jpg"),
            ("image2", "known_counts/fr_32bit.png"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{added}");
    assert_eq!(
        (&added["success"], &added["message"], &added["duration"]),
        (&json!(true), &json!("face added"), &json!(0))
    );
    let (_, updated) = deepstack(
        &app,
        "register",
        &[("userid", "barack obama")],
        &[("image", "known_counts/fr_obama3.jpg")],
    )
    .await;
    assert_eq!(
        updated["message"], "face updated",
        "one subject whatever the case"
    );
    let (_, shown) = send(&app, "GET", "/subjects", None).await;
    assert_eq!(shown["subjects"][0]["examples_count"], 3);
    deepstack(
        &app,
        "register",
        &[("userid", "Joe Biden")],
        &[("image", "known_counts/fr_biden.jpg")],
    )
    .await;

    let (status, recognised) = deepstack(
        &app,
        "recognize",
        &[],
        &[("image", "known_counts/fr_obama_and_biden.jpg")],
    )
    .await;
    assert_eq!(status, 200, "{recognised}");
    assert_eq!(
        userids(&recognised),
        [
            ("Barack Obama".into(), true),
            ("Joe Biden".into(), true),
            ("unknown".into(), true)
        ]
    );
    // A stricter threshold: no other photo is that close.
    let (_, strict) = deepstack(
        &app,
        "recognize",
        &[("min_confidence", "0.999")],
        &[("image", "known_counts/fr_obama-240p.jpg")],
    )
    .await;
    assert_eq!(userids(&strict), [("unknown".into(), true)]);
    let (_, none) = deepstack(
        &app,
        "recognize",
        &[],
        &[("image", "nonface/skimage_coffee.png")],
    )
    .await;
    assert_eq!(none["predictions"], json!([]));

    // The errors, DeepStack's words and statuses; nothing stored by a failed register.
    let error = |message: &str| json!({"success": false, "error": message, "duration": 0});
    for (route, fields, images, status, message) in [
        (
            "register",
            vec![("userid", "x")],
            vec![],
            400,
            "No valid image file found",
        ),
        (
            "register",
            vec![],
            vec![("image", "known_counts/fr_obama.jpg")],
            400,
            "userid not specified",
        ),
        (
            "register",
            vec![("userid", "x")],
            vec![("image", "nonface/skimage_coffee.png")],
            400,
            "no face detected",
        ),
        (
            "register",
            vec![("userid", "x")],
            vec![
                ("image", "known_counts/fr_obama.jpg"),
                ("image2", "known_counts/fr_two_people.jpg"),
            ],
            400,
            "2 faces detected in image 2 of 2; an image to register must show exactly one face",
        ),
        (
            "recognize",
            vec![],
            vec![],
            400,
            "No valid image file found",
        ),
        (
            "recognize",
            vec![("min_confidence", "x")],
            vec![("image", "known_counts/fr_obama.jpg")],
            400,
            "Invalid value for min_confidence",
        ),
        ("delete", vec![], vec![], 400, "userid not specified"),
    ] {
        let (got, body) = deepstack(&app, route, &fields, &images).await;
        assert_eq!((got, body), (status, error(message)), "{route} {fields:?}");
    }
    let (_, listed) = deepstack(&app, "list", &[], &[]).await;
    assert_eq!(listed["faces"], json!(["Barack Obama", "Joe Biden"]));

    // Delete takes urlencoded bodies too; an unknown userid is a success.
    for userid in ["Barack Obama", "nobody"] {
        let response = app
            .http
            .post(app.url("/v1/vision/face/delete"))
            .form(&[("userid", userid)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"success": true, "duration": 0})
        );
    }
    let (_, recognised) = deepstack(
        &app,
        "recognize",
        &[],
        &[("image", "known_counts/fr_obama3.jpg")],
    )
    .await;
    assert_eq!(userids(&recognised), [("unknown".into(), true)]);
    assert!(
        app.store().await.list("examples").await.unwrap().len() == 1,
        "Biden's photo stays"
    );
}

/// A CompreFace request: `method path`, header `x-api-key` unless `None`, multipart
/// part `file` with `photo` if given, else the JSON `body` if given.
async fn compreface(
    app: &TestApp,
    method: &str,
    path: &str,
    photo: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .http
        .request(method, app.url(&format!("/api/v1/{path}")))
        .header("x-api-key", "00000000-0000-0000-0000-000000000002");
    if let Some(photo) = photo {
        let part = reqwest::multipart::Part::bytes(read(photo)).file_name("photo.jpg");
        request = request.multipart(reqwest::multipart::Form::new().part("file", part));
    } else if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn compreface_keeps_subjects_and_examples_and_recognises() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let (status, added) = compreface(
        &app,
        "POST",
        "recognition/subjects",
        None,
        Some(json!({"subject": "Kit"})),
    )
    .await;
    assert_eq!((status, added), (201, json!({"subject": "Kit"})));
    let (status, taken) = compreface(
        &app,
        "POST",
        "recognition/subjects",
        None,
        Some(json!({"subject": "KIT"})),
    )
    .await;
    assert_eq!(
        (status, taken),
        (
            400,
            json!({"message": "Subject already exists", "code": 43})
        )
    );
    let (status, example) = compreface(
        &app,
        "POST",
        "recognition/faces?subject=kit",
        Some("known_counts/fr_johnsnow_test1.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{example}");
    let image_id = example["image_id"].as_str().unwrap().to_owned();
    // Adding to a new name creates the subject; `+` in a query is a space.
    let (status, _) = compreface(
        &app,
        "POST",
        "recognition/faces?subject=Joe+Biden",
        Some("known_counts/fr_biden.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 201);
    let (_, subjects) = compreface(&app, "GET", "recognition/subjects", None, None).await;
    assert_eq!(subjects, json!({"subjects": ["Joe Biden", "Kit"]}));
    let (_, faces) = compreface(&app, "GET", "recognition/faces?size=1", None, None).await;
    assert_eq!(
        faces,
        json!({"faces": [{"image_id": image_id, "subject": "Kit"}], "total_pages": 2, "total_elements": 2, "page_number": 0, "page_size": 1})
    );

    let (status, recognised) = compreface(
        &app,
        "POST",
        "recognition/recognize?face_plugins=calculator,undefined&prediction_count=3",
        Some("known_counts/fr_kit_with_rose.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{recognised}");
    let result = recognised["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    let mut subjects: Vec<Vec<&str>> = result
        .iter()
        .map(|face| {
            assert_eq!(face["embedding"].as_array().unwrap().len(), 128);
            face["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    assert!(
                        (0.67..=1.0).contains(&s["similarity"].as_f64().unwrap()),
                        "{s}"
                    );
                    s["subject"].as_str().unwrap()
                })
                .collect()
        })
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [vec![], vec!["Kit"]],
        "Kit named, Rose (nobody's example) not"
    );
    let (status, no_face) = compreface(
        &app,
        "POST",
        "recognition/recognize",
        Some("nonface/skimage_coffee.png"),
        None,
    )
    .await;
    assert_eq!(
        (status, no_face),
        (
            400,
            json!({"message": "No face is found in the given image", "code": 28})
        )
    );
    // The detection endpoint's calculator plugin too.
    let (_, detected) = compreface(
        &app,
        "POST",
        "detection/detect?face_plugins=calculator",
        Some("known_counts/fr_biden.jpg"),
        None,
    )
    .await;
    assert_eq!(
        detected["result"][0]["embedding"].as_array().unwrap().len(),
        128
    );

    for (method, path, photo, body, status, answer) in [
        (
            "POST",
            "recognition/faces?subject=x",
            Some("known_counts/fr_two_people.jpg"),
            None,
            400,
            json!({"message": "More than one face in the source image", "code": 31}),
        ),
        (
            "POST",
            "recognition/faces",
            Some("known_counts/fr_biden.jpg"),
            None,
            400,
            json!({"message": "Required parameter subject is missing", "code": 33}),
        ),
        (
            "POST",
            "recognition/subjects",
            None,
            Some(json!({"subject": "a;b"})),
            400,
            json!({"message": "The name cannot contain the following special characters: ';', '/', '\\'", "code": 26}),
        ),
        (
            "PUT",
            "recognition/subjects/nobody",
            None,
            Some(json!({"subject": "x"})),
            404,
            json!({"message": "Subject nobody not found", "code": 42}),
        ),
        (
            "DELETE",
            "recognition/faces/0e4f6ad4-7f0d-4a3c-9a8e-2a4f0c1b3d5e",
            None,
            None,
            404,
            json!({"message": "Image 0e4f6ad4-7f0d-4a3c-9a8e-2a4f0c1b3d5e not found", "code": 44}),
        ),
        (
            "DELETE",
            "recognition/faces?subject=nobody",
            None,
            None,
            200,
            json!({"deleted": 0}),
        ),
    ] {
        let (got, body) = compreface(&app, method, path, photo, body).await;
        assert_eq!((got, body), (status, answer), "{method} {path}");
    }

    // A rename onto another name merges the two.
    let (_, merged) = compreface(
        &app,
        "PUT",
        "recognition/subjects/Kit",
        None,
        Some(json!({"subject": "joe biden"})),
    )
    .await;
    assert_eq!(merged, json!({"updated": true}));
    let (_, subjects) = compreface(&app, "GET", "recognition/subjects", None, None).await;
    assert_eq!(subjects, json!({"subjects": ["Joe Biden"]}));
    let (_, deleted) = compreface(
        &app,
        "DELETE",
        &format!("recognition/faces/{image_id}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        deleted,
        json!({"image_id": image_id, "subject": "Joe Biden"})
    );
    let (_, deleted) = compreface(&app, "DELETE", "recognition/subjects", None, None).await;
    assert_eq!(deleted, json!({"deleted": 1}));
    assert!(app.store().await.list("examples").await.unwrap().is_empty());
}

/// CompreFace's verification service: `source_image` against `target_image`.
async fn compreface_verification(app: &TestApp, source: &str, target: &str) -> (u16, Value) {
    let part = |photo: &str| reqwest::multipart::Part::bytes(read(photo)).file_name("photo.jpg");
    let form = reqwest::multipart::Form::new()
        .part("source_image", part(source))
        .part("target_image", part(target));
    let response = app
        .http
        .post(app.url("/api/v1/verification/verify?face_plugins=landmarks"))
        .multipart(form)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn similarities(faces: &Value) -> Vec<f64> {
    faces
        .as_array()
        .unwrap()
        .iter()
        .map(|face| face["similarity"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn compreface_verifies_faces_against_an_example_and_between_photos() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let (status, example) = compreface(
        &app,
        "POST",
        "recognition/faces?subject=Obama",
        Some("known_counts/fr_obama.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 201, "{example}");
    let image_id = example["image_id"].as_str().unwrap();

    // Every face gets a similarity: Obama's above the match distance's 0.67,
    // Biden's below it.
    let (status, verified) = compreface(
        &app,
        "POST",
        &format!("recognition/faces/{image_id}/verify?status=true"),
        Some("known_counts/fr_obama_and_biden.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    let faces = &verified["result"];
    assert_eq!(keys(&faces[0]), ["box", "similarity", "execution_time"]);
    let mut found = similarities(faces);
    found.sort_by(f64::total_cmp);
    assert!(found.len() >= 2, "{verified}");
    assert!(found[found.len() - 1] > 0.67, "Obama is Obama: {found:?}");
    assert!(found[found.len() - 2] < 0.67, "Biden is not: {found:?}");
    assert!(verified["plugins_versions"]["calculator"].is_string());
    let (status, missing) = compreface(
        &app,
        "POST",
        "recognition/faces/0e4f6ad4-7f0d-4a3c-9a8e-2a4f0c1b3d5e/verify",
        Some("known_counts/fr_obama3.jpg"),
        None,
    )
    .await;
    assert_eq!(
        (status, missing),
        (
            404,
            json!({"message": "Image 0e4f6ad4-7f0d-4a3c-9a8e-2a4f0c1b3d5e not found", "code": 44})
        )
    );

    // Two photos, nothing stored: the source's one face against the target's faces.
    let (status, verified) = compreface_verification(
        &app,
        "known_counts/fr_obama3.jpg",
        "known_counts/fr_obama_and_biden.jpg",
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    let result = &verified["result"][0];
    assert_eq!(keys(result), ["source_image_face", "face_matches"]);
    assert_eq!(keys(&result["source_image_face"]), ["box", "landmarks"]);
    let mut found = similarities(&result["face_matches"]);
    found.sort_by(f64::total_cmp);
    assert!(found[found.len() - 1] > 0.67, "{found:?}");
    assert!(found[found.len() - 2] < 0.67, "{found:?}");
    let (status, same) = compreface_verification(
        &app,
        "known_counts/fr_obama3.jpg",
        "known_counts/fr_obama3.jpg",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(similarities(&same["result"][0]["face_matches"]), [1.0]);
    for (source, target, answer) in [
        (
            "known_counts/fr_two_people.jpg",
            "known_counts/fr_obama3.jpg",
            json!({"message": "More than one face in the source image", "code": 31}),
        ),
        (
            "nonface/skimage_coffee.png",
            "known_counts/fr_obama3.jpg",
            json!({"message": "No face is found in the given image", "code": 28}),
        ),
        (
            "known_counts/fr_obama3.jpg",
            "nonface/skimage_coffee.png",
            json!({"message": "No face is found in the given image", "code": 28}),
        ),
    ] {
        assert_eq!(
            compreface_verification(&app, source, target).await,
            (400, answer),
            "{source} against {target}"
        );
    }
    let (status, only_one) = compreface(
        &app,
        "POST",
        "verification/verify",
        Some("known_counts/fr_obama3.jpg"),
        None,
    )
    .await;
    assert_eq!(
        (status, only_one),
        (
            400,
            json!({"message": "Required part source_image is missing", "code": 34})
        )
    );
    let (_, subjects) = compreface(&app, "GET", "recognition/subjects", None, None).await;
    assert_eq!(subjects, json!({"subjects": ["Obama"]}), "nothing stored");
}

#[tokio::test]
async fn compreface_takes_a_face_crop_whole_with_detect_faces_false() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let (status, _) = compreface(
        &app,
        "POST",
        "recognition/faces?subject=Biden",
        Some("known_counts/fr_biden.jpg"),
        None,
    )
    .await;
    assert_eq!(status, 201);
    // Biden's face in another photo, cut out at the box recognition gives it.
    let group = "known_counts/fr_obama_and_biden.jpg";
    let (status, recognised) =
        compreface(&app, "POST", "recognition/recognize", Some(group), None).await;
    assert_eq!(status, 200, "{recognised}");
    let biden = recognised["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|face| face["subjects"][0]["subject"] == "Biden")
        .unwrap_or_else(|| panic!("Biden is in {group}: {recognised}"))["box"]
        .clone();
    let corner = |key: &str| biden[key].as_u64().unwrap() as u32;
    let (x, y) = (corner("x_min"), corner("y_min"));
    // The peers' `x_max` and `y_max` are the edges after the box.
    let (width, height) = (corner("x_max") - x, corner("y_max") - y);
    let crop = image::load_from_memory(&read(group))
        .unwrap()
        .crop_imm(x, y, width, height);
    let mut png = Vec::new();
    crop.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();

    let recognize = |query: &'static str| {
        let part = reqwest::multipart::Part::bytes(png.clone()).file_name("crop.png");
        app.http
            .post(app.url(&format!("/api/v1/recognition/recognize?{query}")))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
    };
    let whole: Value = recognize("detect_faces=false&face_plugins=landmarks")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let result = whole["result"].as_array().expect("a result");
    assert_eq!(result.len(), 1, "{whole}");
    assert_eq!(
        keys(&result[0]),
        ["box", "subjects"],
        "no landmarks: {whole}"
    );
    assert_eq!(
        result[0]["box"],
        json!({"probability": 1.0, "x_max": width, "y_max": height, "x_min": 0, "y_min": 0})
    );
    assert_eq!(result[0]["subjects"][0]["subject"], "Biden", "{whole}");
    let bad = recognize("detect_faces=perhaps").await.unwrap();
    assert_eq!(bad.status(), 400);
}
