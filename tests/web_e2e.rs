//! The web client in a real browser: runs `tests/e2e/run.mjs` and then `tests/e2e/field.mjs` (calls
//! over impaired links) with Node's test runner, playwright-core and headless system Chromium with
//! a fake camera, against this build's `cloudhelp` binary.
//! `scripts/test` installs what it needs (Chromium, a CJK font, `npm ci` in tests/e2e).

use std::path::Path;
use std::process::Command;

#[test]
fn the_web_client_passes_its_browser_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e2e = root.join("tests/e2e");
    assert!(
        e2e.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run scripts/test (it runs `npm ci` in tests/e2e)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run scripts/test (it installs Debian's chromium)"
    );
    let run = |file: &str| {
        let output = Command::new("node")
            .arg("--test-reporter=spec")
            .arg(e2e.join(file))
            .env("WEB_E2E_SERVER_BIN", env!("CARGO_BIN_EXE_cloudhelp"))
            .current_dir(&e2e)
            .output()
            .expect("node runs (install Node.js 20 or later)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.success(), report)
    };
    let artifacts = root.join("tests/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    // The pages and calls on loopback, then calls over impaired links (one after the other: the
    // field tests measure, and must not share the two cores with the others).
    for (file, report_name) in [
        ("run.mjs", "e2e-report.txt"),
        ("field.mjs", "field-report.txt"),
    ] {
        let (passed, report) = run(file);
        std::fs::write(artifacts.join(report_name), &report).unwrap();
        assert!(
            passed,
            "browser tests in {file} failed (screenshots in tests/artifacts):\n{report}"
        );
        // A run that tested nothing must not pass.
        assert!(
            report.contains("pass ") && !report.contains("pass 0"),
            "no browser test ran in {file}:\n{report}"
        );
    }
}
