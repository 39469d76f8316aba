//! The same scenarios against Janus 1.1's VideoRoom plugin over its REST API, for a side-by-side
//! comparison on one machine (`scripts/janus` starts it in a network namespace). Each seat is a
//! publisher peer (if it sends) and a subscriber peer (if it receives), the VideoRoom way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use media_relay::test_peer::light::LightPeer;
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ClientMessage, IceCandidate, ServerMessage};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::LoadError;
use crate::peer::Peer;

/// How long to wait for Janus's answer or offer.
const PATIENCE: Duration = Duration::from_secs(15);

/// A Janus server's REST API (`http://HOST:8088/janus`).
#[derive(Clone)]
pub struct Janus {
    http: reqwest::Client,
    base: String,
    transactions: Arc<AtomicU64>,
}

/// One Janus session (its own long-poll for events).
pub struct Session {
    janus: Janus,
    id: u64,
}

fn protocol(what: &str, value: &Value) -> LoadError {
    LoadError::Protocol(format!("janus {what}: {value}"))
}

impl Janus {
    /// A client of the Janus REST API at `base`.
    pub fn new(base: &str) -> Result<Self, LoadError> {
        Ok(Self {
            http: crate::server::plain_http_client()?,
            base: base.trim_end_matches('/').to_string(),
            transactions: Arc::new(AtomicU64::new(1)),
        })
    }

    async fn post(&self, path: &str, mut body: Value) -> Result<Value, LoadError> {
        body["transaction"] = json!(format!(
            "t{}",
            self.transactions.fetch_add(1, Ordering::Relaxed)
        ));
        let answer: Value = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await?
            .json()
            .await?;
        if answer["janus"] == "error" {
            return Err(protocol("error", &answer));
        }
        Ok(answer)
    }

    /// Creates a session.
    pub async fn session(&self) -> Result<Session, LoadError> {
        let answer = self.post("", json!({ "janus": "create" })).await?;
        let id = answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| protocol("create", &answer))?;
        Ok(Session {
            janus: self.clone(),
            id,
        })
    }
}

impl Session {
    /// Attaches a VideoRoom handle.
    pub async fn attach(&self) -> Result<u64, LoadError> {
        let answer = self
            .janus
            .post(
                &format!("/{}", self.id),
                json!({ "janus": "attach", "plugin": "janus.plugin.videoroom" }),
            )
            .await?;
        answer["data"]["id"]
            .as_u64()
            .ok_or_else(|| protocol("attach", &answer))
    }

    /// Sends a plugin message (and a JSEP); answers synchronous requests, acks asynchronous ones.
    pub async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> Result<Value, LoadError> {
        let mut message = json!({ "janus": "message", "body": body });
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        self.janus
            .post(&format!("/{}/{handle}", self.id), message)
            .await
    }

    async fn trickle(&self, handle: u64, candidate: &IceCandidate) -> Result<(), LoadError> {
        let candidate = json!({ "candidate": candidate.candidate, "sdpMid": candidate.sdp_mid, "sdpMLineIndex": candidate.sdp_mline_index });
        self.janus
            .post(
                &format!("/{}/{handle}", self.id),
                json!({ "janus": "trickle", "candidate": candidate }),
            )
            .await
            .map(|_| ())
    }

    /// The next events (long poll, up to 30 s).
    pub async fn events(&self) -> Result<Vec<Value>, LoadError> {
        let answer: Value = self
            .janus
            .http
            .get(format!("{}/{}?maxev=10", self.janus.base, self.id))
            .send()
            .await?
            .json()
            .await?;
        Ok(match answer {
            Value::Array(events) => events,
            event => vec![event],
        })
    }

    /// Waits for an event carrying a JSEP.
    async fn jsep_event(&self) -> Result<Value, LoadError> {
        let wait = async {
            loop {
                for event in self.events().await? {
                    if event.get("jsep").is_some() {
                        return Ok(event);
                    }
                    if event["plugindata"]["data"]["error"].is_string() {
                        return Err(protocol("event", &event));
                    }
                }
            }
        };
        tokio::time::timeout(PATIENCE, wait)
            .await
            .map_err(|_| LoadError::Timeout("Janus sent no SDP".into()))?
    }
}

/// Creates a VideoRoom room (VP8 and Opus, no bitrate cap to speak of).
pub async fn create_room(janus: &Janus, room: u64, publishers: usize) -> Result<(), LoadError> {
    let session = janus.session().await?;
    let handle = session.attach().await?;
    let answer = session
        .message(
            handle,
            json!({ "request": "create", "room": room, "publishers": publishers.max(1), "videocodec": "vp8", "audiocodec": "opus", "bitrate": 10_000_000 }),
            None,
        )
        .await?;
    let data = &answer["plugindata"]["data"];
    if data["videoroom"] != "created" {
        return Err(protocol("create room", &answer));
    }
    Ok(())
}

