//! HTTP API, WebSocket signaling, the case workflow, accounts and storage.
//!
//! `api::app(state)` is the whole application as a router; `server::serve` runs it over HTTPS.
//! The workflow (`workflow`) is pure; the modules around it load, apply and persist.

pub mod accounts;
pub mod annotations;
pub mod api;
pub mod audit;
pub mod backup;
pub mod blobs;
pub mod calls;
pub mod cases;
pub mod catalogue;
pub mod chat;
pub mod config;
pub mod connections;
pub mod db;
pub mod demo;
pub mod error;
pub mod invitations;
pub mod login_guard;
pub mod materials;
pub mod metrics;
pub mod personal;
pub mod protocol;
pub mod ratings;
pub mod recording;
pub mod sealing;
pub mod server;
pub mod signatures;
pub mod state;
pub mod stats;
pub mod tlog;
pub mod tls;
pub mod uploads;
pub mod workflow;
pub mod ws;

pub use api::app;
pub use config::Config;
pub use error::Error;
pub use state::AppState;
