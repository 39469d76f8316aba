//! A member's state as explicit values with allowed transitions: whether its signaling is
//! attached, how far its negotiation is, whether its transport is up, and its grace period. An
//! invalid transition is a typed error (sent back to the peer as an error code), never a
//! silent drop.

use std::time::Instant;

use crate::messages::{ErrorCode, IceCandidate, LeaveReason};

/// Whether a member's signaling handle is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Messages go to the handle tagged `attachment`.
    Attached { attachment: u64 },
    /// The handle tagged `attachment` is gone (`since`, `reason`): messages are dropped until
    /// the member resumes, and its grace period runs.
    Detached {
        attachment: u64,
        since: Instant,
        reason: LeaveReason,
    },
}

impl Presence {
    /// The attachment id of the current (or last) handle.
    pub(crate) fn attachment(&self) -> u64 {
        match *self {
            Self::Attached { attachment } | Self::Detached { attachment, .. } => attachment,
        }
    }

    /// The attachment id messages go to now, if attached.
    pub(crate) fn attached(&self) -> Option<u64> {
        match *self {
            Self::Attached { attachment } => Some(attachment),
            Self::Detached { .. } => None,
        }
    }

    /// The handle `attachment` went away; a stale handle's news changes nothing.
    pub(crate) fn detach(&mut self, attachment: u64, now: Instant, reason: LeaveReason) -> bool {
        if self.attached() != Some(attachment) {
            return false;
        }
        *self = Self::Detached {
            attachment,
            since: now,
            reason,
        };
        true
    }
}

/// Where the offer/answer exchange with a member stands. The member's first offer opens its
/// connection; after that the relay is the offerer, and a member's offer is accepted only while
/// the relay has none outstanding (so there is no glare).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing negotiated yet; candidates that raced ahead of the offer wait here.
    AwaitingFirstOffer { early_candidates: Vec<IceCandidate> },
    /// Both sides agree; the relay may offer.
    Stable,
    /// The relay's offer waits for the member's answer.
    RelayOffered,
}

/// A member's negotiation: its stage, and whether the relay has changes (tracks added or
/// removed) still to offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiation {
    pub(crate) stage: Stage,
    pub(crate) pending: bool,
}

/// Candidates kept while waiting for the first offer; a peer sending more is misbehaving.
pub(crate) const MAX_EARLY_CANDIDATES: usize = 64;

/// A negotiation step the member may not take now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NegotiationError {
    #[error("answer the relay's offer first, then offer again")]
    OfferWhileRelayOffered,
    #[error("the relay has no offer outstanding")]
    AnswerWithoutOffer,
    #[error("too many candidates before the offer")]
    TooManyEarlyCandidates,
}

impl NegotiationError {
    /// The code the member is told.
    pub(crate) fn code(self) -> ErrorCode {
        match self {
            Self::OfferWhileRelayOffered => ErrorCode::NegotiationInProgress,
            Self::AnswerWithoutOffer => ErrorCode::UnexpectedAnswer,
            Self::TooManyEarlyCandidates => ErrorCode::CandidateBeforeOffer,
        }
    }
}

/// What to do with a member's ICE candidate.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CandidateUse {
    /// Kept until the first offer is applied.
    Kept,
    /// Hand it to the connection now.
    Apply(IceCandidate),
}

impl Negotiation {
    pub(crate) fn new() -> Self {
        Self {
            stage: Stage::AwaitingFirstOffer {
                early_candidates: Vec::new(),
            },
            pending: false,
        }
    }

    /// Whether the first offer/answer exchange is done.
    pub(crate) fn opened(&self) -> bool {
        !matches!(self.stage, Stage::AwaitingFirstOffer { .. })
    }

    /// Whether the relay waits for the member's answer.
    pub(crate) fn relay_offered(&self) -> bool {
        self.stage == Stage::RelayOffered
    }

    /// May the member offer now? (Checked before the offer is applied.)
    pub(crate) fn check_offer(&self) -> Result<(), NegotiationError> {
        match self.stage {
            Stage::RelayOffered => Err(NegotiationError::OfferWhileRelayOffered),
            _ => Ok(()),
        }
    }

    /// The member's offer was applied and answered: returns the candidates that waited for it
    /// and whether this was the first exchange.
    pub(crate) fn offer_answered(&mut self) -> (Vec<IceCandidate>, bool) {
        match std::mem::replace(&mut self.stage, Stage::Stable) {
            Stage::AwaitingFirstOffer { early_candidates } => (early_candidates, true),
            Stage::Stable => (Vec::new(), false),
            Stage::RelayOffered => unreachable!("check_offer refuses an offer now"),
        }
    }

    /// May the member answer now? (Checked before the answer is applied.)
    pub(crate) fn check_answer(&self) -> Result<(), NegotiationError> {
        match self.stage {
            Stage::RelayOffered => Ok(()),
            _ => Err(NegotiationError::AnswerWithoutOffer),
        }
    }

    /// The member's answer to the relay's offer was applied.
    pub(crate) fn answer_applied(&mut self) {
        if self.stage == Stage::RelayOffered {
            self.stage = Stage::Stable;
        }
    }

    /// A candidate from the member: kept before the first offer (up to a limit), applied after.
    pub(crate) fn candidate(
        &mut self,
        candidate: IceCandidate,
    ) -> Result<CandidateUse, NegotiationError> {
        match &mut self.stage {
            Stage::AwaitingFirstOffer { early_candidates } => {
                if early_candidates.len() >= MAX_EARLY_CANDIDATES {
                    return Err(NegotiationError::TooManyEarlyCandidates);
                }
                early_candidates.push(candidate);
                Ok(CandidateUse::Kept)
            }
            _ => Ok(CandidateUse::Apply(candidate)),
        }
    }

