//! The scenarios and what each load means: which rooms, who is in them, who publishes what.
//! Pure: a plan is computed from the scenario and the load, and nothing else.

use serde::{Deserialize, Serialize};

use crate::LoadError;

/// The relay holds at most this many participants per room.
pub const ROOM_CAPACITY: u32 = 8;

/// What kind of call the load simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Many 3-party rooms (agent, approver, expert), everyone sending audio and video: the
    /// cloud-help case. Load: rooms.
    Consult,
    /// One room of N participants (2..=8), everyone sending audio and video. Load: participants.
    Meeting,
    /// One publisher to N subscribers. A room holds 8, so N subscribers are ⌈N/7⌉ rooms, each
    /// with one publisher (the agent) and up to 7 receive-only subscribers. Load: subscribers.
    Fanout,
    /// Consult's 3-party rooms with audio only. Load: rooms.
    AudioOnly,
}

impl Scenario {
    /// What one unit of load is.
    pub fn unit(self) -> &'static str {
        match self {
            Scenario::Consult | Scenario::AudioOnly => "rooms",
            Scenario::Meeting => "participants",
            Scenario::Fanout => "subscribers",
        }
    }

    /// The scenario's name on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Consult => "consult",
            Scenario::Meeting => "meeting",
            Scenario::Fanout => "fanout",
            Scenario::AudioOnly => "audio-only",
        }
    }

    /// The loads a ramp tries, smallest first, up to `max`.
    pub fn ramp(self, max: u32) -> Vec<u32> {
        let steps: Vec<u32> = match self {
            Scenario::Meeting => (2..=ROOM_CAPACITY).collect(),
            Scenario::Fanout => std::iter::successors(Some(7u32), |n| n.checked_mul(2)).collect(),
            Scenario::Consult | Scenario::AudioOnly => {
                std::iter::successors(Some(1u32), |n| n.checked_mul(2)).collect()
            }
        };
        steps.into_iter().take_while(|n| *n <= max).collect()
    }
}

/// Who takes a seat in a room: the case's agent, its approver, or the n-th invited expert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seat {
    /// The agent who opened the case.
    Agent,
    /// The approver who accepted it.
    Approver,
    /// The n-th expert (0-based) invited to it.
    Expert(usize),
}

/// One participant of a planned room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Whose account joins.
    pub seat: Seat,
    /// Publishes Opus.
    pub audio: bool,
    /// Publishes VP8.
    pub video: bool,
}

impl Member {
    fn sends(seat: Seat, audio: bool, video: bool) -> Self {
        Self { seat, audio, video }
    }

    fn tracks(&self) -> usize {
        usize::from(self.audio) + usize::from(self.video)
    }
}

/// One room (one case) of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPlan {
    /// Everyone in it.
    pub members: Vec<Member>,
}

impl RoomPlan {
    /// Experts the room needs invited.
    pub fn experts(&self) -> usize {
        self.members
            .iter()
            .filter(|m| matches!(m.seat, Seat::Expert(_)))
            .count()
    }

    /// Tracks member `index` should receive: everyone else's.
    pub fn expected_tracks(&self, index: usize) -> usize {
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, m)| m.tracks())
            .sum()
    }

    /// Streams the relay forwards in this room (one per track per receiver).
    pub fn forwarded_streams(&self) -> usize {
        (0..self.members.len())
            .map(|i| self.expected_tracks(i))
            .sum()
    }
}

/// The rooms a scenario needs at a load.
pub fn plan(scenario: Scenario, load: u32) -> Result<Vec<RoomPlan>, LoadError> {
    if load == 0 {
        return Err(LoadError::Config {
            setting: "--load",
            reason: "must be at least 1".into(),
        });
    }
    let three = |video: bool| RoomPlan {
        members: vec![
            Member::sends(Seat::Agent, true, video),
            Member::sends(Seat::Approver, true, video),
            Member::sends(Seat::Expert(0), true, video),
        ],
    };
    Ok(match scenario {
        Scenario::Consult => (0..load).map(|_| three(true)).collect(),
        Scenario::AudioOnly => (0..load).map(|_| three(false)).collect(),
        Scenario::Meeting => {
            if !(2..=ROOM_CAPACITY).contains(&load) {
                return Err(LoadError::Config {
                    setting: "--load",
                    reason: format!("a meeting has 2..={ROOM_CAPACITY} participants"),
                });
            }
            let mut members = vec![
                Member::sends(Seat::Agent, true, true),
                Member::sends(Seat::Approver, true, true),
            ];
            members
                .extend((0..load as usize - 2).map(|n| Member::sends(Seat::Expert(n), true, true)));
            vec![RoomPlan { members }]
        }
        Scenario::Fanout => {
            let per_room = ROOM_CAPACITY - 1;
            let mut left = load;
            let mut rooms = Vec::new();
            while left > 0 {
                let subscribers = left.min(per_room);
                left -= subscribers;
                let mut members = vec![
                    Member::sends(Seat::Agent, true, true),
                    Member::sends(Seat::Approver, false, false),
                ];
                members.extend(
                    (0..subscribers as usize - 1)
                        .map(|n| Member::sends(Seat::Expert(n), false, false)),
                );
                rooms.push(RoomPlan { members });
            }
            rooms
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_spreads_subscribers_over_rooms_of_one_publisher_and_seven_receivers() {
        let rooms = plan(Scenario::Fanout, 16).unwrap();
        assert_eq!(rooms.len(), 3);
        let receivers: Vec<usize> = rooms.iter().map(|r| r.members.len() - 1).collect();
        assert_eq!(receivers, [7, 7, 2]);
        assert_eq!(
            rooms[0].expected_tracks(0),
            0,
            "the publisher receives nothing"
        );
        assert_eq!(rooms[0].expected_tracks(3), 2);
        assert_eq!(
            rooms.iter().map(RoomPlan::forwarded_streams).sum::<usize>(),
            32
        );
    }

    #[test]
    fn consult_rooms_have_three_senders_and_meetings_stay_within_a_room() {
        let rooms = plan(Scenario::Consult, 2).unwrap();
        assert_eq!(rooms.len(), 2);
        assert_eq!(rooms[0].forwarded_streams(), 12);
        assert_eq!(rooms[0].experts(), 1);
        let audio = plan(Scenario::AudioOnly, 1).unwrap();
        assert_eq!(audio[0].forwarded_streams(), 6);
        assert_eq!(plan(Scenario::Meeting, 8).unwrap()[0].experts(), 6);
        assert!(plan(Scenario::Meeting, 9).is_err());
        assert!(plan(Scenario::Consult, 0).is_err());
        assert_eq!(Scenario::Meeting.ramp(5), [2, 3, 4, 5]);
        assert_eq!(Scenario::Fanout.ramp(60), [7, 14, 28, 56]);
    }
}
