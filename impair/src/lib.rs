//! An impairment proxy for UDP: what a village link does to a call, reproducibly, on loopback.
//!
//! This kernel has no netem, so delay, jitter and loss are made in user space: the proxy sits
//! between one participant and the relay (the participant is told the proxy's address for the
//! relay) and passes each datagram through a [`Link`] per direction. A link has a rate with a real
//! drop-tail queue, a propagation delay with jitter (order kept), random or bursty
//! (Gilbert–Elliott) loss, and can be blocked (an outage, or UDP blocked). A [`Profile`] is a list
//! of phases that change the two links over time; the named ones (`weak-4g`, `congested`,
//! `outage-10s`, `step-down`, `narrow-300k`, `udp-blocked`, `address-change`, `clean`) are what the tests and
//! docs/field-networks.md use, and any other can be given as JSON.
//!
//! The links and the timeline are sans-IO (`now` is passed in), so their behaviour is tested on
//! virtual time; [`proxy::run`] is the thin socket loop around them, used by `cloudhelp impair`.

pub mod link;
pub mod profile;
pub mod proxy;

pub use link::{Conditions, Link, LinkStats, Loss};
pub use profile::{Phase, Profile, ProfileError, Timeline};
