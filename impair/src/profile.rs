//! Profiles: how the two directions of a path change over time.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::link::Conditions;

/// A stretch of time with fixed conditions, from `at_s` seconds after the profile starts until
/// the next phase (the last one lasts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub at_s: f64,
    pub name: String,
    /// From the participant towards the relay.
    #[serde(default)]
    pub up: Conditions,
    /// From the relay towards the participant.
    #[serde(default)]
    pub down: Conditions,
    /// The participant's side of the path moves to a new address when the phase starts, as a
    /// phone's does when it changes networks.
    #[serde(default)]
    pub rebind: bool,
}

/// A named list of phases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub phases: Vec<Phase>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "no profile named {0:?} (named ones: {names}; or give a JSON file)",
        names = NAMES.join(", ")
    )]
    Unknown(String),
    #[error("profile JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("profile {profile:?}: {problem}")]
    Invalid { profile: String, problem: String },
}

/// The named profiles.
pub const NAMES: &[&str] = &[
    "clean",
    "weak-4g",
    "congested",
    "outage-10s",
    "step-down",
    "narrow-300k",
    "udp-blocked",
    "address-change",
];

fn phase(at_s: f64, name: &str, up: Conditions, down: Conditions) -> Phase {
    Phase {
        at_s,
        name: name.into(),
        up,
        down,
        rebind: false,
    }
}

/// A path of `kbps` with a queue of `queue_ms` and `delay_ms` one way, nothing lost.
fn rate(kbps: u64, queue_ms: u64, delay_ms: u64) -> Conditions {
    Conditions {
        rate_kbps: Some(kbps),
        queue_ms,
        delay_ms,
        ..Conditions::default()
    }
}

impl Profile {
    /// A named profile (docs/field-networks.md says what each stands for).
    pub fn named(name: &str) -> Result<Profile, ProfileError> {
        let clean = Conditions::default();
        let phases = match name {
            "clean" => vec![phase(0.0, "clean", clean, clean)],
            // A 4G link at the edge of a cell: 600 kbit/s up, 2 Mbit/s down, 80 ms round trip
            // with some jitter, 3 % of datagrams lost in short fades.
            "weak-4g" => {
                let fades = crate::link::Loss::Bursty {
                    mean: 0.03,
                    burst: 3.0,
                };
                let up = Conditions {
                    jitter_ms: 10,
                    loss: fades,
                    ..rate(600, 400, 40)
                };
                let down = Conditions {
                    jitter_ms: 10,
                    loss: fades,
                    ..rate(2000, 300, 40)
                };
                vec![phase(0.0, "weak-4g", up, down)]
            }
            // A shared line at its limit: 300 kbit/s both ways, 150 ms round trip, 10 % lost.
            "congested" => {
                let c = Conditions {
                    jitter_ms: 15,
                    loss: crate::link::Loss::Random(0.10),
                    ..rate(300, 500, 75)
                };
                vec![phase(0.0, "congested", c, c)]
            }
            // Ten seconds of nothing after ten of a clean path.
            "outage-10s" => vec![
                phase(0.0, "before", clean, clean),
                phase(10.0, "outage", Conditions::blocked(), Conditions::blocked()),
                phase(20.0, "after", clean, clean),
            ],
            // 2 Mbit/s, then 300 kbit/s for 20 s, then 2 Mbit/s again.
            "step-down" => vec![
                phase(0.0, "high", rate(2000, 300, 20), rate(2000, 300, 20)),
                phase(20.0, "low", rate(300, 300, 20), rate(300, 300, 20)),
                phase(40.0, "high-again", rate(2000, 300, 20), rate(2000, 300, 20)),
            ],
            // A narrow line, clean otherwise: 300 kbit/s both ways, 40 ms each way.
            "narrow-300k" => vec![phase(
                0.0,
                "narrow-300k",
                rate(300, 300, 40),
                rate(300, 300, 40),
            )],
            // A network that lets no UDP through.
            "udp-blocked" => vec![phase(
                0.0,
                "udp-blocked",
                Conditions::blocked(),
                Conditions::blocked(),
            )],
            // After ten seconds the participant's address changes (a phone moving from Wi-Fi to
            // 4G); nothing else.
            "address-change" => vec![
                phase(0.0, "before", clean, clean),
                Phase {
                    rebind: true,
                    ..phase(10.0, "moved", clean, clean)
                },
            ],
            other => return Err(ProfileError::Unknown(other.into())),
        };
        Ok(Profile {
            name: name.into(),
            phases,
        })
    }

    /// A profile from its JSON text (the shape `cloudhelp impair --print-profile` prints).
    pub fn from_json(text: &str) -> Result<Profile, ProfileError> {
        let profile: Profile = serde_json::from_str(text)?;
        profile.check()?;
        Ok(profile)
    }