/// A test peer signaling with Janus: a publisher or a subscriber.
pub struct JanusPeer {
    /// The peer (reports).
    pub peer: Peer,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for JanusPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Keeps the session alive (Janus drops sessions without a poll for 60 s) and passes the peer's
/// trickled candidates on.
fn keep_up(
    session: Arc<Session>,
    handle: u64,
    mut from_peer: mpsc::Receiver<ClientMessage>,
    early: Vec<IceCandidate>,
) -> Vec<JoinHandle<()>> {
    let polling = session.clone();
    let poll = tokio::spawn(async move { while polling.events().await.is_ok() {} });
    let trickle = tokio::spawn(async move {
        for candidate in &early {
            let _ = session.trickle(handle, candidate).await;
        }
        while let Some(message) = from_peer.recv().await {
            if let ClientMessage::Candidate { candidate } = message
                && !candidate.candidate.is_empty()
            {
                let _ = session.trickle(handle, &candidate).await;
            }
        }
    });
    vec![poll, trickle]
}

impl JanusPeer {
    /// Joins `room` as a publisher sending what `config` says; returns the peer and its feed id.
    pub async fn publish(
        janus: &Janus,
        room: u64,
        config: TestPeerConfig,
    ) -> Result<(JanusPeer, u64), LoadError> {
        let session = Arc::new(janus.session().await?);
        let handle = session.attach().await?;
        let (to_janus, mut from_peer) = mpsc::channel(64);
        let (to_peer, from_janus) = mpsc::channel(64);
        let peer = TestPeer::start(
            TestPeerConfig {
                offer_first: true,
                ..config
            },
            to_janus,
            from_janus,
        )
        .await?;
        let mut early = Vec::new();
        let offer = loop {
            match from_peer.recv().await {
                Some(ClientMessage::Offer { sdp }) => break sdp,
                Some(ClientMessage::Candidate { candidate }) => early.push(candidate),
                Some(_) => {}
                None => return Err(LoadError::Protocol("the peer made no offer".into())),
            }
        };
        session
            .message(
                handle,
                json!({ "request": "joinandconfigure", "ptype": "publisher", "room": room, "audio": true, "video": true }),
                Some(json!({ "type": "offer", "sdp": offer })),
            )
            .await?;
        let event = session.jsep_event().await?;
        let feed = event["plugindata"]["data"]["id"]
            .as_u64()
            .ok_or_else(|| protocol("joined", &event))?;
        let sdp = event["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| protocol("answer", &event))?
            .to_string();
        to_peer
            .send(ServerMessage::Answer { sdp })
            .await
            .map_err(|_| LoadError::Protocol("the peer stopped".into()))?;
        let mut tasks = keep_up(session, handle, from_peer, early);
        // The peer's signaling ends if this sender drops; keep it with the tasks.
        tasks.push(tokio::spawn(async move {
            to_peer.closed().await;
        }));
        Ok((
            JanusPeer {
                peer: Peer::Full(peer),
                tasks,
            },
            feed,
        ))
    }

    /// Subscribes to `feeds` of `room` with one peer connection (Janus's multistream): a light
    /// peer (`light`) or a full one.
    pub async fn subscribe(
        janus: &Janus,
        room: u64,
        feeds: &[u64],
        config: TestPeerConfig,
        light: bool,
    ) -> Result<JanusPeer, LoadError> {
        let session = Arc::new(janus.session().await?);
        let handle = session.attach().await?;
        let streams: Vec<Value> = feeds.iter().map(|f| json!({ "feed": f })).collect();
        session
            .message(
                handle,
                json!({ "request": "join", "ptype": "subscriber", "room": room, "streams": streams }),
                None,
            )
            .await?;
        let event = session.jsep_event().await?;
        let sdp = event["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| protocol("offer", &event))?
            .to_string();
        let (to_janus, mut from_peer) = mpsc::channel(64);
        let (to_peer, from_janus) = mpsc::channel(64);
        let peer = if light {
            Peer::Light(
                LightPeer::start(
                    config.udp_addr,
                    false,
                    config.reported_bandwidth,
                    to_janus,
                    from_janus,
                )
                .await?,
            )
        } else {
            Peer::Full(
                TestPeer::start(
                    TestPeerConfig {
                        offer_first: false,
                        publish_audio: false,
                        publish_video: false,
                        ..config
                    },
                    to_janus,
                    from_janus,
                )
                .await?,
            )
        };
        to_peer
            .send(ServerMessage::Offer { sdp })
            .await
            .map_err(|_| LoadError::Protocol("the peer stopped".into()))?;
        let mut early = Vec::new();
        let answer = tokio::time::timeout(PATIENCE, async {
            loop {
                match from_peer.recv().await {
                    Some(ClientMessage::Answer { sdp }) => return Some(sdp),
                    Some(ClientMessage::Candidate { candidate }) => early.push(candidate),
                    Some(_) => {}
                    None => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
        .ok_or_else(|| LoadError::Protocol("the peer did not answer Janus".into()))?;
        session
            .message(
                handle,
                json!({ "request": "start" }),
                Some(json!({ "type": "answer", "sdp": answer })),
            )
            .await?;
        let mut tasks = keep_up(session, handle, from_peer, early);
        tasks.push(tokio::spawn(async move {
            to_peer.closed().await;
        }));
        Ok(JanusPeer { peer, tasks })
    }
}
