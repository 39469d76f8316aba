//! A client of a running cloudhelp server: HTTPS (or plain HTTP for in-process tests) for logins,
//! cases, accounts and `/metrics`, and authenticated `/ws` sockets.

use std::path::PathBuf;
use std::sync::Arc;

use reqwest::{Method, Url};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::LoadError;

/// How the generator trusts the server's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Trust this PEM certificate (the server's self-signed `<data>/tls/cert.pem`).
    Ca(PathBuf),
    /// Accept any certificate (benchmarks on one machine only).
    Insecure,
    /// The system has no roots here: plain `http://` servers only (in-process tests).
    PlainOnly,
}

/// A bearer token (`POST /api/auth/token`); kept out of `Debug` output.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token obtained elsewhere (e.g. by a test's own login).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The relay's counters as the server exports them on `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayCounters {
    /// RTP packets the relay received from publishers.
    pub packets_received: u64,
    /// RTP packets the relay sent to subscribers.
    pub packets_forwarded: u64,
    /// Bytes the relay sent to subscribers.
    pub bytes_forwarded: u64,
    /// Subscriber legs the relay moved to another simulcast layer.
    #[serde(default)]
    pub layer_switches: u64,
    /// Tasks alive on the server's runtime (a gauge, not a counter).
    #[serde(default)]
    pub runtime_tasks: u64,
}

/// Reads the relay counters out of a Prometheus text exposition (missing series count as 0).
pub fn parse_relay_counters(text: &str) -> RelayCounters {
    let value = |name: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    RelayCounters {
        packets_received: value("cloudhelp_relay_packets_received_total"),
        packets_forwarded: value("cloudhelp_relay_packets_forwarded_total"),
        bytes_forwarded: value("cloudhelp_relay_bytes_forwarded_total"),
        layer_switches: value("cloudhelp_relay_layer_switches_total"),
        runtime_tasks: value("cloudhelp_runtime_tasks"),
    }
}

/// Anything a WebSocket can run over: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// An authenticated `/ws` socket.
pub type Socket = WebSocketStream<Box<dyn Transport>>;

/// A running server, seen from outside.
#[derive(Clone)]
pub struct Server {
    base: Url,
    http: reqwest::Client,
    tls: Option<Arc<ClientConfig>>,
}

impl Server {
    /// A client for the server at `base` (`https://127.0.0.1:8443`, or `http://…`).
    pub fn new(base: &str, trust: &Trust) -> Result<Self, LoadError> {
        let base = Url::parse(base).map_err(|e| LoadError::Config {
            setting: "--url",
            reason: format!("{base}: {e}"),
        })?;
        let tls = match (base.scheme(), trust) {
            ("http", _) => None,
            ("https", Trust::PlainOnly) => {
                return Err(LoadError::Config {
                    setting: "--ca",
                    reason: "an https server needs --ca <data>/tls/cert.pem or --insecure".into(),
                });
            }
            ("https", trust) => Some(Arc::new(tls_config(trust)?)),
            (other, _) => {
                return Err(LoadError::Config {
                    setting: "--url",
                    reason: format!("scheme {other}: use https:// or http://"),
                });
            }
        };
        // reqwest is built without a default crypto provider: it always gets our configuration.
        let http_tls = match &tls {
            Some(tls) => (**tls).clone(),
            None => tls_config(&Trust::PlainOnly)?,
        };
        let http = reqwest::Client::builder().use_preconfigured_tls(http_tls);
        Ok(Self {
            base,
            http: http.build()?,
            tls,
        })
    }

