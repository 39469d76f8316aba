//! Server configuration: one struct with defaults; the binary layers a file, the environment and
//! flags over it, then [`Config::validate`] names any bad setting and its fix.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything the server can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data folder: database, blobs, keys, certificate.
    pub data_dir: PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// A real certificate chain (PEM); when absent a self-signed one is made and kept.
    pub tls_cert: Option<PathBuf>,
    /// The key of `tls_cert` (PEM).
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP, for running behind a TLS-terminating reverse proxy only.
    pub plain_http: bool,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// Largest accepted material, in bytes.
    pub max_material_bytes: u64,
    /// Most materials per case.
    pub max_materials_per_case: u32,
    /// How long a login lasts, in hours.
    pub session_hours: u32,
    /// The URL residents reach this server at, for invitation links (unset: the host the
    /// issuing page used).
    pub public_url: Option<String>,
    /// How long an invitation link may be accepted, in minutes.
    pub invitation_minutes: u32,
    /// How long a resident's session lasts, in minutes.
    pub resident_session_minutes: u32,
    /// Refuse to ask for the applicant's signature unless the call is being recorded (as
    /// public-security practice records audio and video while a party signs electronically).
    pub signature_requires_recording: bool,
    /// Tile the viewer's name and the time faintly over remote video, as over materials always.
    pub watermark_video: bool,
    /// Failed logins in a row that lock an account.
    pub login_max_failures: u32,
    /// How long a locked account stays locked, in minutes.
    pub lockout_minutes: u32,
    /// Seconds a connection has for its TLS handshake, and then for each request's headers (also
    /// the most a kept-alive connection may sit idle between requests).
    pub request_header_seconds: u32,
    /// Seconds a request body may go without sending a byte before it is cut off.
    pub body_idle_seconds: u32,
    /// Connections (HTTPS and `/ws`) held at once; more are closed as they arrive.
    pub max_connections: u32,
    /// Login attempts one client address may make per minute (bursts of as many).
    pub login_attempts_per_minute: u32,
    /// The request header a reverse proxy sets to the client's address (e.g. `X-Forwarded-For`,
    /// whose last entry is used); unset, the client is the TCP peer.
    pub client_address_header: Option<String>,
    /// Days a supervisor has to close a follow-up of a bad rating.
    pub followup_days: u32,
    /// The target for simple items, in minutes (10 by the service standard).
    pub simple_target_minutes: u32,
    /// Extra browser origins allowed to open `/ws` (the server's own origin always is).
    pub allowed_origins: Vec<String>,
    /// The transparency log's origin: the name in its checkpoints and trust file.
    pub log_origin: String,
    /// Largest archive accepted for verification by upload, in bytes.
    pub max_verify_bytes: u64,
    /// Local address the relay's peer connections bind (port 0: one ephemeral port each).
    pub relay_udp_addr: SocketAddr,
    /// The relay's public address when it sits behind a 1:1 NAT.
    pub relay_public_ip: Option<std::net::IpAddr>,
    /// TURN URLs handed to browsers (coturn with `use-auth-secret`), e.g. `turns:turn.example:443?transport=tcp`.
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`; clients get time-limited credentials made from it.
    pub turn_secret: Option<String>,
    /// How long TURN credentials stay valid, in minutes.
    pub turn_ttl_minutes: u32,
    /// How often each participant's connection quality is measured and recorded, in seconds.
    pub call_quality_seconds: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("cloudhelp-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            tls_cert: None,
            tls_key: None,
            plain_http: false,
            log_json: false,
            max_material_bytes: 50 * 1024 * 1024,
            max_materials_per_case: 60,
            session_hours: 12,
            public_url: None,
            invitation_minutes: 30,
            resident_session_minutes: 120,
            signature_requires_recording: true,
            watermark_video: false,
            login_max_failures: 5,
            lockout_minutes: 15,
            request_header_seconds: 10,
            body_idle_seconds: 30,
            max_connections: 4096,
            login_attempts_per_minute: 30,
            client_address_header: None,
            followup_days: 3,
            simple_target_minutes: 10,
            allowed_origins: Vec::new(),
            log_origin: "cloudhelp.local/log".to_string(),
            max_verify_bytes: 1024 * 1024 * 1024,
            relay_udp_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            relay_public_ip: None,
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_minutes: 12 * 60,
            call_quality_seconds: 5,
        }
    }
}

impl Config {
    /// Checks the settings together; the error names the setting and how to fix it.
    pub fn validate(&self) -> Result<(), String> {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(
                "tls_cert and tls_key go together: set both (--tls-cert and --tls-key) or neither"
                    .into(),
            );
        }
        if self.plain_http && self.tls_cert.is_some() {
            return Err("plain_http serves without TLS, so tls_cert/tls_key would be ignored: drop one of them".into());
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(format!(
                "public_url: give the URL residents reach this server at, e.g. https://yunbangban.example.gov.cn (got {url})"
            ));
        }
        if self.turn_secret.is_some() == self.turn_urls.is_empty() {
            return Err("turn_urls and turn_secret go together: set both (TURN) or neither".into());
        }
        if let Some(header) = &self.client_address_header
            && axum::http::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(format!(
                "client_address_header: {header:?} is not a header name"
            ));
        }
        esign::note::check_key_name(&self.log_origin).map_err(|e| format!("log_origin: {e}"))?;
        for (name, value) in [
            (
                "max_materials_per_case",
                u64::from(self.max_materials_per_case),
            ),
            ("max_material_bytes", self.max_material_bytes),
            ("session_hours", u64::from(self.session_hours)),
            ("invitation_minutes", u64::from(self.invitation_minutes)),
            (
                "resident_session_minutes",
                u64::from(self.resident_session_minutes),
            ),
            ("login_max_failures", u64::from(self.login_max_failures)),
            (
                "request_header_seconds",
                u64::from(self.request_header_seconds),
            ),
            ("body_idle_seconds", u64::from(self.body_idle_seconds)),
            ("max_connections", u64::from(self.max_connections)),
            (
                "login_attempts_per_minute",
                u64::from(self.login_attempts_per_minute),
            ),
            ("followup_days", u64::from(self.followup_days)),
            (
                "simple_target_minutes",
                u64::from(self.simple_target_minutes),
            ),
        ] {
            if value == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        Ok(())
    }

    /// The relay's settings.
    pub fn relay_config(&self) -> media_relay::RelayConfig {
        media_relay::RelayConfig {
            udp_addrs: vec![self.relay_udp_addr],
            public_ip: self.relay_public_ip,
            turn: self
                .turn_secret
                .as_ref()
                .map(|secret| media_relay::TurnConfig {
                    urls: self.turn_urls.clone(),
                    secret: secret.as_bytes().to_vec().into(),
                    ttl: std::time::Duration::from_secs(u64::from(self.turn_ttl_minutes) * 60),
                }),
            resume_grace: std::time::Duration::from_secs(30),
            quality_interval: std::time::Duration::from_secs(u64::from(self.call_quality_seconds)),
            ..media_relay::RelayConfig::default()
        }
    }

    /// The path of the SQLite database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("cloudhelp.db")
    }
}

/// Where time comes from, so that tests can set it.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A clock tests move by hand.
#[derive(Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    /// A clock showing `ms`.
    pub fn at(ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }
    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Formats epoch milliseconds as RFC 3339 UTC.
/// Epoch ms as a date and minute in China Standard Time, e.g. `2026-12-07 16:41`, for texts that
/// people read and sign.
pub fn china_minute(ms: i64) -> String {
    let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap_or(time::UtcOffset::UTC);
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.to_offset(offset).format(&format).ok())
        .unwrap_or_default()
}

pub fn rfc3339(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into epoch milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_half_a_tls_pair_is_refused_by_name() {
        assert!(Config::default().validate().is_ok());
        let half = Config {
            tls_cert: Some("c.pem".into()),
            ..Config::default()
        };
        assert!(half.validate().unwrap_err().contains("tls_key"));
        let zero = Config {
            max_materials_per_case: 0,
            ..Config::default()
        };
        assert!(
            zero.validate()
                .unwrap_err()
                .contains("max_materials_per_case")
        );
    }

    #[test]
    fn times_round_trip_through_rfc3339() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
    }
}
