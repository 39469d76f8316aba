//! Starting `cloudhelp serve --demo` as a child process on an ephemeral port, for tests and
//! tools that need a real server process (its pid for `/proc`, real HTTPS).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::LoadError;

/// Starts `<binary> serve --demo --listen 127.0.0.1:0 --data-dir <data>` and waits for the line
/// that gives its address; returns the child and its base URL (`https://127.0.0.1:PORT`).
/// The caller owns the child: kill it when done.
pub fn start_demo_server(
    binary: &Path,
    data: &Path,
    stderr: Stdio,
) -> Result<(Child, String), LoadError> {
    start_demo_server_with(binary, data, stderr, &[])
}

/// As [`start_demo_server`], with settings as `CLOUDHELP_*` environment variables.
pub fn start_demo_server_with(
    binary: &Path,
    data: &Path,
    stderr: Stdio,
    settings: &[(&str, &str)],
) -> Result<(Child, String), LoadError> {
    let mut child = Command::new(binary)
        .args(["serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .envs(
            settings
                .iter()
                .map(|(name, value)| (format!("CLOUDHELP_{}", name.to_uppercase()), *value)),
        )
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .map_err(|e| LoadError::io(binary, e))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(LoadError::Protocol(
            "the server's stdout is not piped".into(),
        ));
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| LoadError::io(binary, e))?;
        if let Some(url) = line.strip_prefix("cloudhelp listening on ") {
            return Ok((child, url.to_string()));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(LoadError::Protocol(
        "the server ended without printing its address".into(),
    ))
}