    /// The server's base address.
    pub fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<Value>,
    ) -> Result<(u16, String), LoadError> {
        let mut request = self.http.request(method, format!("{}{path}", self.base()));
        if let Some(Token(token)) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    }

    /// A request that must answer 2xx with JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<Value>,
    ) -> Result<Value, LoadError> {
        let (status, text) = self.request(method.clone(), path, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(LoadError::Status {
                what: format!("{method} {path}"),
                status,
                body: text,
            });
        }
        serde_json::from_str(&text).map_err(|e| LoadError::Protocol(format!("{path}: {e}")))
    }

    /// Sends `bytes` as the body of a POST (an upload); answers the status and the JSON body.
    pub async fn post_bytes(
        &self,
        path: &str,
        token: &Token,
        bytes: Vec<u8>,
    ) -> Result<(u16, Value), LoadError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base()))
            .bearer_auth(&token.0)
            .header("content-type", "application/octet-stream")
            .body(bytes)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// POSTs a body of `size` bytes made of `head` then zeros, streamed (never held in memory),
    /// as `content_type`; answers the status (the server may refuse it before the end).
    pub async fn post_stream(
        &self,
        path: &str,
        token: &Token,
        content_type: &str,
        head: Vec<u8>,
        size: u64,
    ) -> Result<u16, LoadError> {
        const CHUNK: usize = 1 << 20;
        let chunks = size.div_ceil(CHUNK as u64);
        let zeros = bytes::Bytes::from(vec![0u8; CHUNK]);
        let body = futures_util::stream::iter((0..chunks).map(move |i| {
            let left = size - i * CHUNK as u64;
            let mut chunk = zeros.slice(..(left.min(CHUNK as u64) as usize));
            if i == 0 {
                let mut first = head.clone();
                first.extend_from_slice(&chunk[head.len().min(chunk.len())..]);
                chunk = bytes::Bytes::from(first);
            }
            Ok::<_, std::io::Error>(chunk)
        }));
        let response = self
            .http
            .post(format!("{}{path}", self.base()))
            .bearer_auth(&token.0)
            .header("content-type", content_type)
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await;
        match response {
            Ok(r) => Ok(r.status().as_u16()),
            // The server answered and closed before the body ended: the status is lost with it.
            Err(e) if e.is_request() || e.is_body() => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// GETs `path` and answers the status and the body's bytes (downloads).
    pub async fn get_bytes(&self, path: &str, token: &Token) -> Result<(u16, Vec<u8>), LoadError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base()))
            .bearer_auth(&token.0)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }

    /// Logs in and returns a bearer token.
    pub async fn login(&self, username: &str, password: &str) -> Result<Token, LoadError> {
        let answer = self
            .json(
                Method::POST,
                "/api/auth/token",
                None,
                Some(json!({ "username": username, "password": password })),
            )
            .await?;
        answer["token"]
            .as_str()
            .map(Token::new)
            .ok_or_else(|| LoadError::Protocol("login answer without a token".into()))
    }

    /// The caller's user id (`GET /api/me`).
    pub async fn user_id(&self, token: &Token) -> Result<i64, LoadError> {
        self.json(Method::GET, "/api/me", Some(token), None).await?["user"]["id"]
            .as_i64()
            .ok_or_else(|| LoadError::Protocol("/api/me without user.id".into()))
    }

    /// Opens a case for a service item as an agent; returns its id.
    pub async fn open_case(&self, agent: &Token, item: &str) -> Result<i64, LoadError> {
        // A synthetic applicant (a valid check digit, not a real person).
        let body = json!({ "item": item, "applicant_name": "测试", "applicant_id_number": "11010119900307109X", "note": "load" });
        self.json(Method::POST, "/api/cases", Some(agent), Some(body))
            .await?["id"]
            .as_i64()
            .ok_or_else(|| LoadError::Protocol("new case without an id".into()))
    }

    /// A case action (`accept`, `invite`, …) with its body.
    pub async fn act(
        &self,
        token: &Token,
        case: i64,
        action: &str,
        body: Value,
    ) -> Result<Value, LoadError> {
        let path = format!("/api/cases/{case}/actions/{action}");
        self.json(Method::POST, &path, Some(token), Some(body))
            .await
    }

    /// Adds an account as an admin (`POST /api/admin/users`); an existing one is left as it is.
    pub async fn ensure_user(&self, admin: &Token, user: &Value) -> Result<(), LoadError> {
        let (status, body) = self
            .request(
                Method::POST,
                "/api/admin/users",
                Some(admin),
                Some(user.clone()),
            )
            .await?;
        match status {
            201 | 409 => Ok(()),
            status => Err(LoadError::Status {
                what: "POST /api/admin/users".into(),
                status,
                body,
            }),
        }
    }

    /// The relay counters from `/metrics`.
    pub async fn relay_counters(&self) -> Result<RelayCounters, LoadError> {
        let (status, text) = self.request(Method::GET, "/metrics", None, None).await?;
        if status != 200 {
            return Err(LoadError::Status {
                what: "GET /metrics".into(),
                status,
                body: text,
            });
        }
        Ok(parse_relay_counters(&text))
    }

    /// Answers `GET path` (any status), for probes.
    pub async fn get_status(&self, path: &str) -> Result<u16, LoadError> {
        Ok(self.request(Method::GET, path, None, None).await?.0)
    }

    /// Answers `POST path` with a JSON body (any status), for floods.
    pub async fn post_status(&self, path: &str, body: Value) -> Result<u16, LoadError> {
        Ok(self.request(Method::POST, path, None, Some(body)).await?.0)
    }

    /// Opens a TCP connection (and the TLS handshake for https) and holds it, sending nothing.
    pub async fn idle_connection(&self) -> Result<Box<dyn Transport>, LoadError> {
        let (tcp, host) = self.connect().await?;
        self.secure(tcp, &host).await
    }

    async fn connect(&self) -> Result<(tokio::net::TcpStream, String), LoadError> {
        let host = self.base.host_str().unwrap_or("127.0.0.1").to_string();
        let port = self.base.port_or_known_default().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| LoadError::io(format!("{host}:{port}"), e))?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, host))
    }

    async fn secure(
        &self,
        tcp: tokio::net::TcpStream,
        host: &str,
    ) -> Result<Box<dyn Transport>, LoadError> {
        Ok(match &self.tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name =
                    ServerName::try_from(host.to_string()).map_err(|_| LoadError::Config {
                        setting: "--url",
                        reason: format!("{host} is not a TLS server name"),
                    })?;
                let tls = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| LoadError::io(format!("TLS to {host}"), e))?;
                Box::new(tls)
            }
        })
    }

    /// Opens `/ws` with a bearer token.
    pub async fn websocket(&self, token: &Token) -> Result<Socket, LoadError> {
        let mut ws_url = self.base.clone();
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        ws_url
            .set_scheme(scheme)
            .map_err(|()| LoadError::Protocol("cannot make a ws:// address".into()))?;
        ws_url.set_path("/ws");
        let mut request = ws_url.as_str().into_client_request()?;
        let header = format!("Bearer {}", token.0)
            .parse()
            .map_err(|_| LoadError::Protocol("token not usable in a header".into()))?;
        request.headers_mut().insert("authorization", header);
        let (tcp, host) = self.connect().await?;
        let stream = self.secure(tcp, &host).await?;
        Ok(tokio_tungstenite::client_async(request, stream).await?.0)
    }
}

