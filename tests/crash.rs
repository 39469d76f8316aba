//! A seconds-long run of the crash trial (`cloudhelp-load crash`, docs/reliability.md) against
//! the real server binary: SIGKILL at seeded random moments during uploads, signed decisions and
//! log appends, restart on the same data folder, and nothing acknowledged is lost or half-written.

use std::time::Duration;

use cloudhelp_load::crash::{CrashOptions, crash_trials};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_uploads_decisions_and_log_appends_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let options = CrashOptions {
        binary: env!("CARGO_BIN_EXE_cloudhelp").into(),
        data: data.path().to_path_buf(),
        trials: 4,
        seed: 11,
        kill_after: (Duration::from_millis(600), Duration::from_millis(2000)),
    };
    let report = crash_trials(&options).await.unwrap();
    assert_eq!(report.failures, Vec::<String>::new(), "{report:#?}");
    assert_eq!(report.trials, 4);
    // The trial checked real work: uploads, key registrations and published checkpoints were
    // acknowledged before the kills, and every decision acknowledged has a verified archive.
    assert!(
        report.uploads > 0 && report.keys > 0 && report.checkpoints > 0,
        "{report:#?}"
    );
    assert!(report.archives_verified >= report.decisions, "{report:#?}");
}
