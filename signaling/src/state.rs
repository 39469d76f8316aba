//! The shared state handed to every handler, and the live notices sent over `/ws`.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::blobs::BlobStore;
use crate::config::{Clock, Config, SystemClock};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::workflow::{DepartmentId, PointId, Role, UserId};

/// Who should receive a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Approvers of a department, and supervisors (queue events).
    Queue(DepartmentId),
    /// The people of a case: its point's agents, its approver, its experts.
    Case {
        /// Service point.
        point_id: PointId,
        /// Approver and experts.
        users: Vec<UserId>,
    },
    /// These users only (a call's people, say).
    Users(Vec<UserId>),
}

impl Audience {
    /// Whether a connected user is in the audience.
    pub fn includes(
        &self,
        user: UserId,
        role: Role,
        point: Option<PointId>,
        department: Option<DepartmentId>,
    ) -> bool {
        match self {
            Audience::Queue(d) => {
                role == Role::Supervisor || (role == Role::Approver && department == Some(*d))
            }
            Audience::Case { point_id, users } => {
                users.contains(&user) || (role == Role::Agent && point == Some(*point_id))
            }
            Audience::Users(users) => users.contains(&user),
        }
    }
}

/// A message for the connected clients of an audience.
#[derive(Debug, Clone)]
pub struct Notice {
    /// Who gets it.
    pub audience: Audience,
    /// The JSON message.
    pub message: Arc<serde_json::Value>,
}

/// Everything a handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Settings.
    pub config: Arc<Config>,
    /// The database.
    pub db: Db,
    /// The blob folder.
    pub blobs: BlobStore,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Prometheus series.
    pub metrics: Arc<Metrics>,
    /// Live notices for `/ws`.
    pub notices: broadcast::Sender<Notice>,
    /// The server's seal key.
    pub seal_key: Arc<esign::keys::SealKey>,
    /// The transparency log's key.
    pub log_key: Arc<esign::keys::LogKey>,
    /// The trust file auditors pin (the log's public key).
    pub trust: Arc<esign::verify::Trust>,
    /// Decisions prepared and waiting for the approver's signature.
    pub pending: Arc<crate::sealing::PendingDecisions>,
    /// The media relay (SFU) carrying the calls.
    pub relay: media_relay::Relay,
    /// Recording consents and state per case.
    pub recordings: Arc<crate::recording::Recordings>,
    /// How fast each user sends chat messages (`chat::BURST` per `chat::WINDOW_MS`).
    pub chat_pace: Arc<crate::chat::Paces>,
    /// Each user's pace of pointer positions on annotated pictures.
    pub pointer_pace: Arc<crate::chat::Paces>,
    /// Login attempt limits and the password-check pool.
    pub login_guard: Arc<crate::login_guard::LoginGuard>,
}

impl AppState {
    /// Opens the data folder (database, blobs, seal key) with the system clock.
    pub fn open(config: Config) -> Result<AppState> {
        Self::open_with_clock(config, Arc::new(SystemClock))
    }

    /// Opens the data folder with a given clock (tests).
    pub fn open_with_clock(config: Config, clock: Arc<dyn Clock>) -> Result<AppState> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::Internal(format!(
                "cannot create the data folder {}: {e} (set data_dir / --data-dir)",
                config.data_dir.display()
            ))
        })?;
        // The folder holds personal data and keys: its owner only (0700), whatever the umask.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let db = Db::open(&config.database_path())?;
        let blobs = BlobStore::open(&config.data_dir.join("blobs"))?;
        let keys = config.data_dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let seal_key = esign::keys::SealKey::load_or_create(&keys.join("seal.key"))
            .map_err(|e| Error::Internal(format!("seal key: {e}")))?;
        let log_key =
            esign::keys::LogKey::load_or_create(&keys.join("log.key"), &config.log_origin)
                .map_err(|e| Error::Internal(format!("log key: {e}")))?;
        let now = clock.now_ms();
        db.call_blocking(|c| crate::tlog::ensure_seal_key(c, &log_key, &seal_key, now))?;
        let trust = esign::verify::Trust::new(vec![log_key.verifier()]);
        std::fs::write(config.data_dir.join("trust.json"), trust.to_json())?;
        let (notices, _) = broadcast::channel(1024);
        let relay = media_relay::Relay::new(config.relay_config())
            .map_err(|e| Error::Internal(format!("relay: {e}")))?;
        let login_guard = Arc::new(crate::login_guard::LoginGuard::new(
            config.login_attempts_per_minute,
            clock.clone(),
        ));
        Ok(AppState {
            login_guard,
            config: Arc::new(config),
            db,
            blobs,
            clock,
            metrics: Arc::new(Metrics::default()),
            notices,
            seal_key: Arc::new(seal_key),
            log_key: Arc::new(log_key),
            trust: Arc::new(trust),
            pending: Arc::new(crate::sealing::PendingDecisions::default()),
            relay,
            recordings: Arc::default(),
            chat_pace: Arc::default(),
            pointer_pace: Arc::new(crate::chat::Paces::new(
                crate::annotations::POINTER_BURST,
                crate::annotations::POINTER_WINDOW_MS,
            )),
        })
    }

    /// Now, in epoch ms.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Sends a notice to the connected clients of an audience (none connected is fine).
    pub fn notify(&self, audience: Audience, message: crate::protocol::ServerMessage) {
        let _ = self.notices.send(Notice {
            audience,
            message: Arc::new(message.to_value()),
        });
    }
}
