//! The physical limit: a raw UDP fan-out on the same machine, no SRTP and no WebRTC. One socket
//! reads; each packet is sent to N receivers in one `sendmmsg` call. A sender floods the relay
//! socket, so the figure is what one relay thread can move at most.

use std::io::{ErrorKind, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrIn, sendmmsg};
use serde::{Deserialize, Serialize};

use crate::LoadError;
use crate::procfs;

/// How the baseline runs.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    /// Receivers per packet.
    pub fanout: usize,
    /// Bytes per packet.
    pub payload: usize,
    /// Measuring time.
    pub duration: Duration,
    /// Pin the relay thread to this core.
    pub relay_core: Option<usize>,
}

/// What the baseline moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// Receivers per packet.
    pub fanout: usize,
    /// Bytes per packet.
    pub payload: usize,
    /// Seconds measured.
    pub seconds: f64,
    /// Packets per second the relay thread read.
    pub packets_in_per_s: f64,
    /// Packets per second it sent.
    pub packets_out_per_s: f64,
    /// Packets per second the receivers got.
    pub packets_received_per_s: f64,
    /// Cores' worth of CPU of the relay thread.
    pub relay_cpu_cores: f64,
    /// Sent packets per second per core of relay CPU.
    pub packets_out_per_relay_core: f64,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> LoadError + '_ {
    move |e| LoadError::io(what, e)
}

fn v4(addr: SocketAddr) -> Result<SockaddrIn, LoadError> {
    match addr {
        SocketAddr::V4(a) => Ok(SockaddrIn::from(a)),
        SocketAddr::V6(_) => Err(LoadError::Protocol(
            "the baseline runs on IPv4 loopback".into(),
        )),
    }
}

/// Runs the fan-out for `options.duration` and reports its rates.
pub fn run_baseline(options: &BaselineOptions) -> Result<BaselineResult, LoadError> {
    if options.fanout == 0 {
        return Err(LoadError::Config {
            setting: "--fanout",
            reason: "must be at least 1".into(),
        });
    }
    let relay = UdpSocket::bind("127.0.0.1:0").map_err(io("relay socket"))?;
    relay
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(io("relay socket"))?;
    let relay_addr = relay.local_addr().map_err(io("relay socket"))?;
    let mut receivers = Vec::new();
    let mut targets = Vec::new();
    for _ in 0..options.fanout {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("receiver socket"))?;
        socket
            .set_nonblocking(true)
            .map_err(io("receiver socket"))?;
        targets.push(Some(v4(socket
            .local_addr()
            .map_err(io("receiver socket"))?)?));
        receivers.push(socket);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));

    let receiver_thread = {
        let stop = stop.clone();
        let received = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for socket in &receivers {
                    while socket.recv(&mut buf).is_ok() {
                        received.fetch_add(1, Ordering::Relaxed);
                        any = true;
                    }
                }
                if !any {
                    // Spinning would take the core from the sender, which shares it.
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let sender_thread = {
        let stop = stop.clone();
        let payload = vec![0x80u8; options.payload];
        std::thread::spawn(move || -> Result<(), LoadError> {
            let socket = UdpSocket::bind("127.0.0.1:0").map_err(io("sender socket"))?;
            let target = [Some(v4(relay_addr)?); 32];
            let slices: Vec<[IoSlice<'_>; 1]> = (0..32).map(|_| [IoSlice::new(&payload)]).collect();
            while !stop.load(Ordering::Relaxed) {
                let mut headers = MultiHeaders::<SockaddrIn>::preallocate(32, None);
                // A full socket buffer only means the relay is saturated, which is the point.
                let _ = sendmmsg(
                    socket.as_raw_fd(),
                    &mut headers,
                    &slices,
                    target,
                    [],
                    MsgFlags::empty(),
                );
            }
            Ok(())
        })
    };
    let relay_thread = {
        let core = options.relay_core;
        let duration = options.duration;
        std::thread::spawn(move || -> Result<(u64, u64, f64, f64), LoadError> {
            if let Some(core) = core {
                let mut set = nix::sched::CpuSet::new();
                set.set(core).map_err(|e| LoadError::Config {
                    setting: "--relay-core",
                    reason: e.to_string(),
                })?;
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(
                    |e| LoadError::Config {
                        setting: "--relay-core",
                        reason: e.to_string(),
                    },
                )?;
            }
            let mut buf = vec![0u8; 2048];
            let (mut packets_in, mut packets_out) = (0u64, 0u64);
            // A second of warm-up, then the measured time.
            let warm_until = Instant::now() + Duration::from_secs(1);
            let mut start: Option<(Instant, procfs::ProcSample, u64, u64)> = None;
            loop {
                let now = Instant::now();
                if start.is_none() && now >= warm_until {
                    start = Some((
                        now,
                        procfs::read("/proc/thread-self")?,
                        packets_in,
                        packets_out,
                    ));
                }
                if let Some((t0, _, _, _)) = &start
                    && now.duration_since(*t0) >= duration
                {
                    break;
                }
                let n = match relay.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        continue;
                    }
                    Err(e) => return Err(LoadError::io("relay socket", e)),
                };
                packets_in += 1;
                let slices: Vec<[IoSlice<'_>; 1]> =
                    targets.iter().map(|_| [IoSlice::new(&buf[..n])]).collect();
                let mut headers = MultiHeaders::<SockaddrIn>::preallocate(targets.len(), None);
                if let Ok(sent) = sendmmsg(
                    relay.as_raw_fd(),
                    &mut headers,
                    &slices,
                    &targets,
                    [],
                    MsgFlags::empty(),
                ) {
                    packets_out += sent.count() as u64;
                }
            }
            let end = procfs::read("/proc/thread-self")?;
            let (t0, cpu0, in0, out0) =
                start.ok_or_else(|| LoadError::Timeout("baseline never started".into()))?;
            let wall = t0.elapsed().as_secs_f64();
            let cores = end.cpu.saturating_sub(cpu0.cpu).as_secs_f64() / wall;
            Ok((packets_in - in0, packets_out - out0, wall, cores))
        })
    };
    let received_at_start = {
        std::thread::sleep(Duration::from_secs(1));
        received.load(Ordering::Relaxed)
    };
    let relay_outcome = relay_thread.join();
    let received_total = received.load(Ordering::Relaxed) - received_at_start;
    stop.store(true, Ordering::Relaxed);
    let _ = receiver_thread.join();
    let _ = sender_thread.join();
    let (packets_in, packets_out, seconds, cores) = relay_outcome
        .map_err(|_| LoadError::Protocol("the baseline relay thread panicked".into()))??;
    let per_s = |n: u64| n as f64 / seconds.max(1e-9);
    Ok(BaselineResult {
        fanout: options.fanout,
        payload: options.payload,
        seconds,
        packets_in_per_s: per_s(packets_in),
        packets_out_per_s: per_s(packets_out),
        packets_received_per_s: per_s(received_total),
        relay_cpu_cores: cores,
        packets_out_per_relay_core: if cores > 0.0 {
            per_s(packets_out) / cores
        } else {
            0.0
        },
    })
}