/// An HTTP client for plain `http://` servers (reqwest is built without a default crypto
/// provider, so it always gets a rustls configuration of ours).
pub(crate) fn plain_http_client() -> Result<reqwest::Client, LoadError> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls_config(&Trust::PlainOnly)?)
        .build()?)
}

fn tls_config(trust: &Trust) -> Result<ClientConfig, LoadError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadError::Protocol(format!("TLS set-up: {e}")))?;
    let mut config = match trust {
        Trust::Ca(path) => {
            let certificate =
                CertificateDer::from_pem_file(path).map_err(|e| LoadError::Config {
                    setting: "--ca",
                    reason: format!("{}: {e}", path.display()),
                })?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(certificate).map_err(|e| LoadError::Config {
                setting: "--ca",
                reason: format!("{}: {e}", path.display()),
            })?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::PlainOnly => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `--insecure`: any certificate, but handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_counters_are_read_from_the_prometheus_text() {
        let text = "# HELP x\ncloudhelp_relay_packets_received_total 12\ncloudhelp_relay_packets_forwarded_total 34\ncloudhelp_relay_bytes_forwarded_total 5.6e3\ncloudhelp_relay_layer_switches_total 3\ncloudhelp_relay_rooms 1\ncloudhelp_runtime_tasks 41\n";
        assert_eq!(
            parse_relay_counters(text),
            RelayCounters {
                packets_received: 12,
                packets_forwarded: 34,
                bytes_forwarded: 5600,
                layer_switches: 3,
                runtime_tasks: 41,
            }
        );
        assert_eq!(parse_relay_counters(""), RelayCounters::default());
    }
}