    /// The relay has changes to offer (a track to add or remove).
    pub(crate) fn change(&mut self) {
        self.pending = true;
    }

    /// Whether the relay should offer now: the connection is open, no offer is outstanding and
    /// something changed. Taking the turn moves to `RelayOffered`.
    pub(crate) fn take_offer_turn(&mut self) -> bool {
        if self.stage != Stage::Stable || !self.pending {
            return false;
        }
        self.stage = Stage::RelayOffered;
        self.pending = false;
        true
    }

    /// The relay's offer could not be made: back to stable, the changes still pending.
    pub(crate) fn offer_failed(&mut self) {
        if self.stage == Stage::RelayOffered {
            self.stage = Stage::Stable;
            self.pending = true;
        }
    }
}

/// Whether a member's media transport (ICE, DTLS, SRTP) is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Not yet connected: packets written now would be dropped.
    Connecting,
    Connected,
    /// Failed after being up; an ICE restart may still bring it back within the grace period.
    Failed {
        since: Instant,
    },
}

impl Transport {
    /// Whether it has been up at some time (so legs may be activated and a reconnect means the
    /// decoders on both sides may have lost sync).
    pub(crate) fn was_up(&self) -> bool {
        !matches!(self, Self::Connecting)
    }
}

/// A running grace period: the member is removed at `until` for `reason` unless it recovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grace {
    pub(crate) until: Instant,
    pub(crate) reason: LeaveReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(n: u32) -> IceCandidate {
        IceCandidate {
            candidate: format!("candidate:{n} 1 udp 1 10.0.0.1 {n} typ host"),
            sdp_mid: Some("0".into()),
            sdp_mline_index: Some(0),
        }
    }

    #[test]
    fn candidates_before_the_first_offer_wait_for_it_and_later_ones_apply_at_once() {
        let mut n = Negotiation::new();
        assert_eq!(n.candidate(candidate(1)), Ok(CandidateUse::Kept));
        assert_eq!(n.candidate(candidate(2)), Ok(CandidateUse::Kept));
        assert_eq!(n.check_offer(), Ok(()));
        let (early, first) = n.offer_answered();
        assert!(first);
        assert_eq!(early, vec![candidate(1), candidate(2)]);
        assert_eq!(
            n.candidate(candidate(3)),
            Ok(CandidateUse::Apply(candidate(3)))
        );
        let (early, first) = n.offer_answered();
        assert!(!first && early.is_empty());
    }

    #[test]
    fn too_many_early_candidates_are_refused_with_their_code() {
        let mut n = Negotiation::new();
        for i in 0..MAX_EARLY_CANDIDATES as u32 {
            assert_eq!(n.candidate(candidate(i)), Ok(CandidateUse::Kept));
        }
        let err = n.candidate(candidate(999)).unwrap_err();
        assert_eq!(err, NegotiationError::TooManyEarlyCandidates);
        assert_eq!(err.code(), ErrorCode::CandidateBeforeOffer);
    }

    #[test]
    fn the_relay_offers_only_when_stable_with_changes_and_refuses_a_member_offer_meanwhile() {
        let mut n = Negotiation::new();
        n.change();
        assert!(
            !n.take_offer_turn(),
            "no relay offer before the member's first"
        );
        n.offer_answered();
        assert!(n.take_offer_turn());
        assert!(n.relay_offered());
        // Glare is impossible: the member's offer is refused while the relay's is out.
        assert_eq!(
            n.check_offer(),
            Err(NegotiationError::OfferWhileRelayOffered)
        );
        assert_eq!(
            NegotiationError::OfferWhileRelayOffered.code(),
            ErrorCode::NegotiationInProgress
        );
        // A change meanwhile waits for the answer, then gets an offer of its own.
        n.change();
        assert!(!n.take_offer_turn());
        assert_eq!(n.check_answer(), Ok(()));
        n.answer_applied();
        assert!(n.take_offer_turn());
        n.answer_applied();
        assert!(!n.take_offer_turn(), "nothing left to offer");
    }

    #[test]
    fn an_answer_without_a_relay_offer_is_a_typed_error() {
        let mut n = Negotiation::new();
        assert_eq!(n.check_answer(), Err(NegotiationError::AnswerWithoutOffer));
        n.offer_answered();
        assert_eq!(n.check_answer(), Err(NegotiationError::AnswerWithoutOffer));
        assert_eq!(
            NegotiationError::AnswerWithoutOffer.code(),
            ErrorCode::UnexpectedAnswer
        );
    }

    #[test]
    fn a_failed_relay_offer_keeps_its_changes_pending() {
        let mut n = Negotiation::new();
        n.offer_answered();
        n.change();
        assert!(n.take_offer_turn());
        n.offer_failed();
        assert_eq!((n.stage.clone(), n.pending), (Stage::Stable, true));
        assert!(n.take_offer_turn());
    }

    #[test]
    fn only_the_current_handle_can_detach_a_member() {
        let now = Instant::now();
        let mut p = Presence::Attached { attachment: 2 };
        assert!(!p.detach(1, now, LeaveReason::Vanished), "a stale handle");
        assert_eq!(p.attached(), Some(2));
        assert!(p.detach(2, now, LeaveReason::Vanished));
        assert_eq!(p.attached(), None);
        assert_eq!(p.attachment(), 2);
        assert!(!p.detach(2, now, LeaveReason::Vanished), "already detached");
    }
}
