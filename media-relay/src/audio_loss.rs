//! Opus in-band FEC for the subscribers' links, not only the publisher's.
//!
//! The relay answers Opus with `useinbandfec=1`, and a browser's Opus encoder adds forward error
//! correction (each packet carries a coarse copy of the one before) as far as the loss it is told
//! about calls for — the fraction lost in the receiver reports it gets, which the relay writes
//! about its own reception only. A publisher on a clean link therefore sends no FEC, and a
//! subscriber on a lossy one conceals every lost packet of that audio.
//!
//! [`AudioLossReport`] sits in each connection's write chain after the receiver-report
//! generator: in every report block about an audio stream the relay receives, it raises the
//! fraction lost to the worst a subscriber of that audio reports ([`DownstreamLoss`], set by the
//! room from the subscribers' receiver reports). The publisher's encoder then protects its audio
//! for the weakest listener; the cost is a little audio quality for everyone (FEC takes part of
//! the same bitrate), which is the right trade for speech on a call that must be understood.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use rtc::interceptor::{Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::reception_report::ReceptionReport;
use rtc::rtcp::sender_report::SenderReport;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// The worst fraction lost (RTCP's 0–255) that any subscriber reports for the audio a
/// connection publishes; shared between the room, which sets it, and the connection's
/// [`AudioLossReport`], which reports it.
#[derive(Debug, Clone, Default)]
pub(crate) struct DownstreamLoss(Arc<AtomicU8>);

impl DownstreamLoss {
    pub(crate) fn set(&self, fraction_lost: u8) {
        self.0.store(fraction_lost, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Raises the fraction lost of outgoing report blocks about audio to the subscribers' worst.
pub(crate) struct AudioLossReport {
    downstream: DownstreamLoss,
    audio: HashSet<u32>,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl AudioLossReport {
    pub(crate) fn new(downstream: DownstreamLoss) -> Self {
        AudioLossReport {
            downstream,
            audio: HashSet::new(),
            read_queue: VecDeque::new(),
            write_queue: VecDeque::new(),
        }
    }

    /// `reports` with the fraction lost about audio raised to at least `worst`; `None` when
    /// nothing changes.
    fn raised(&self, reports: &[ReceptionReport], worst: u8) -> Option<Vec<ReceptionReport>> {
        let raise = |r: &ReceptionReport| self.audio.contains(&r.ssrc) && r.fraction_lost < worst;
        if !reports.iter().any(raise) {
            return None;
        }
        Some(
            reports
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    if self.audio.contains(&r.ssrc) {
                        r.fraction_lost = r.fraction_lost.max(worst);
                    }
                    r
                })
                .collect(),
        )
    }

    fn rewrite(&self, packets: &mut [Box<dyn rtc::rtcp::Packet>]) {
        let worst = self.downstream.get();
        if worst == 0 || self.audio.is_empty() {
            return;
        }
        for packet in packets.iter_mut() {
            let any = packet.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                if let Some(reports) = self.raised(&rr.reports, worst) {
                    *packet = Box::new(ReceiverReport {
                        reports,
                        ..rr.clone()
                    });
                }
            } else if let Some(sr) = any.downcast_ref::<SenderReport>()
                && let Some(reports) = self.raised(&sr.reports, worst)
            {
                *packet = Box::new(SenderReport {
                    reports,
                    ..sr.clone()
                });
            }
        }
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for AudioLossReport {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &mut msg.message.packet {
            self.rewrite(packets);
        }
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }
}

impl Interceptor for AudioLossReport {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if info.mime_type.to_ascii_lowercase().starts_with("audio/") {
            self.audio.insert(info.ssrc);
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.audio.remove(&info.ssrc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(ssrc: u32, fraction_lost: u8) -> ReceptionReport {
        ReceptionReport {
            ssrc,
            fraction_lost,
            ..Default::default()
        }
    }

    fn report(blocks: Vec<ReceptionReport>) -> Vec<Box<dyn rtc::rtcp::Packet>> {
        vec![Box::new(ReceiverReport {
            ssrc: 1,
            reports: blocks,
            ..Default::default()
        })]
    }

    fn fractions(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Vec<(u32, u8)> {
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .expect("a receiver report");
        rr.reports
            .iter()
            .map(|r| (r.ssrc, r.fraction_lost))
            .collect()
    }

    #[test]
    fn audio_report_blocks_carry_the_worst_subscribers_loss_and_video_ones_are_left_alone() {
        let downstream = DownstreamLoss::default();
        let mut interceptor = AudioLossReport::new(downstream.clone());
        interceptor.audio.insert(10); // the publisher's Opus stream; 20 is its video
        let mut packets = report(vec![block(10, 3), block(20, 5)]);
        interceptor.rewrite(&mut packets);
        assert_eq!(
            fractions(&packets),
            [(10, 3), (20, 5)],
            "no subscriber loss: as measured"
        );
        downstream.set(26); // a subscriber loses ~10 %
        interceptor.rewrite(&mut packets);
        assert_eq!(fractions(&packets), [(10, 26), (20, 5)]);
        // The relay's own reception, when worse, stands.
        let mut worse = report(vec![block(10, 60)]);
        interceptor.rewrite(&mut worse);
        assert_eq!(fractions(&worse), [(10, 60)]);
    }
}
