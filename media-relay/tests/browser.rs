//! Interop with a real browser: two headless Chromium pages (fake camera and microphone) and one
//! webrtc-rs test peer in a room. Each page must decode the other page's video and play its audio;
//! the test peer must receive complete, in-order VP8 frames from both pages. And Chromium's own
//! simulcast (three rids) reaches a subscriber at the layer its reported bandwidth carries.
//!
//! Needs Chromium (`scripts/test` installs Debian's `chromium`; `CHROMIUM=/path` to use another).
//!
//! The page talks to the relay through a minimal HTTP bridge in this file (loopback only, one
//! request per connection): `POST /send/<id>` carries a `ClientMessage`, `GET /poll/<id>` returns
//! pending `ServerMessage`s, `POST /report/<id>` carries the page's `getStats()` summary.

mod common;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{join, receiver, receives_from, relay};
use media_relay::test_peer::TestPeerConfig;
use media_relay::{ClientMessage, MediaKind, ParticipantId, Relay, RoomId, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};

const ROOM: &str = "case-browser";

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>relay interop</title>
<script>
const params = new URLSearchParams(location.search);
const id = params.get('id');
// Simulcast as an application turns it on: three encodings of one camera track, lowest first.
const simulcast = params.has('simulcast');
const post = (path, body) => fetch(path + id, {method: 'POST', body: JSON.stringify(body)});
const send = (m) => post('/send/', m);
async function main() {
  const pc = new RTCPeerConnection();
  const size = simulcast ? {width: 1280, height: 720} : {width: 640, height: 480};
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: size});
  for (const t of stream.getTracks()) {
    if (simulcast && t.kind === 'video') {
      pc.addTransceiver(t, {direction: 'sendonly', streams: [stream], sendEncodings: [
        {rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000},
        {rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000},
        {rid: 'f', maxBitrate: 1500000},
      ]});
    } else pc.addTrack(t, stream);
  }
  pc.onicecandidate = (e) => { if (e.candidate) send({type: 'candidate', candidate: e.candidate.toJSON()}); };
  pc.ontrack = (e) => { const el = document.createElement(e.track.kind); el.srcObject = new MediaStream([e.track]); el.muted = true; el.play().catch(() => {}); document.body.appendChild(el); };
  await pc.setLocalDescription(await pc.createOffer());
  await send({type: 'offer', sdp: pc.localDescription.sdp});
  setInterval(async () => {
    const stats = await pc.getStats();
    const videos = [], audios = [];
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') videos.push({frames_decoded: s.framesDecoded || 0, key_frames_decoded: s.keyFramesDecoded || 0, packets: s.packetsReceived || 0});
      if (s.kind === 'audio') audios.push({samples: s.totalSamplesReceived || 0, packets: s.packetsReceived || 0});
    });
    post('/report/', {state: pc.connectionState, videos, audios});
  }, 500);
  for (;;) {
    const messages = await (await fetch('/poll/' + id)).json();
    for (const m of messages) {
      if (m.type === 'answer') await pc.setRemoteDescription({type: 'answer', sdp: m.sdp});
      else if (m.type === 'offer') {
        await pc.setRemoteDescription({type: 'offer', sdp: m.sdp});
        await pc.setLocalDescription(await pc.createAnswer());
        await send({type: 'answer', sdp: pc.localDescription.sdp});
      } else if (m.type === 'candidate') await pc.addIceCandidate(m.candidate);
      else if (m.type === 'error') post('/report/', {error: m});
    }
  }
}
main().catch((e) => post('/report/', {error: String(e)}));
</script>"#;

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct PageReport {
    #[serde(default)]
    state: String,
    #[serde(default)]
    videos: Vec<VideoStats>,
    #[serde(default)]
    audios: Vec<AudioStats>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct VideoStats {
    frames_decoded: u64,
    key_frames_decoded: u64,
    packets: u64,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
struct AudioStats {
    samples: u64,
    packets: u64,
}

struct PageSession {
    sender: mpsc::Sender<ClientMessage>,
    events: Mutex<mpsc::Receiver<ServerMessage>>,
}

struct Bridge {
    sessions: HashMap<String, PageSession>,
    reports: mpsc::UnboundedSender<(String, PageReport)>,
}

async fn serve(listener: TcpListener, bridge: Arc<Bridge>) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::spawn(handle(stream, bridge.clone()));
    }
}

