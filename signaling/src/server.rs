//! Running the server: HTTPS (or loudly-announced plain HTTP behind a proxy), graceful shutdown on
//! SIGINT/SIGTERM, and a clean database close.

use std::net::SocketAddr;
use std::time::Duration;

use axum_server::Handle;
use std::sync::Arc;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};

use crate::connections::LimitAcceptor;

use crate::api::app;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::tls;

/// How long in-flight requests get to finish after a stop signal.
const GRACE: Duration = Duration::from_secs(10);

/// Installs the ring crypto provider for rustls once per process (webrtc uses ring as well).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Serves until SIGINT or SIGTERM; calls `on_listening` with the bound address and URL scheme.
pub async fn serve(
    state: AppState,
    on_listening: impl FnOnce(SocketAddr, &'static str) + Send + 'static,
) -> Result<()> {
    install_crypto_provider();
    let config = state.config.clone();
    // Bind the relay's UDP socket now: a taken port fails the start, not the first call.
    let udp = state
        .relay
        .bind()
        .await
        .map_err(|e| Error::Internal(format!("relay: {e}")))?;
    tracing::info!(?udp, "relay media on UDP (every call, one port)");
    let handle: Handle<SocketAddr> = Handle::new();
    tokio::spawn(stop_on_signal(handle.clone()));
    let scheme = if config.plain_http { "http" } else { "https" };
    {
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Some(addr) = handle.listening().await {
                on_listening(addr, scheme);
            }
        });
    }
    {
        // The WAL goes into the main file every second, off the requests' lock (db.rs).
        let db = state.db.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let db = db.clone();
                match tokio::task::spawn_blocking(move || db.checkpoint()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "checkpointing the database"),
                    Err(e) => tracing::warn!(error = %e, "checkpoint task"),
                }
            }
        });
    }
    {
        // Calls of decided cases close when their time after the decision is over.
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(10));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = crate::calls::close_expired(&state).await {
                    tracing::warn!(error = %e, "closing expired calls");
                }
                state.login_guard.forget_idle();
                let now = state.now();
                let older = now - i64::from(state.config.lockout_minutes) * 60_000;
                if let Err(e) = state
                    .db
                    .call(move |c| crate::accounts::forget_login_failures(c, older, now))
                    .await
                {
                    tracing::warn!(error = %e, "forgetting old failed logins");
                }
            }
        });
    }
    let service = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let header_timeout = Duration::from_secs(u64::from(config.request_header_seconds));
    let max_connections = config.max_connections as usize;
    let refused: Arc<dyn Fn() + Send + Sync> = {
        let metrics = state.metrics.clone();
        Arc::new(move || {
            metrics.connections_refused.inc();
        })
    };
    let served = if config.plain_http {
        if config.client_address_header.is_none() {
            tracing::warn!(
                "plain HTTP without client_address_header: behind a reverse proxy every client has the proxy's \
                 address, so login limits per address cannot tell clients apart; set it to the header the proxy writes"
            );
        }
        tracing::warn!(
            "PLAIN HTTP: serving without TLS. Only run this behind a reverse proxy that terminates TLS; \
             passwords and personal data would otherwise cross the network in clear"
        );
        let mut server = axum_server::bind(config.listen)
            .handle(handle)
            .first_request_timeout(header_timeout)
            .map(|plain| LimitAcceptor::new(plain, max_connections, refused));
        limit_slow_clients(&mut server, header_timeout);
        server.serve(service).await
    } else {
        let cert = tls::certificate(&config)?;
        if cert.self_signed {
            tracing::info!(cert = %cert.cert.display(), "using the self-signed certificate kept in the data folder");
        }
        let rustls = RustlsConfig::from_pem_file(&cert.cert, &cert.key)
            .await
            .map_err(|e| {
                Error::Internal(format!("TLS certificate {}: {e}", cert.cert.display()))
            })?;
        let tls = RustlsAcceptor::new(rustls).handshake_timeout(header_timeout);
        let mut server = axum_server::bind(config.listen)
            .handle(handle)
            .first_request_timeout(header_timeout)
            .acceptor(LimitAcceptor::new(tls, max_connections, refused));
        limit_slow_clients(&mut server, header_timeout);
        server.serve(service).await
    };
    served.map_err(|e| {
        Error::Internal(format!(
            "cannot serve on {}: {e} (change listen / --listen)",
            config.listen
        ))
    })?;
    state.db.close()?;
    tracing::info!("stopped; database closed");
    Ok(())
}

/// Bounds what a slow or idle client can hold: the time to send each request's headers (which is
/// also how long a kept-alive HTTP/1 connection may idle), and HTTP/2 pings that end dead peers.
fn limit_slow_clients<A>(
    server: &mut axum_server::Server<SocketAddr, A>,
    header_timeout: Duration,
) {
    let builder = server.http_builder();
    builder
        .http1()
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(100);
}

async fn stop_on_signal(handle: Handle<SocketAddr>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("stop signal: finishing requests");
    handle.graceful_shutdown(Some(GRACE));
}
