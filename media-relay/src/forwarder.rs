//! One task per published track: reads the publisher's RTP and writes it to each subscriber's own
//! local track, rewritten for that leg. Owns its subscriber list (no shared lock); the room
//! changes it through commands. Asks the publisher for keyframes through the rate limiter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use tokio::sync::mpsc;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};

use crate::keyframe::{KeyframeDecision, KeyframeRequestLimiter};
use crate::messages::{MediaKind, ParticipantId};
use crate::metrics::RelayMetrics;
use crate::recording::RecordingSink;
use crate::rewrite::DownstreamRewriter;
use crate::speaking::{SpeakingDetector, SpeakingPolicy};
use crate::vp8;

/// What the room tells a forwarder.
pub(crate) enum ForwardCommand {
    /// Start forwarding to a subscriber leg (its negotiation is complete).
    Subscribe {
        subscriber: ParticipantId,
        local: Arc<TrackLocalStaticRTP>,
        rewriter: DownstreamRewriter,
    },
    /// Stop forwarding to every leg of this subscriber.
    Unsubscribe { subscriber: ParticipantId },
    /// Someone (a subscriber's PLI/FIR) wants a keyframe.
    RequestKeyframe,
    /// Drop (or resume) the publisher's packets.
    SetMuted(bool),
    /// Start writing the track (`Some`), or stop, closing the file (`None`).
    Record(Option<RecordingSink>),
}

/// Reads the publisher's audio level (RFC 6464) and reports speaking changes.
pub(crate) struct AudioLevelTap {
    /// The header extension id the publisher negotiated for the audio level.
    pub(crate) extension_id: u8,
    /// Called with each change of the speaking state.
    pub(crate) report: Box<dyn Fn(bool) + Send>,
}

struct Leg {
    subscriber: ParticipantId,
    local: Arc<TrackLocalStaticRTP>,
    rewriter: DownstreamRewriter,
}

/// Runs until the publisher's track ends or the room drops the command sender.
pub(crate) async fn run_forwarder(
    track: Arc<dyn TrackRemote>,
    kind: MediaKind,
    mut commands: mpsc::UnboundedReceiver<ForwardCommand>,
    keyframe_interval: Duration,
    metrics: Arc<RelayMetrics>,
    audio_level: Option<AudioLevelTap>,
) {
    let video = kind == MediaKind::Video;
    let mut legs: Vec<Leg> = Vec::new();
    let mut limiter = KeyframeRequestLimiter::new(keyframe_interval);
    let mut speaking =
        audio_level.map(|tap| (tap, SpeakingDetector::new(SpeakingPolicy::default())));
    let mut media_ssrc: Option<u32> = None;
    let mut muted = false;
    let mut recording: Option<RecordingSink> = None;
    loop {
        let deadlines = [
            limiter.next_deadline(),
            speaking.as_ref().and_then(|(_, d)| d.next_deadline()),
        ];
        let deadline = deadlines
            .into_iter()
            .flatten()
            .min()
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { break };
                match command {
                    ForwardCommand::Subscribe { subscriber, local, rewriter } => {
                        legs.push(Leg { subscriber, local, rewriter });
                        if video {
                            request_keyframe(&track, &mut limiter, media_ssrc, &metrics).await;
                        }
                    }
                    ForwardCommand::Unsubscribe { subscriber } => {
                        legs.retain(|leg| leg.subscriber != subscriber);
                    }
                    ForwardCommand::RequestKeyframe => {
                        if video {
                            request_keyframe(&track, &mut limiter, media_ssrc, &metrics).await;
                        }
                    }
                    ForwardCommand::Record(sink) => {
                        let starts = sink.is_some();
                        recording = sink;
                        if starts && video {
                            // The file starts at a keyframe.
                            request_keyframe(&track, &mut limiter, media_ssrc, &metrics).await;
                        }
                    }
                    ForwardCommand::SetMuted(now_muted) => {
                        if now_muted && !muted {
                            for leg in &mut legs {
                                leg.rewriter.pause(video);
                            }
                        }
                        if !now_muted && muted && video {
                            request_keyframe(&track, &mut limiter, media_ssrc, &metrics).await;
                        }
                        muted = now_muted;
                    }
                }
            }
            event = track.poll() => {
                match event {
                    None | Some(TrackRemoteEvent::OnEnded) => break,
                    Some(TrackRemoteEvent::OnRtpPacket(packet)) => {
                        RelayMetrics::inc(&metrics.packets_received);
                        media_ssrc = Some(packet.header.ssrc);
                        if let Some((tap, detector)) = speaking.as_mut() {
                            // A muted participant is not speaking, whatever its microphone says.
                            let level = match packet.header.get_extension(tap.extension_id) {
                                Some(value) if !muted => value.first().map_or(127, |b| b & 0x7f),
                                _ => 127,
                            };
                            if let Some(change) = detector.on_level(Instant::now(), level) {
                                (tap.report)(change);
                            }
                        }
                        if muted {
                            continue;
                        }
                        if let Some(sink) = &recording {
                            sink.record(&packet);
                        }
                        let keyframe = video && vp8::is_keyframe_start(&packet.payload);
                        if keyframe {
                            limiter.keyframe_forwarded(Instant::now());
                        }
                        forward(&packet, keyframe, &mut legs, &metrics).await;
                    }
                    Some(_) => {}
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                let now = Instant::now();
                if limiter.poll(now) {
                    send_pli(&track, media_ssrc, &metrics).await;
                }
                if let Some((tap, detector)) = speaking.as_mut()
                    && let Some(change) = detector.poll(now)
                {
                    (tap.report)(change);
                }
            }
        }
    }
    tracing::debug!(legs = legs.len(), "forwarder stopped");
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn forward(packet: &rtp::Packet, keyframe: bool, legs: &mut [Leg], metrics: &RelayMetrics) {
    for leg in legs.iter_mut() {
        let Some(out) = leg.rewriter.rewrite(packet, keyframe) else {
            continue;
        };
        let bytes = out.payload.len() as u64;
        // write_rtp only fails once the subscriber's connection is gone; the room removes the leg.
        if let Err(err) = leg.local.write_rtp(out).await {
            tracing::debug!(subscriber = %leg.subscriber, %err, "forward failed");
            continue;
        }
        RelayMetrics::inc(&metrics.packets_forwarded);
        metrics
            .bytes_forwarded
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

async fn request_keyframe(
    track: &Arc<dyn TrackRemote>,
    limiter: &mut KeyframeRequestLimiter,
    media_ssrc: Option<u32>,
    metrics: &RelayMetrics,
) {
    if limiter.request(Instant::now()) == KeyframeDecision::SendNow {
        send_pli(track, media_ssrc, metrics).await;
    }
}

async fn send_pli(track: &Arc<dyn TrackRemote>, media_ssrc: Option<u32>, metrics: &RelayMetrics) {
    let media_ssrc = match media_ssrc {
        Some(ssrc) => ssrc,
        None => match track.ssrcs().await.first() {
            Some(ssrc) => *ssrc,
            None => return,
        },
    };
    let pli = PictureLossIndication {
        sender_ssrc: 0,
        media_ssrc,
    };
    match track.write_rtcp(vec![Box::new(pli)]).await {
        Ok(()) => RelayMetrics::inc(&metrics.plis_sent),
        Err(err) => tracing::debug!(%err, "PLI not sent"),
    }
}
