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
}

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
        Metrics {
            registry,
            case_events,
            queue_wait,
            queue_length,
            ratings,
            simple_finished,
            ws_clients,
            materials,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
