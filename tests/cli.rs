//! The command line: admin commands without a browser, configuration layering and its errors,
//! plain-HTTP mode and JSON logs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

fn cloudhelp(data: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("CLOUDHELP_DATA_DIR")
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn admins_manage_departments_points_items_and_users_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ok = |args: &[&str]| {
        let out = cloudhelp(&data, args);
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        text(&out)
    };
    ok(&["department", "add", "--code", "huzheng", "--name", "户政"]);
    ok(&[
        "point",
        "add",
        "--code",
        "sp-1",
        "--name",
        "上浦镇代办点",
        "--kind",
        "village_point",
        "--township",
        "上浦镇",
    ]);
    ok(&[
        "item",
        "add",
        "--code",
        "id-loss",
        "--name",
        "居民身份证挂失",
        "--department",
        "huzheng",
        "--materials",
        "居民身份证号码;本人照片",
        "--simple",
    ]);
    let added = ok(&[
        "user",
        "add",
        "--username",
        "li",
        "--display-name",
        "李审批",
        "--role",
        "approver",
        "--department",
        "huzheng",
    ]);
    assert!(
        added.contains("password: "),
        "a generated password is printed once"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args([
            "user",
            "add",
            "--username",
            "wang",
            "--display-name",
            "王代办",
            "--role",
            "agent",
            "--point",
            "sp-1",
            "--password-stdin",
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-long-password\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("a-long-password"));

    ok(&["user", "disable", "wang"]);
    let list = ok(&["user", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("wang") && l.contains("disabled")),
        "{list}"
    );
    assert!(
        list.lines()
            .any(|l| l.starts_with("li") && l.contains("active")),
        "{list}"
    );

    for (args, needle) in [
        (
            &[
                "user",
                "add",
                "--username",
                "x",
                "--display-name",
                "x",
                "--role",
                "agent",
                "--point",
                "nowhere",
            ][..],
            "nowhere",
        ),
        (
            &[
                "user",
                "add",
                "--username",
                "y",
                "--display-name",
                "y",
                "--role",
                "pilot",
            ][..],
            "--role pilot",
        ),
        (
            &[
                "point",
                "add",
                "--code",
                "p2",
                "--name",
                "n",
                "--kind",
                "castle",
                "--township",
                "t",
            ][..],
            "--kind castle",
        ),
        (
            &["department", "add", "--code", "huzheng", "--name", "again"][..],
            "already exists",
        ),
    ] {
        let out = cloudhelp(&data, args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(text(&out).contains(needle), "{args:?}: {}", text(&out));
    }
}

#[test]
fn the_documented_log_level_variable_is_not_refused_as_an_unknown_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args(["user", "list", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("CLOUDHELP_LOG", "warn,signaling=debug")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn a_bad_setting_is_refused_at_start_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("CLOUDHELP_MAX_MATERIALS_PER_CASE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("max_materials_per_case"),
        "{}",
        text(&out)
    );

    let config = tmp.path().join("cloudhelp.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\ncolour = \"blue\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out).contains("colour"), "{}", text(&out));

    let out = cloudhelp(
        &data,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
        ],
    );
    assert!(text(&out).contains("tls_key"), "{}", text(&out));
}

#[test]
fn plain_http_mode_says_so_loudly_in_json_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloudhelp"))
        .args([
            "serve",
            "--plain-http",
            "--log-json",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let url = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("cloudhelp listening on ")
                .map(str::to_string)
        })
        .expect("listening line");
    assert!(url.starts_with("http://"));
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let warning = log
        .lines()
        .find(|l| l.contains("PLAIN HTTP"))
        .expect("the plain-HTTP warning");
    let parsed: serde_json::Value = serde_json::from_str(warning).expect("log lines are JSON");
    assert_eq!(parsed["level"], "WARN");
}
