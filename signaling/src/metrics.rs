//! Prometheus series: case flow, queue waits, ratings, simple-item target, WebSocket clients.
//! Queue lengths are read from the database at scrape time, so they are never stale.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels by department code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DepartmentLabel {
    /// Department name.
    pub department: String,
}

/// Labels by audit event kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    /// e.g. `case.accepted`.
    pub event: String,
}

/// Labels by rating score.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScoreLabel {
    /// 1-5.
    pub score: String,
}

/// Labels by whether a simple case finished within its target.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabel {
    /// `true` or `false`.
    pub within_target: String,
}

/// The server's series.
pub struct Metrics {
    registry: Registry,
    /// Case events by kind.
    pub case_events: Family<EventLabel, Counter>,
    /// Seconds from queueing to accept, per department.
    pub queue_wait: Family<DepartmentLabel, Histogram>,
    /// Waiting cases per department (set at scrape time).
    pub queue_length: Family<DepartmentLabel, Gauge>,
    /// Ratings by score.
    pub ratings: Family<ScoreLabel, Counter>,
    /// Simple cases finished, within the target or not.
    pub simple_finished: Family<TargetLabel, Counter>,
    /// Open WebSocket connections.
    pub ws_clients: Gauge,
    /// Materials stored.
    pub materials: Counter,
    /// Connections closed on arrival because `max_connections` were open.
    pub connections_refused: Counter,
    /// Relay: rooms open.
    pub relay_rooms: Gauge,
    /// Relay: participants in calls.
    pub relay_participants: Gauge,
    /// Tasks alive on the server's async runtime (set at scrape time), to see leaks in a soak.
    pub runtime_tasks: Gauge,
    /// Relay counters, advanced at scrape time from the relay's own atomics.
    relay_counters: [Counter; RELAY_COUNTERS.len()],
    relay_seen: std::sync::Mutex<[u64; RELAY_COUNTERS.len()]>,
}

/// Names and help of the relay counters, in the order of `relay_counters`.
const RELAY_COUNTERS: [(&str, &str); 10] = [
    (
        "relay_packets_received",
        "RTP packets received from publishers",
    ),
    (
        "relay_packets_forwarded",
        "RTP packets forwarded to subscribers",
    ),
    (
        "relay_bytes_forwarded",
        "RTP payload bytes forwarded to subscribers",
    ),
    (
        "relay_plis_sent",
        "Keyframe requests (PLI) sent to publishers after rate limiting",
    ),
    (
        "relay_keyframe_requests_received",
        "Keyframe requests (PLI/FIR) received from subscribers",
    ),
    (
        "relay_nacks_sent",
        "NACKs the relay sent publishers for packets it missed",
    ),
    (
        "relay_nacks_received",
        "NACKs subscribers sent the relay for packets they missed",
    ),
    (
        "relay_layer_switches",
        "Subscriber legs moved to another simulcast layer",
    ),
    (
        "relay_datagrams_dropped",
        "UDP datagrams dropped because a room's queue or the socket's send buffer was full",
    ),
    (
        "relay_datagrams_unrouted",
        "UDP datagrams from addresses no peer connection knows",
    ),
];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cloudhelp");
        let case_events = Family::<EventLabel, Counter>::default();
        let queue_wait = Family::<DepartmentLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0])
        });
        let queue_length = Family::<DepartmentLabel, Gauge>::default();
        let ratings = Family::<ScoreLabel, Counter>::default();
        let simple_finished = Family::<TargetLabel, Counter>::default();
        let ws_clients = Gauge::default();
        let materials = Counter::default();
        let connections_refused = Counter::default();
        let relay_rooms = Gauge::default();
        let relay_participants = Gauge::default();
        let runtime_tasks = Gauge::default();
        let relay_counters: [Counter; RELAY_COUNTERS.len()] = Default::default();
        registry.register(
            "case_events",
            "Case workflow events by kind",
            case_events.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Seconds a case waited in the queue before an approver accepted it",
            queue_wait.clone(),
        );
        registry.register(
            "queue_length",
            "Cases waiting in each department's queue",
            queue_length.clone(),
        );
        registry.register(
            "ratings",
            "Resident ratings (好差评) by score",
            ratings.clone(),
        );
        registry.register(
            "simple_cases_finished",
            "Simple-item cases finished, within the 10-minute target or not",
            simple_finished.clone(),
        );
        registry.register(
            "websocket_clients",
            "Open /ws connections",
            ws_clients.clone(),
        );
        registry.register(
            "materials_stored",
            "Materials uploaded and stored",
            materials.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed on arrival because max_connections were open",
            connections_refused.clone(),
        );
        registry.register(
            "relay_rooms",
            "Calls (relay rooms) open",
            relay_rooms.clone(),
        );
        registry.register(
            "relay_participants",
            "Participants in calls",
            relay_participants.clone(),
        );
        registry.register(
            "runtime_tasks",
            "Tasks alive on the server's async runtime",
            runtime_tasks.clone(),
        );
        for ((name, help), counter) in RELAY_COUNTERS.iter().zip(&relay_counters) {
            registry.register(*name, *help, counter.clone());
        }
        Metrics {
            registry,
            case_events,
            queue_wait,
            queue_length,
            ratings,
            simple_finished,
            ws_clients,
            materials,
            connections_refused,
            relay_rooms,
            relay_participants,
            runtime_tasks,
            relay_counters,
            relay_seen: std::sync::Mutex::new([0; RELAY_COUNTERS.len()]),
        }
    }
}

impl Metrics {
    /// Brings the relay series up to the relay's counters.
    pub fn observe_relay(&self, snapshot: &media_relay::metrics::MetricsSnapshot) {
        self.relay_rooms.set(snapshot.rooms as i64);
        self.relay_participants.set(snapshot.participants as i64);
        let now = [
            snapshot.packets_received,
            snapshot.packets_forwarded,
            snapshot.bytes_forwarded,
            snapshot.plis_sent,
            snapshot.keyframe_requests_received,
            snapshot.nacks_sent,
            snapshot.nacks_received,
            snapshot.layer_switches,
            snapshot.datagrams_dropped,
            snapshot.datagrams_unrouted,
        ];
        let mut seen = self.relay_seen.lock().unwrap_or_else(|p| p.into_inner());
        for ((counter, seen), now) in self.relay_counters.iter().zip(seen.iter_mut()).zip(now) {
            counter.inc_by(now.saturating_sub(*seen));
            *seen = now.max(*seen);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
