//! A participant whose network lets nothing through but TURN (relay-only ICE, through coturn with
//! the shared-secret scheme, on loopback) still gets its call: it uses the time-limited
//! credentials the relay hands out, and the relay's one socket learns the TURN server's relayed
//! address from the STUN USERNAME like any other.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{PATIENCE, init_tracing, receives_from};
use media_relay::test_peer::{TestPeer, TestPeerConfig};
use media_relay::{ParticipantId, Relay, RelayConfig, RoomId, TurnConfig};

/// coturn on loopback, stopped (by its pid) and its folder removed on drop.
struct Coturn {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port()
}

/// Whether a STUN binding request to `addr` is answered.
fn answers_stun(addr: SocketAddr) -> bool {
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&[9; 12]);
    let mut buf = [0u8; 512];
    socket.send_to(&request, addr).is_ok()
        && socket
            .recv_from(&mut buf)
            .is_ok_and(|(n, _)| n >= 20 && buf[0..2] == [0x01, 0x01])
}

fn start_coturn(secret: &str) -> Coturn {
    let port = free_udp_port();
    let dir = std::env::temp_dir().join(format!("cloudhelp-coturn-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // Relayed addresses from a small range of its own, so parallel runs do not collide.
    let min_port = 20_000 + (port % 2_000) * 10;
    let config = format!(
        "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\n\
         min-port={min_port}\nmax-port={}\nuse-auth-secret\nstatic-auth-secret={secret}\n\
         realm=cloudhelp\nfingerprint\nno-cli\nno-tls\nno-dtls\nno-tcp-relay\n\
         allow-loopback-peers\nallowed-peer-ip=127.0.0.1\nuserdb={}\npidfile={}\nlog-file={}\nsimple-log\nverbose\n",
        min_port + 9,
        dir.join("turndb").display(),
        dir.join("turn.pid").display(),
        dir.join("turn.log").display(),
    );
    let config_path = dir.join("turnserver.conf");
    std::fs::write(&config_path, config).expect("config written");
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnserver runs (scripts/test installs Debian's coturn)");
    let coturn = Coturn { child, dir, port };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers_stun(addr) {
        assert!(Instant::now() < deadline, "coturn did not start on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
    coturn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_participant_gets_its_call_through_turn_with_the_handed_out_credentials() {
    init_tracing();
    let secret = "turn-test-secret";
    let coturn = start_coturn(secret);
    let relay = Relay::new(RelayConfig {
        turn: Some(TurnConfig {
            urls: vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)],
            secret: secret.as_bytes().to_vec().into(),
            ttl: Duration::from_secs(600),
        }),
        ..RelayConfig::default()
    })
    .expect("valid");
    let join = |who: &'static str, relay_only: bool| {
        let relay = relay.clone();
        async move {
            let participant = relay
                .join(RoomId::from("case-turn"), ParticipantId::from(who))
                .await
                .expect("join");
            let ice_servers = relay.ice_servers_for(&participant.id, SystemTime::now());
            let config = TestPeerConfig {
                ice_servers,
                relay_only,
                ..TestPeerConfig::default()
            };
            let (sender, events) = participant.into_parts();
            TestPeer::start(config, sender, events)
                .await
                .expect("test peer starts")
        }
    };
    // The agent's village network only lets TURN through; the approver is on the office LAN.
    let agent = join("agent", true).await;
    let approver = join("approver", false).await;
    for (peer, other) in [(&agent, "approver"), (&approver, "agent")] {
        peer.wait_until(PATIENCE, |r| receives_from(r, &[other], 50, 10))
            .await
            .unwrap_or_else(|r| panic!("no media from {other} through TURN: {r:#?}"));
    }
    let log = std::fs::read_to_string(coturn.dir.join("turn.log")).unwrap_or_default();
    assert!(
        log.contains("ALLOCATE") || log.contains("allocation"),
        "the agent's media went through a TURN allocation: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_only_participant_with_wrong_credentials_gets_no_media() {
    init_tracing();
    let coturn = start_coturn("the-real-secret");
    let relay = Relay::new(RelayConfig {
        turn: Some(TurnConfig {
            urls: vec![format!("turn:127.0.0.1:{}?transport=udp", coturn.port)],
            secret: b"a-different-secret".to_vec().into(),
            ttl: Duration::from_secs(600),
        }),
        ..RelayConfig::default()
    })
    .expect("valid");
    let participant = relay
        .join(
            RoomId::from("case-turn-refused"),
            ParticipantId::from("agent"),
        )
        .await
        .expect("join");
    let ice_servers = relay.ice_servers_for(&participant.id, SystemTime::now());
    let username = ice_servers[0].username.clone();
    let config = TestPeerConfig {
        ice_servers,
        relay_only: true,
        ..TestPeerConfig::default()
    };
    let (sender, events) = participant.into_parts();
    let agent = TestPeer::start(config, sender, events)
        .await
        .expect("test peer starts");
    // coturn answers the allocation made with the handed-out username 401 (the HMAC is wrong);
    // wait for that answer in its log rather than for time to pass.
    let log_path = coturn.dir.join("turn.log");
    let refused = format!("user <{username}>: incoming packet message processed, error 401");
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains(&refused) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "coturn never refused {username}: {}",
            log.lines()
                .filter(|l| l.contains("ALLOCATE") || l.contains("401"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !agent.report().connected,
        "relay-only ICE cannot connect without an allocation"
    );
}
