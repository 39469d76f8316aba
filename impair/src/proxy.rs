//! The socket loop around the links: one front socket that participants send to, one back
//! socket per participant flow towards the target (so the target tells flows apart as it would
//! tell hosts apart), the profile's timeline, and control commands.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::{Link, LinkStats};
use crate::profile::{Profile, Timeline};

/// What to run.
pub struct Options {
    /// Where participants send (port 0: any free one; the `listening` event names it).
    pub listen: SocketAddr,
    /// Where their datagrams go (the relay's UDP address).
    pub target: SocketAddr,
    pub profile: Profile,
    /// Seeds the loss and jitter, so that a run can be repeated.
    pub seed: u64,
}

/// A command while running.
#[derive(Debug)]
pub enum Control {
    /// Start this profile now (its phases count from now).
    Profile(Profile),
    /// Move every flow's side towards the target to a new address now.
    Rebind,
    /// Report the counters (a `stats` event).
    Stats,
    /// Report the counters and stop.
    Quit,
}

/// What the proxy reports, one JSON object per line in `cloudhelp impair`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Listening {
        address: SocketAddr,
        target: SocketAddr,
    },
    /// A phase started (`at_ms` after the proxy started).
    Phase {
        profile: String,
        phase: String,
        at_ms: u64,
    },
    /// Every flow's side towards the target moved to a new port.
    Rebound { at_ms: u64, flows: usize },
    Stats {
        at_ms: u64,
        profile: String,
        phase: String,
        flows: usize,
        up: LinkStats,
        down: LinkStats,
        /// What was offered each way, by kind (`rtp/<payload type>`, `rtcp`, `stun`, `dtls`,
        /// `other`): packets and bytes.
        kinds: BTreeMap<String, [u64; 2]>,
    },
}

/// What kind of datagram this is on a WebRTC path (RFC 7983 demultiplexing; RTCP by its packet
/// type, RFC 5761).
pub fn kind_of(datagram: &[u8]) -> String {
    match datagram.first() {
        Some(0..=3) => "stun".into(),
        Some(20..=63) => "dtls".into(),
        Some(128..=191) if datagram.len() >= 2 => match datagram[1] {
            192..=223 => "rtcp".into(),
            // The padding bit: padding-only packets are a sender's bandwidth probes.
            b if datagram[0] & 0x20 != 0 => format!("rtp/{} padded", b & 0x7f),
            b => format!("rtp/{}", b & 0x7f),
        },
        _ => "other".into(),
    }
}

/// One participant's flow: its address, and the socket its datagrams leave from.
struct Flow {
    peer: SocketAddr,
    back: Arc<UdpSocket>,
    reader: JoinHandle<()>,
}

/// Reads what the target sends to one flow's back socket.
fn read_back(
    index: usize,
    back: Arc<UdpSocket>,
    to: mpsc::UnboundedSender<(usize, Vec<u8>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, _)) = back.recv_from(&mut buf).await {
            if to.send((index, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    })
}

async fn bind_like(target: SocketAddr) -> io::Result<Arc<UdpSocket>> {
    let any = match target {
        SocketAddr::V4(a) if a.ip().is_loopback() => "127.0.0.1:0",
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    };
    Ok(Arc::new(UdpSocket::bind(any).await?))
}

