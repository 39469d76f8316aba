//! Call recording with consent. Nothing is written until every person of the case (its agent,
//! the approver holding it and every invited expert) has consented on `/ws`; each consent and its
//! withdrawal is an audit event. The relay then writes each track as it arrives (Opus → Ogg,
//! VP8 → IVF). At the decision (or when the call ends otherwise) the files are closed, hashed and
//! stored as materials of the case, so the archive carries them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde_json::json;

use crate::accounts::User;
use crate::audit;
use crate::calls::{CallErrorCode, call_error, room_of};
use crate::cases;
use crate::error::{Error, Result};
use crate::materials::{self, StoredBlob};
use crate::state::{AppState, Audience};
use crate::workflow::CaseState;
use crate::workflow::{self, CaseFacts};

/// Consents and recording state per case.
#[derive(Default)]
pub struct Recordings(Mutex<HashMap<i64, CaseRecording>>);

#[derive(Default)]
struct CaseRecording {
    consented: HashSet<i64>,
    recording: bool,
}

impl Recordings {
    fn with<T>(&self, case_id: i64, f: impl FnOnce(&mut CaseRecording) -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(case_id).or_default())
    }
}

/// The people whose consent a recording of the case needs.
fn people(facts: &CaseFacts) -> HashSet<i64> {
    facts.call_people().into_iter().collect()
}

fn announce(state: &AppState, facts: &CaseFacts, case_id: i64, recording: bool) {
    state.notify(
        Audience::Case {
            point_id: facts.point_id,
            users: people(facts).into_iter().collect(),
        },
        crate::protocol::ServerMessage::CallRecording { case_id, recording },
    );
}

/// Records a consent (or its withdrawal) and starts recording once everyone has consented;
/// returns a `call.error` for the socket when refused.
pub async fn consent(
    state: &AppState,
    user: &User,
    case_id: i64,
    consent: bool,
) -> Option<serde_json::Value> {
    let actor = user.actor();
    let now = state.now();
    let checked = {
        let actor = actor.clone();
        state
            .db
            .call(move |c| {
                let facts = cases::facts(c, case_id)?
                    // Recording ends with the decision (its files go into the sealed archive), so
                    // the call that goes on after it is not recorded.
                    .filter(|f| {
                        workflow::may_join_call(&actor, f, now)
                            && matches!(f.state, CaseState::InCall | CaseState::AwaitingMaterial)
                    })
                    .ok_or(Error::NotFound("case"))?;
                audit::append(
                    c,
                    now,
                    Some(&actor),
                    Some(case_id),
                    "call.recording_consent",
                    &json!({ "consent": consent }),
                )?;
                Ok(facts)
            })
            .await
    };
    let Ok(facts) = checked else {
        return Some(call_error(
            Some(case_id),
            CallErrorCode::CallRefused,
            "there is no call of this case that you may join",
        ));
    };
    let start = state.recordings.with(case_id, |r| {
        if consent {
            r.consented.insert(user.id);
        } else {
            r.consented.remove(&user.id);
        }
        let everyone = people(&facts).is_subset(&r.consented);
        consent && everyone && !r.recording
    });
    if start {
        let dir = state
            .config
            .data_dir
            .join("recordings")
            .join(format!("case-{case_id}"));
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::error!(case_id, error = %e, "recording folder");
            return Some(call_error(
                Some(case_id),
                CallErrorCode::Internal,
                "recording could not start",
            ));
        }
        match state.relay.start_recording(&room_of(case_id), dir).await {
            Ok(()) => {
                state.recordings.with(case_id, |r| r.recording = true);
                system_event(state, case_id, now, "call.recording_started", json!({})).await;
                announce(state, &facts, case_id, true);
            }
            Err(e) => {
                tracing::warn!(case_id, error = %e, "recording did not start");
                return Some(call_error(
                    Some(case_id),
                    CallErrorCode::RecordingUnavailable,
                    "recording could not start: is everyone in the call?",
                ));
            }
        }
    } else if !consent && stop_and_store(state, case_id).await.unwrap_or(0) > 0 {
        announce(state, &facts, case_id, false);
    }
    None
}

/// Whether the case's call is being recorded, and whether `user_id` has consented: what a joiner
/// is told in `call.config`.
pub fn status(state: &AppState, case_id: i64, user_id: i64) -> (bool, bool) {
    state
        .recordings
        .with(case_id, |r| (r.recording, r.consented.contains(&user_id)))
}

/// Stops a running recording when someone now in the case (an expert just invited) has not
/// consented, storing what was recorded; it starts again (new files) once they consent. So nobody's
/// media is written before they have seen that the call is recorded and agreed.
pub async fn pause_without_everyones_consent(state: &AppState, case_id: i64) {
    if !state.recordings.with(case_id, |r| r.recording) {
        return;
    }
    let Ok(Some(facts)) = state.db.call(move |c| cases::facts(c, case_id)).await else {
        return;
    };
    if state
        .recordings
        .with(case_id, |r| people(&facts).is_subset(&r.consented))
    {
        return;
    }
    if let Err(e) = stop_and_store(state, case_id).await {
        tracing::error!(case_id, error = %e, "recording not stored");
    }
    let reason = json!({ "reason": "a new participant has not consented" });
    system_event(state, case_id, state.now(), "call.recording_paused", reason).await;
    announce(state, &facts, case_id, false);
}

/// Records an event of the recording itself (no actor) in the case's audit trail.
async fn system_event(
    state: &AppState,
    case_id: i64,
    now: i64,
    kind: &'static str,
    details: serde_json::Value,
) {
    let appended = state
        .db
        .call(move |c| audit::append(c, now, None, Some(case_id), kind, &details))
        .await;
    if let Err(e) = appended {
        tracing::error!(case_id, kind, error = %e, "audit event not recorded");
    }
}

/// Stops a running recording of the case and stores its files as materials; returns how many.
pub async fn stop_and_store(state: &AppState, case_id: i64) -> Result<usize> {
    let was = state
        .recordings
        .with(case_id, |r| std::mem::take(&mut r.recording));
    if !was {
        return Ok(0);
    }
    let tracks = state
        .relay
        .stop_recording(&room_of(case_id))
        .await
        .map_err(|e| Error::Internal(format!("stop recording: {e}")))?;
    let mut stored = 0;
    for track in tracks {
        let track = match track {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(case_id, error = %e, "a recorded track could not be finished");
                continue;
            }
        };
        let (extension, media_type) = track.codec.recording_format();
        let blobs = state.blobs.clone();
        let path = track.path.clone();
        let (sha256, size) = tokio::task::spawn_blocking(move || {
            blobs.adopt(tempfile::TempPath::try_from_path(path)?)
        })
        .await
        .map_err(|e| Error::Internal(format!("recording task: {e}")))??;
        if sha256 != track.sha256 {
            tracing::error!(case_id, track = %track.track_id, "recorded file changed between closing and storing");
        }
        let blob = StoredBlob {
            sha256,
            size,
            media_type,
            filename: format!("{}.{extension}", track.track_id),
        };
        let now = state.now();
        state
            .db
            .call(move |c| {
                let owner: i64 =
                    c.query_row("SELECT agent_id FROM cases WHERE id = ?1", [case_id], |r| {
                        r.get(0)
                    })?;
                materials::insert_as(c, case_id, owner, None, "call.recording_stored", &blob, now)
            })
            .await?;
        stored += 1;
    }
    tracing::info!(case_id, files = stored, "recording stored");
    Ok(stored)
}

/// Forgets a case's consents (the call has ended).
pub fn forget(state: &AppState, case_id: i64) {
    state
        .recordings
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&case_id);
}
