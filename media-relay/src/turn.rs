//! Time-limited TURN credentials in the TURN REST scheme that coturn's `use-auth-secret` checks:
//! username `"<unix expiry>:<user>"`, password `base64(HMAC-SHA1(secret, username))`.
//! Pure: the time is an argument. The secret never appears in `Debug` output.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// An ICE server as a browser's `RTCIceServer` spells it (`urls`, `username`, `credential`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:` / `turn:` / `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username, empty for STUN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN credential, empty for STUN.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub credential: String,
}

/// A TURN server with a shared secret (coturn `use-auth-secret` + `static-auth-secret`).
#[derive(Clone)]
pub struct TurnConfig {
    /// URLs handed to clients, e.g. `turn:turn.example:3478?transport=udp`, `turns:turn.example:443?transport=tcp`.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: Zeroizing<Vec<u8>>,
    /// How long handed-out credentials stay valid.
    pub ttl: Duration,
}

impl fmt::Debug for TurnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnConfig")
            .field("urls", &self.urls)
            .field("secret", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnConfig {
    /// Credentials for `user` valid from `now` for `ttl`. `user` ends up in coturn's logs: pass an
    /// opaque id, not a name.
    pub fn credentials(&self, user: &str, now: SystemTime) -> IceServer {
        let expiry = now
            .checked_add(self.ttl)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let username = format!("{expiry}:{user}");
        IceServer {
            urls: self.urls.clone(),
            credential: rest_password(&self.secret, &username),
            username,
        }
    }
}

/// `base64(HMAC-SHA1(secret, username))`.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<sha1::Sha1> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_follow_the_turn_rest_scheme() {
        let turn = TurnConfig {
            urls: vec!["turns:turn.example:443?transport=tcp".into()],
            secret: Zeroizing::new(b"north-secret".to_vec()),
            ttl: Duration::from_secs(600),
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let server = turn.credentials("acct-7", now);
        assert_eq!(server.username, "1700000600:acct-7");
        // Computed independently: python3 hmac.new(b'north-secret', b'1700000600:acct-7', sha1).
        assert_eq!(server.credential, "qOMph4WfdfXgh0yExhAJZog1v2U=");
        assert_eq!(server.urls, turn.urls);
    }

    #[test]
    fn the_secret_stays_out_of_debug_output() {
        let turn = TurnConfig {
            urls: vec![],
            secret: Zeroizing::new(b"north-secret".to_vec()),
            ttl: Duration::from_secs(1),
        };
        assert!(!format!("{turn:?}").contains("north"));
    }

    #[test]
    fn ice_servers_serialize_as_rtc_ice_server() {
        let stun = IceServer {
            urls: vec!["stun:stun.example:3478".into()],
            ..IceServer::default()
        };
        assert_eq!(
            serde_json::to_string(&stun).expect("serializable"),
            r#"{"urls":["stun:stun.example:3478"]}"#
        );
    }
}
