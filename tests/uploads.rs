//! Resumable uploads through `app()`: a material sent in chunks, each acknowledged only once it
//! is on disk; a chunk that breaks off adds nothing and the upload goes on from the acknowledged
//! offset; the declared digest is checked; only the uploader may continue.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Answer, Auth, TestApp, png};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A PNG of `size` bytes (a real header, so the type is recognised).
fn photo(size: usize) -> Vec<u8> {
    let mut bytes = png();
    bytes.resize(size, 0x5a);
    bytes
}

async fn start(app: &TestApp, who: &Auth, case: i64, bytes: &[u8]) -> Answer {
    let body = json!({ "filename": "户口本.png", "size": bytes.len(), "sha256": sha256(bytes) });
    app.request(
        "POST",
        &format!("/api/cases/{case}/uploads"),
        who,
        Some(body),
    )
    .await
}

/// The demo agent's new case.
async fn agent_case(app: &TestApp) -> (Auth, i64) {
    let agent = app.demo("agent").await;
    let case = app.open_case(&agent, "id-loss").await;
    (agent, case)
}

/// Starts an upload of `bytes`; its id.
async fn started(app: &TestApp, who: &Auth, case: i64, bytes: &[u8]) -> String {
    let answer = start(app, who, case, bytes).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json());
    answer.json()["id"].as_str().unwrap().to_string()
}

async fn chunk(
    app: &TestApp,
    who: &Auth,
    case: i64,
    id: &str,
    offset: u64,
    bytes: Vec<u8>,
) -> Answer {
    chunk_body(app, who, case, id, offset, Body::from(bytes)).await
}

async fn chunk_body(
    app: &TestApp,
    who: &Auth,
    case: i64,
    id: &str,
    offset: u64,
    body: Body,
) -> Answer {
    let request = Request::patch(format!("/api/cases/{case}/uploads/{id}"))
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .unwrap();
    app.send(request, who).await
}

async fn status(app: &TestApp, who: &Auth, case: i64, id: &str) -> Answer {
    app.request("GET", &format!("/api/cases/{case}/uploads/{id}"), who, None)
        .await
}

async fn materials(app: &TestApp, who: &Auth, case: i64) -> Vec<Value> {
    let answer = app
        .request("GET", &format!("/api/cases/{case}/materials"), who, None)
        .await;
    answer.json().as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_material_sent_in_chunks_is_stored_with_its_digest_once_the_last_chunk_is_in() {
    let app = TestApp::new();
    let (agent, case) = agent_case(&app).await;
    let bytes = photo(600_000);

    let started = start(&app, &agent, case, &bytes).await;
    assert_eq!(started.status, StatusCode::CREATED, "{:?}", started.json());
    let upload = started.json();
    let id = upload["id"].as_str().unwrap().to_string();
    assert_eq!(upload["offset"], 0);
    assert_eq!(upload["size"], 600_000);
    let step = upload["chunk_bytes"].as_u64().unwrap() as usize;
    assert!(step > 0 && step < bytes.len());

    let mut offset = 0;
    let mut stored = None;
    while offset < bytes.len() {
        let end = (offset + step).min(bytes.len());
        let answer = chunk(
            &app,
            &agent,
            case,
            &id,
            offset as u64,
            bytes[offset..end].to_vec(),
        )
        .await;
        if end < bytes.len() {
            assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json());
            assert_eq!(
                answer.json()["offset"],
                end as u64,
                "acknowledged up to the chunk's end"
            );
            assert_eq!(
                status(&app, &agent, case, &id).await.json()["offset"],
                end as u64
            );
            assert!(
                materials(&app, &agent, case).await.is_empty(),
                "not a material before the end"
            );
        } else {
            assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.json());
            stored = Some(answer.json());
        }
        offset = end;
    }
    let material = stored.expect("the last chunk stores the material");
    assert_eq!(material["sha256"], sha256(&bytes));
    assert_eq!(material["size"], 600_000);
    assert_eq!(material["media_type"], "image/png");
    assert_eq!(material["filename"], "户口本.png");
    let listed = materials(&app, &agent, case).await;
    assert_eq!(listed.len(), 1);
    // The bytes are the ones sent.
    let download = app
        .raw(
            "GET",
            &format!("/api/cases/{case}/materials/{}", material["id"]),
            &agent,
            None,
            None,
        )
        .await;
    assert_eq!(download.body, bytes);
    // The upload is done with: it is no longer there to continue.
    assert_eq!(
        status(&app, &agent, case, &id).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(
        !app.state.blobs.partial_path(&id).exists(),
        "the partial file became the blob"
    );
}