/// One request per connection; enough for a page on loopback, not a general HTTP server.
async fn handle(mut stream: TcpStream, bridge: Arc<Bridge>) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let Ok(n) = stream.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    let body = &buffer[header_end..header_end + length];
    let mut request_line = head.lines().next().unwrap_or("").split(' ');
    let method = request_line.next().unwrap_or("");
    let path = request_line.next().unwrap_or("/");
    let route = path.split('?').next().unwrap_or("/");
    let (status, content_type, response) = match (method, route.rsplit_once('/')) {
        ("GET", Some(("", ""))) => ("200 OK", "text/html", PAGE.to_owned()),
        ("POST", Some(("/send", id))) => {
            match (bridge.sessions.get(id), serde_json::from_slice(body)) {
                (Some(session), Ok(message)) => {
                    let _ = session.sender.send(message).await;
                    ("200 OK", "application/json", "{}".to_owned())
                }
                _ => ("400 Bad Request", "text/plain", "bad send".to_owned()),
            }
        }
        ("GET", Some(("/poll", id))) => match bridge.sessions.get(id) {
            Some(session) => {
                let mut events = session.events.lock().await;
                let mut batch = Vec::new();
                if let Ok(Some(first)) =
                    tokio::time::timeout(Duration::from_millis(500), events.recv()).await
                {
                    batch.push(first);
                    while let Ok(more) = events.try_recv() {
                        batch.push(more);
                    }
                }
                let json = serde_json::to_string(&batch).unwrap_or_else(|_| "[]".into());
                ("200 OK", "application/json", json)
            }
            None => ("404 Not Found", "text/plain", "no such page".to_owned()),
        },
        ("POST", Some(("/report", id))) => {
            if let Ok(report) = serde_json::from_slice::<PageReport>(body) {
                let _ = bridge.reports.send((id.to_owned(), report));
            }
            ("200 OK", "application/json", "{}".to_owned())
        }
        _ => ("404 Not Found", "text/plain", "not found".to_owned()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{response}",
        response.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
}

/// A headless Chromium showing the page as `id`; killed (by its own pid) on drop.
struct Browser {
    child: Child,
    profile: std::path::PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn launch(url: &str, id: &str) -> Browser {
    launch_with(url, &format!("id={id}"), id)
}

fn launch_with(url: &str, query: &str, id: &str) -> Browser {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = std::env::temp_dir().join(format!("relay-browser-{}-{id}", std::process::id()));
    let child = Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("{url}?{query}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} ({e}): apt-get install -y chromium"));
    Browser { child, profile }
}

async fn page_session(relay: &Relay, id: &str) -> PageSession {
    let participant = relay
        .join(RoomId::from(ROOM), ParticipantId::from(id))
        .await
        .expect("join");
    let (sender, events) = participant.into_parts();
    PageSession {
        sender,
        events: Mutex::new(events),
    }
}

/// Joins each page id to the room and serves the pages and their bridge on loopback: the URL,
/// and the pages' reports as they come.
async fn start_bridge(
    relay: &Relay,
    ids: &[&str],
) -> (String, mpsc::UnboundedReceiver<(String, PageReport)>) {
    let (reports_tx, reports) = mpsc::unbounded_channel();
    let mut sessions = HashMap::new();
    for id in ids {
        sessions.insert((*id).to_owned(), page_session(relay, id).await);
    }
    let bridge = Arc::new(Bridge {
        sessions,
        reports: reports_tx,
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("bound"));
    tokio::spawn(serve(listener, bridge));
    (url, reports)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chromium_pages_and_a_rust_peer_see_and_hear_each_other() {
    let relay = relay();
    let (url, mut reports) = start_bridge(&relay, &["page-a", "page-b"]).await;
    let agent = join(&relay, ROOM, "agent", TestPeerConfig::default()).await;
    let _browsers = [launch(&url, "page-a"), launch(&url, "page-b")];

    let mut latest: HashMap<String, PageReport> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let page_done = |r: &PageReport| {
        r.state == "connected"
            && r.videos
                .iter()
                .any(|v| v.frames_decoded >= 30 && v.key_frames_decoded >= 1)
            && r.videos.iter().filter(|v| v.packets > 0).count() == 2
            && r.audios.iter().any(|a| a.samples > 48_000)
            && r.audios.iter().filter(|a| a.packets > 0).count() == 2
    };
    while !(latest.len() == 2 && latest.values().all(page_done)) {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some((id, report))) => {
                assert!(report.error.is_none(), "{id}: {:?}", report.error);
                latest.insert(id, report);
            }
            _ => panic!(
                "pages did not get each other's media: {latest:#?}\nrelay: {:?}\nrust peer: {:#?}",
                relay.metrics().snapshot(),
                agent.report()
            ),
        }
    }

    // Until each page's video has shown a picture: video that reached the Rust peer without
    // its first keyframe (lost while the peer's SRTP came up) is asked for one.
    let report = agent
        .wait_until(Duration::from_secs(30), |r| {
            receives_from(r, &["page-a", "page-b"], 100, 30)
                && r.live_tracks(MediaKind::Video)
                    .all(|t| t.counts.keyframes >= 1)
        })
        .await
        .unwrap_or_else(|r| panic!("rust peer lacks the pages' media: {r:#?}"));
    for video in report.live_tracks(MediaKind::Video) {
        assert!(video.counts.keyframes >= 1, "{video:#?}");
        assert!(
            video.counts.frames_incomplete <= 2,
            "Chromium's VP8 reassembles in order: {video:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_simulcast_reaches_a_subscriber_at_the_layer_its_bandwidth_carries() {
    let relay = relay();
    let (url, mut reports) = start_bridge(&relay, &["page-sim"]).await;
    // Page errors are reported as they happen.
    let errors = tokio::spawn(async move {
        while let Some((id, report)) = reports.recv().await {
            if let Some(error) = report.error {
                return Some(format!("{id}: {error}"));
            }
        }
        None
    });
    let expert = join(&relay, ROOM, "expert", receiver(Some(150_000))).await;
    let _browser = launch_with(&url, "id=page-sim&simulcast", "page-sim");
    let width = |r: &media_relay::test_peer::PeerReport| {
        r.live_tracks(MediaKind::Video)
            .find(|t| t.publisher == "page-sim")
            .and_then(|t| t.counts.keyframe_width)
    };
    // A weak link: the quarter-size layer.
    let low = expert
        .wait_until(Duration::from_secs(60), |r| width(r) == Some(320))
        .await
        .unwrap_or_else(|r| {
            panic!(
                "no 320-wide layer: {r:#?}\nrelay: {:?}",
                relay.metrics().snapshot()
            )
        });
    // A good link: up to a larger layer (as far as Chromium's own uplink estimate lets it send).
    // The relay takes the lower of the subscriber's REMB and its own GCC estimate, which climbs
    // from 300 kbit/s while the low layer is all it sends; meanwhile Chromium may raise the low
    // layer's own resolution. So: until the relay has switched layers and the picture is wider.
    expert.report_bandwidth(Some(10_000_000));
    let high = expert
        .wait_until(Duration::from_secs(60), |r| {
            width(r).is_some_and(|w| w > 320) && relay.metrics().snapshot().layer_switches >= 1
        })
        .await
        .unwrap_or_else(|r| {
            panic!(
                "never moved up: {r:#?}\nrelay: {:?}",
                relay.metrics().snapshot()
            )
        });
    let track = high
        .live_tracks(MediaKind::Video)
        .find(|t| t.publisher == "page-sim")
        .expect("checked");
    eprintln!("low: {:?}\nhigh: {:?}", width(&low), track.counts);
    // From the first keyframe on (frames before it are lost to any decoder; the peer asks for
    // a keyframe when video starts without one, as a browser does).
    assert!(
        track.counts.frames_undecodable() <= 2,
        "frames stay decodable across the switch: {:?}",
        track.counts
    );
    errors.abort();
    if let Ok(Some(error)) = errors.await {
        panic!("{error}");
    }
}