/// Runs until `Control::Quit` (or until `events` has no receiver).
pub async fn run(
    options: Options,
    mut control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<Event>,
) -> io::Result<()> {
    let front = UdpSocket::bind(options.listen).await?;
    let started = Instant::now();
    let at_ms = move |now: Instant| now.saturating_duration_since(started).as_millis() as u64;
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut up: Link<usize> =
        Link::new(Default::default(), StdRng::from_rng(&mut rng).expect("rng"));
    let mut down: Link<usize> =
        Link::new(Default::default(), StdRng::from_rng(&mut rng).expect("rng"));
    let mut timeline = Timeline::new(options.profile, started);
    let mut phase = String::new();
    let mut flows: Vec<Flow> = Vec::new();
    let mut flow_of: HashMap<SocketAddr, usize> = HashMap::new();
    let (back_tx, mut back_rx) = mpsc::unbounded_channel();
    let mut control_open = true;
    let mut kinds: BTreeMap<String, [u64; 2]> = BTreeMap::new();
    fn count(kinds: &mut BTreeMap<String, [u64; 2]>, way: &str, data: &[u8]) {
        let entry = kinds.entry(format!("{way} {}", kind_of(data))).or_default();
        entry[0] += 1;
        entry[1] += data.len() as u64;
    }
    let mut buf = vec![0u8; 65536];
    let say = |event: Event| events.send(event).is_ok();
    if !say(Event::Listening {
        address: front.local_addr()?,
        target: options.target,
    }) {
        return Ok(());
    }
    loop {
        let now = Instant::now();
        for p in timeline.advance(now) {
            up.set_conditions(p.up);
            down.set_conditions(p.down);
            phase.clone_from(&p.name);
            let rebind = p.rebind;
            say(Event::Phase {
                profile: timeline.profile().name.clone(),
                phase: phase.clone(),
                at_ms: at_ms(now),
            });
            if rebind {
                rebind_all(&mut flows, options.target, &back_tx).await?;
                say(Event::Rebound {
                    at_ms: at_ms(now),
                    flows: flows.len(),
                });
            }
        }
        while let Some((flow, data)) = up.poll(now) {
            let _ = flows[flow].back.send_to(&data, options.target).await;
        }
        while let Some((flow, data)) = down.poll(now) {
            let _ = front.send_to(&data, flows[flow].peer).await;
        }
        let wake = [up.next_due(), down.next_due(), timeline.next_change()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(3600));
        tokio::select! {
            received = front.recv_from(&mut buf) => {
                let (n, from) = received?;
                let flow = match flow_of.get(&from) {
                    Some(i) => *i,
                    None => {
                        let back = bind_like(options.target).await?;
                        let index = flows.len();
                        let reader = read_back(index, back.clone(), back_tx.clone());
                        flows.push(Flow { peer: from, back, reader });
                        flow_of.insert(from, index);
                        index
                    }
                };
                count(&mut kinds, "up", &buf[..n]);
                up.send(Instant::now(), flow, buf[..n].to_vec());
            }
            Some((flow, data)) = back_rx.recv() => {
                count(&mut kinds, "down", &data);
                down.send(Instant::now(), flow, data);
            }
            command = control.recv(), if control_open => {
                let now = Instant::now();
                let stats = |up: &Link<usize>, down: &Link<usize>, profile: &str, phase: &str| Event::Stats {
                    at_ms: at_ms(now),
                    profile: profile.into(),
                    phase: phase.into(),
                    flows: flows.len(),
                    up: up.stats(),
                    down: down.stats(),
                    kinds: kinds.clone(),
                };
                match command {
                    None => control_open = false,
                    Some(Control::Profile(profile)) => timeline = Timeline::new(profile, now),
                    Some(Control::Rebind) => {
                        rebind_all(&mut flows, options.target, &back_tx).await?;
                        say(Event::Rebound { at_ms: at_ms(now), flows: flows.len() });
                    }
                    Some(Control::Stats) => {
                        if !say(stats(&up, &down, &timeline.profile().name, &phase)) {
                            return Ok(());
                        }
                    }
                    Some(Control::Quit) => {
                        say(stats(&up, &down, &timeline.profile().name, &phase));
                        for flow in &flows {
                            flow.reader.abort();
                        }
                        return Ok(());
                    }
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    }
}

/// New back sockets for every flow: the target now hears each from another port.
async fn rebind_all(
    flows: &mut [Flow],
    target: SocketAddr,
    back_tx: &mpsc::UnboundedSender<(usize, Vec<u8>)>,
) -> io::Result<()> {
    for (index, flow) in flows.iter_mut().enumerate() {
        flow.reader.abort();
        flow.back = bind_like(target).await?;
        flow.reader = read_back(index, flow.back.clone(), back_tx.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::Conditions;
    use crate::profile::Phase;

    /// A proxy in front of an echo server on loopback; returns the proxy's address, the control
    /// and events channels, and the echo server's view of who sent to it.
    async fn proxy_in_front_of_echo(
        profile: Profile,
    ) -> (
        SocketAddr,
        mpsc::UnboundedSender<Control>,
        mpsc::UnboundedReceiver<Event>,
        mpsc::UnboundedReceiver<SocketAddr>,
    ) {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        let (seen_tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = seen_tx.send(from);
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let options = Options {
            listen: "127.0.0.1:0".parse().unwrap(),
            target,
            profile,
            seed: 1,
        };
        tokio::spawn(run(options, control_rx, events_tx));
        let Some(Event::Listening { address, .. }) = events.recv().await else {
            panic!("no listening event");
        };
        (address, control, events, seen)
    }

    async fn next_phase(events: &mut mpsc::UnboundedReceiver<Event>) -> String {
        loop {
            match events.recv().await.expect("events") {
                Event::Phase { phase, .. } => return phase,
                _ => continue,
            }
        }
    }

    #[tokio::test]
    async fn datagrams_go_through_and_back_and_the_path_moves_on_rebind() {
        let (proxy, control, mut events, mut seen) =
            proxy_in_front_of_echo(Profile::named("clean").unwrap()).await;
        assert_eq!(next_phase(&mut events).await, "clean");
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut buf = [0u8; 64];
        client.send_to(b"ping", proxy).await.unwrap();
        let (n, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], proxy));
        let first = seen.recv().await.unwrap();
        control.send(Control::Rebind).unwrap();
        loop {
            if let Event::Rebound { flows, .. } = events.recv().await.unwrap() {
                assert_eq!(flows, 1);
                break;
            }
        }
        client.send_to(b"again", proxy).await.unwrap();
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"again");
        let second = seen.recv().await.unwrap();
        assert_ne!(
            first, second,
            "the target hears the flow from a new address"
        );
    }

    #[tokio::test]
    async fn a_blocked_phase_passes_nothing_and_the_counters_say_so() {
        let blocked = Profile {
            name: "blocked-then-clean".into(),
            phases: vec![Phase {
                at_s: 0.0,
                name: "blocked".into(),
                up: Conditions::blocked(),
                down: Conditions::blocked(),
                rebind: false,
            }],
        };
        let (proxy, control, mut events, _seen) = proxy_in_front_of_echo(blocked).await;
        assert_eq!(next_phase(&mut events).await, "blocked");
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..5 {
            client.send_to(b"lost", proxy).await.unwrap();
        }
        // The counters, not a wait, tell that all five arrived and were dropped.
        let stats = loop {
            control.send(Control::Stats).unwrap();
            if let Event::Stats { up, .. } = events.recv().await.unwrap()
                && up.offered == 5
            {
                break up;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!((stats.blocked_drops, stats.delivered), (5, 0));
        // Switched to a clean path, the next datagram goes through.
        control
            .send(Control::Profile(Profile::named("clean").unwrap()))
            .unwrap();
        assert_eq!(next_phase(&mut events).await, "clean");
        client.send_to(b"through", proxy).await.unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"through");
    }
}
