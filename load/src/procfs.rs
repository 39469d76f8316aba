//! CPU time and memory of a process (or thread) from `/proc`: parsing is pure, reading is thin.

use std::time::Duration;

use crate::LoadError;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every Linux ABI.
const TICKS_PER_SECOND: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time so far.
    pub cpu: Duration,
    /// Resident memory now, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory, in KiB.
    pub peak_rss_kib: u64,
    /// Open file descriptors (0 where `/proc/<pid>/fd` cannot be read).
    pub fds: u64,
    /// Threads.
    pub threads: u64,
}

/// User plus system CPU time from the text of `/proc/<pid>/stat` (fields 14 and 15, counted
/// after the parenthesised command name, which may hold spaces).
pub fn parse_cpu(stat: &str) -> Option<Duration> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis(
        (user + system) * 1000 / TICKS_PER_SECOND,
    ))
}

/// A number field of the text of `/proc/<pid>/status` (`VmRSS:` …), 0 when absent.
fn status_field(status: &str, name: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `(VmRSS, VmHWM)` in KiB from the text of `/proc/<pid>/status`.
pub fn parse_memory(status: &str) -> (u64, u64) {
    (
        status_field(status, "VmRSS:"),
        status_field(status, "VmHWM:"),
    )
}

/// Reads `/proc/<pid>` (`None`: this process; `Some("thread-self")`-style paths via `dir`).
pub fn read(dir: &str) -> Result<ProcSample, LoadError> {
    let stat_path = format!("{dir}/stat");
    let stat = std::fs::read_to_string(&stat_path).map_err(|e| LoadError::io(&stat_path, e))?;
    let cpu = parse_cpu(&stat)
        .ok_or_else(|| LoadError::Protocol(format!("{stat_path}: unreadable CPU times")))?;
    // Threads have no memory figures of their own; the process's are then used by callers.
    let status = std::fs::read_to_string(format!("{dir}/status")).unwrap_or_default();
    let (rss_kib, peak_rss_kib) = parse_memory(&status);
    let fds = std::fs::read_dir(format!("{dir}/fd")).map_or(0, |d| d.count() as u64);
    Ok(ProcSample {
        cpu,
        rss_kib,
        peak_rss_kib,
        fds,
        threads: status_field(&status, "Threads:"),
    })
}

/// The `/proc` folder of a process id, or of this process.
pub fn dir_of(pid: Option<u32>) -> String {
    pid.map_or_else(|| "/proc/self".to_string(), |p| format!("/proc/{p}"))
}

/// Cores' worth of CPU used between two readings `wall` apart.
pub fn cores_used(before: &ProcSample, after: &ProcSample, wall: Duration) -> f64 {
    if wall.is_zero() {
        return 0.0;
    }
    after.cpu.saturating_sub(before.cpu).as_secs_f64() / wall.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_a_command_name_with_spaces() {
        let stat =
            "4242 (tokio rt) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 100 1000 500";
        assert_eq!(parse_cpu(stat), Some(Duration::from_secs(3)));
        assert_eq!(parse_cpu("garbage"), None);
    }

    #[test]
    fn resident_and_peak_memory_are_read_in_kib() {
        let status = "Name:\tcloudhelp\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\n";
        assert_eq!(parse_memory(status), (10240, 20480));
        assert_eq!(parse_memory(""), (0, 0));
        let before = ProcSample::default();
        let after = ProcSample {
            cpu: Duration::from_millis(500),
            ..before
        };
        assert!((cores_used(&before, &after, Duration::from_secs(1)) - 0.5).abs() < 1e-9);
    }
}