#[tokio::test]
async fn a_chunk_that_breaks_off_adds_nothing_and_the_upload_goes_on_from_the_acknowledged_offset()
{
    let app = TestApp::new();
    let (agent, case) = agent_case(&app).await;
    let bytes = photo(300_000);
    let id = started(&app, &agent, case, &bytes).await;
    let first = chunk(&app, &agent, case, &id, 0, bytes[..100_000].to_vec()).await;
    assert_eq!(first.json()["offset"], 100_000);

    // The next chunk's connection drops after 50,000 of its 100,000 bytes (a 4G link failing).
    let sent: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(bytes[100_000..150_000].to_vec()),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "link lost",
        )),
    ];
    let broken = chunk_body(
        &app,
        &agent,
        case,
        &id,
        100_000,
        Body::from_stream(futures_util::stream::iter(sent)),
    )
    .await;
    assert_eq!(broken.status, StatusCode::BAD_REQUEST);
    assert_eq!(broken.code(), "body_interrupted");
    // Nothing of it counts: the uploader asks, and goes on from there.
    assert_eq!(
        status(&app, &agent, case, &id).await.json()["offset"],
        100_000
    );
    let file = std::fs::metadata(app.state.blobs.partial_path(&id)).unwrap();
    assert_eq!(file.len(), 100_000, "the broken chunk's bytes were cut off");

    // A chunk at any other offset is refused, naming where the next one starts.
    let wrong = chunk(&app, &agent, case, &id, 150_000, bytes[150_000..].to_vec()).await;
    assert_eq!(wrong.status, StatusCode::CONFLICT);
    assert_eq!(wrong.code(), "offset_mismatch");
    assert!(wrong.json()["message"].as_str().unwrap().contains("100000"));

    let rest = chunk(&app, &agent, case, &id, 100_000, bytes[100_000..].to_vec()).await;
    assert_eq!(rest.status, StatusCode::CREATED, "{:?}", rest.json());
    assert_eq!(rest.json()["sha256"], sha256(&bytes));
}

#[tokio::test]
async fn bytes_that_do_not_match_the_declared_digest_are_refused_and_nothing_is_stored() {
    let app = TestApp::new();
    let (agent, case) = agent_case(&app).await;
    let bytes = photo(50_000);
    let id = started(&app, &agent, case, &bytes).await;
    let mut altered = bytes.clone();
    altered[40_000] ^= 1;
    let answer = chunk(&app, &agent, case, &id, 0, altered).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "digest_mismatch");
    assert!(materials(&app, &agent, case).await.is_empty());
    assert_eq!(
        status(&app, &agent, case, &id).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(!app.state.blobs.partial_path(&id).exists());
}

#[tokio::test]
async fn only_the_uploader_sees_or_continues_an_upload_and_a_chunk_cannot_overrun_the_size() {
    let app = TestApp::new();
    let agent = app.demo("agent").await;
    let approver = app.demo("approver").await;
    let case = app.open_case(&agent, "id-loss").await;
    let bytes = photo(10_000);
    let id = started(&app, &agent, case, &bytes).await;
    assert_eq!(
        status(&app, &approver, case, &id).await.status,
        StatusCode::NOT_FOUND
    );
    let foreign = chunk(&app, &approver, case, &id, 0, bytes.clone()).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0; 10]);
    let overrun = chunk(&app, &agent, case, &id, 0, longer).await;
    assert_eq!(overrun.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(status(&app, &agent, case, &id).await.json()["offset"], 0);
    // Cancelled, it is gone with its bytes.
    let cancelled = app
        .request(
            "DELETE",
            &format!("/api/cases/{case}/uploads/{id}"),
            &agent,
            None,
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::NO_CONTENT);
    assert_eq!(
        status(&app, &agent, case, &id).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_upload_is_refused_at_the_start_when_too_large_or_its_digest_is_malformed() {
    let app = TestApp::with_config(|c| c.max_material_bytes = 1_000);
    let (agent, case) = agent_case(&app).await;
    let big = start(&app, &agent, case, &photo(1_001)).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        big.json()["message"]
            .as_str()
            .unwrap()
            .contains("max_material_bytes")
    );
    let body = json!({ "filename": "a.png", "size": 10, "sha256": "not-a-digest" });
    let malformed = app
        .request(
            "POST",
            &format!("/api/cases/{case}/uploads"),
            &agent,
            Some(body),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.code(), "bad_sha256");
    let body = json!({ "filename": "../a.png", "size": 10, "sha256": "a".repeat(64) });
    let folders = app
        .request(
            "POST",
            &format!("/api/cases/{case}/uploads"),
            &agent,
            Some(body),
        )
        .await;
    assert_eq!(folders.status, StatusCode::BAD_REQUEST);
}
