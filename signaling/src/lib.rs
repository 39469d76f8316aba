//! HTTP API, WebSocket signaling, case workflow, accounts and storage.