    fn check(&self) -> Result<(), ProfileError> {
        let invalid = |problem: String| ProfileError::Invalid {
            profile: self.name.clone(),
            problem,
        };
        let first = self
            .phases
            .first()
            .ok_or_else(|| invalid("no phases".into()))?;
        if first.at_s != 0.0 {
            return Err(invalid(format!(
                "the first phase starts at {} s, not 0",
                first.at_s
            )));
        }
        for pair in self.phases.windows(2) {
            if pair[1].at_s.partial_cmp(&pair[0].at_s) != Some(std::cmp::Ordering::Greater) {
                return Err(invalid(format!(
                    "phase {:?} starts at {} s, not after {:?}",
                    pair[1].name, pair[1].at_s, pair[0].name
                )));
            }
        }
        for p in &self.phases {
            for (way, c) in [("up", &p.up), ("down", &p.down)] {
                c.check()
                    .map_err(|problem| invalid(format!("phase {:?} {way}: {problem}", p.name)))?;
            }
        }
        Ok(())
    }
}

/// Where a profile stands: which phase is on, and when the next one starts.
pub struct Timeline {
    profile: Profile,
    started: Instant,
    /// The index of the phase now on (none before the first `advance`).
    current: Option<usize>,
}

impl Timeline {
    pub fn new(profile: Profile, started: Instant) -> Self {
        Timeline {
            profile,
            started,
            current: None,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The phases that have started by `now` and not been returned before, in order (usually
    /// none or one).
    pub fn advance(&mut self, now: Instant) -> Vec<Phase> {
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        let from = self.current.map_or(0, |i| i + 1);
        let upto = self
            .profile
            .phases
            .iter()
            .rposition(|p| p.at_s <= elapsed)
            .map_or(0, |i| i + 1);
        if upto <= from {
            return Vec::new();
        }
        self.current = Some(upto - 1);
        self.profile.phases[from..upto].to_vec()
    }

    /// When the next phase starts, if one is still to come.
    pub fn next_change(&self) -> Option<Instant> {
        let next = self.current.map_or(0, |i| i + 1);
        let phase = self.profile.phases.get(next)?;
        Some(self.started + Duration::from_secs_f64(phase.at_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_profile_exists_and_is_valid() {
        for name in NAMES {
            let profile = Profile::named(name).expect(name);
            profile.check().expect(name);
            // And survives its JSON form, which operators copy and edit.
            let json = serde_json::to_string(&profile).unwrap();
            assert_eq!(Profile::from_json(&json).unwrap(), profile);
        }
        let err = Profile::named("dial-up").unwrap_err().to_string();
        assert!(err.contains("dial-up") && err.contains("weak-4g"), "{err}");
    }

    #[test]
    fn a_timeline_moves_through_its_phases_at_their_times() {
        let start = Instant::now();
        let mut t = Timeline::new(Profile::named("step-down").unwrap(), start);
        let names = |phases: Vec<Phase>| phases.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(t.advance(start)), ["high"]);
        assert_eq!(t.next_change(), Some(start + Duration::from_secs(20)));
        assert!(t.advance(start + Duration::from_secs(19)).is_empty());
        assert_eq!(names(t.advance(start + Duration::from_secs(20))), ["low"]);
        // A late look sees every phase it missed, in order.
        let mut late = Timeline::new(Profile::named("step-down").unwrap(), start);
        assert_eq!(
            names(late.advance(start + Duration::from_secs(41))),
            ["high", "low", "high-again"]
        );
        assert_eq!(late.next_change(), None);
    }

    #[test]
    fn a_profile_from_json_with_a_mistake_says_which() {
        let unsorted = r#"{"name":"x","phases":[
            {"at_s":0,"name":"a"},{"at_s":5,"name":"b"},{"at_s":3,"name":"c"}]}"#;
        let err = Profile::from_json(unsorted).unwrap_err().to_string();
        assert!(err.contains("\"c\"") && err.contains("3 s"), "{err}");
        let bad = r#"{"name":"x","phases":[{"at_s":0,"name":"a","up":{"rate_kbps":100}}]}"#;
        let err = Profile::from_json(bad).unwrap_err().to_string();
        assert!(
            err.contains("phase \"a\" up") && err.contains("queue_ms"),
            "{err}"
        );
        let unknown = r#"{"name":"x","phases":[{"at_s":0,"name":"a","up":{"rate":100}}]}"#;
        assert!(
            Profile::from_json(unknown)
                .unwrap_err()
                .to_string()
                .contains("rate")
        );
    }
}
