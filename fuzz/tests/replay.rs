//! Runs every file of every target's corpus (`corpus/<target>/`, the seeds and what fuzzing kept)
//! and regressions (`regressions/<target>/`, inputs that once failed) through the target, so that
//! each test run re-checks them without a fuzzer.

use std::path::Path;

#[test]
fn every_corpus_and_regression_file_passes_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, run) in cloudhelp_fuzz::TARGETS {
        let mut replayed = 0;
        for folder in ["corpus", "regressions"] {
            let dir = root.join(folder).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                run(&bytes);
                replayed += 1;
            }
        }
        assert!(replayed > 0, "{target} has no corpus to replay");
    }
}

#[test]
fn the_archive_seeds_verify_so_that_fuzzing_starts_past_every_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/archive");
    let archive = std::fs::read(root.join("sealed.zip")).unwrap();
    let report = esign::verify::verify(std::io::Cursor::new(&archive), cloudhelp_fuzz::trust());
    assert!(report.passed(), "{report}");
    let receipt = std::fs::read(root.join("receipt.json")).unwrap();
    let report = esign::verify::verify_receipt(&receipt, cloudhelp_fuzz::trust());
    assert!(report.passed(), "{report}");
}
