//! `cloudhelp`: the command line. Parses flags and configuration, builds the parts, runs them.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use signaling::accounts::{self, NewUser};
use signaling::catalogue::{self, PointKind};
use signaling::workflow::Role;
use signaling::{AppState, Config};

#[derive(Parser)]
#[command(
    name = "cloudhelp",
    version,
    about = "云帮办: remote video assistance for public-security government service"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Common {
    /// Configuration file (default: ./cloudhelp.toml when it exists).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data folder: database, blobs, keys, certificate [env: CLOUDHELP_DATA_DIR].
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the server.
    Serve(ServeArgs),
    /// Manages user accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages service points.
    #[command(subcommand)]
    Point(PointCommand),
    /// Manages departments.
    #[command(subcommand)]
    Department(DepartmentCommand),
    /// Manages the catalogue of service items.
    #[command(subcommand)]
    Item(ItemCommand),
    /// Verifies case archives or receipts offline against a pinned trust file; given several of one
    /// case (its decision and continuations, in any order), also checks that they link into one
    /// chain. Exits 0 only when every check passes.
    Verify {
        /// The archives (.zip) or receipts (.json).
        #[arg(required = true)]
        archives: Vec<PathBuf>,
        /// The trust file pinning the log's public key (from /api/log/trust, checked out of band).
        #[arg(long)]
        trust: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The transparency log: checkpoints and consistency between them.
    #[command(subcommand)]
    Log(LogCommand),
    /// An impairment proxy for trying calls over a bad link (docs/field-networks.md): tell a
    /// participant LISTEN instead of the relay's UDP address and its media goes through a rate
    /// limit with a queue, delay, jitter, loss and outages as the profile says. Prints one JSON
    /// event per line; reads commands from standard input: `profile NAME|FILE`, `rebind`,
    /// `stats`, `quit`.
    Impair {
        /// Where participants send.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// The relay's UDP address.
        #[arg(long, required_unless_present = "print_profile")]
        target: Option<SocketAddr>,
        /// A named profile (clean, weak-4g, congested, outage-10s, step-down, narrow-300k,
        /// udp-blocked, address-change) or a JSON file of one.
        #[arg(long, default_value = "clean")]
        profile: String,
        /// Seeds loss and jitter, so that a run can be repeated.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the profile as JSON (to copy and edit) and exit.
        #[arg(long)]
        print_profile: bool,
    },
    /// Copies the data folder (database, blobs, keys, trust file, certificate) consistently into a
    /// new folder, also while the server runs.
    Backup {
        /// The new folder for the backup.
        to: PathBuf,
    },
    /// Brings a backup back into a new, empty data folder (--data-dir), checking every file.
    Restore {
        /// The backup folder.
        from: PathBuf,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Prints the current signed checkpoint of the log in the data folder (servers publish it at /api/log/checkpoint).
    Checkpoint,
    /// Proves that the log at checkpoint NEW extends the log at checkpoint OLD (both signed notes).
    Consistency {
        /// The earlier checkpoint (signed note file).
        old: PathBuf,
        /// The later checkpoint (signed note file).
        new: PathBuf,
        /// The trust file pinning the log's public key.
        #[arg(long)]
        trust: PathBuf,
        /// The proof as served by /api/log/consistency?old=OLD_SIZE&new=NEW_SIZE (JSON).
        #[arg(long)]
        proof: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// A real TLS certificate chain (PEM).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP: only behind a reverse proxy that terminates TLS.
    #[arg(long)]
    plain_http: bool,
    /// Seed demo departments, points, items and one user of each role, and print their logins.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Adds a user. The password is read from stdin with --password-stdin, else one is generated and printed.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        display_name: String,
        /// agent, approver, expert, supervisor, auditor or admin.
        #[arg(long)]
        role: String,
        /// Service point code (agents).
        #[arg(long)]
        point: Option<String>,
        /// Department code (approvers and experts).
        #[arg(long)]
        department: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Lists users.
    List,
    /// Disables a user and ends its sessions.
    Disable { username: String },
}

#[derive(Subcommand)]
enum PointCommand {
    /// Adds a service point.
    Add {
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// service_hall, police_station, village_point or backpack.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        township: String,
    },
}

#[derive(Subcommand)]
enum DepartmentCommand {
    /// Adds a department.
    Add {
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum ItemCommand {
    /// Adds a service item (事项).
    Add {
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// The deciding department's code.
        #[arg(long)]
        department: String,
        /// Required materials, separated by ';'.
        #[arg(long, default_value = "")]
        materials: String,
        /// A simple item with the 10-minute target.
        #[arg(long)]
        simple: bool,
    },
}

/// Defaults, then the file, then CLOUDHELP_* variables, then flags.
fn load_config(common: &Common, serve: Option<&ServeArgs>) -> Result<Config> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    match &common.config {
        Some(path) if !path.is_file() => bail!("--config {}: no such file", path.display()),
        Some(path) => figment = figment.merge(Toml::file(path)),
        None => figment = figment.merge(Toml::file("cloudhelp.toml")),
    }
    // CLOUDHELP_LOG is the log filter (read by `init_logging`), not a setting.
    figment = figment.merge(Env::prefixed("CLOUDHELP_").ignore(&["log"]));
    let mut flags = serde_json::Map::new();
    if let Some(d) = &common.data_dir {
        flags.insert("data_dir".into(), d.display().to_string().into());
    }
    if common.log_json {
        flags.insert("log_json".into(), true.into());
    }
    if let Some(s) = serve {
        if let Some(l) = s.listen {
            flags.insert("listen".into(), l.to_string().into());
        }
        if let Some(c) = &s.tls_cert {
            flags.insert("tls_cert".into(), c.display().to_string().into());
        }
        if let Some(k) = &s.tls_key {
            flags.insert("tls_key".into(), k.display().to_string().into());
        }
        if s.plain_http {
            flags.insert("plain_http".into(), true.into());
        }
    }
    let config: Config = figment
        .merge(Serialized::defaults(serde_json::Value::Object(flags)))
        .extract()
        .context("configuration (cloudhelp.toml, CLOUDHELP_* variables or flags)")?;
    config
        .validate()
        .map_err(anyhow::Error::msg)
        .context("configuration")?;
    Ok(config)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLOUDHELP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn now_ms() -> i64 {
    use signaling::config::Clock;
    signaling::config::SystemClock.now_ms()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Offline commands: no configuration, no data folder, no network.
    match &cli.command {
        Command::Verify {
            archives,
            trust,
            json,
        } => std::process::exit(verify(archives, trust, *json)?),
        Command::Log(LogCommand::Consistency {
            old,
            new,
            trust,
            proof,
        }) => return consistency(old, new, trust, proof),
        Command::Impair {
            listen,
            target,
            profile,
            seed,
            print_profile,
        } => return impair(*listen, *target, profile, *seed, *print_profile),
        _ => {}
    }
    let serve_args = match &cli.command {
        Command::Serve(args) => Some(args),
        _ => None,
    };
    let config = load_config(&cli.common, serve_args)?;
    init_logging(config.log_json);
    match cli.command {
        Command::Serve(args) => serve(config, args.demo),
        Command::User(cmd) => user(config, cmd),
        Command::Point(PointCommand::Add {
            code,
            name,
            kind,
            township,
        }) => {
            let kind = PointKind::parse(&kind).with_context(|| {
                format!(
                    "--kind {kind}: use service_hall, police_station, village_point or backpack"
                )
            })?;
            let state = AppState::open(config)?;
            state
                .db
                .call_blocking(|c| catalogue::add_point(c, &code, &name, kind, &township))?;
            println!("added service point {code}");
            Ok(())
        }
        Command::Department(DepartmentCommand::Add { code, name }) => {
            let state = AppState::open(config)?;
            state
                .db
                .call_blocking(|c| catalogue::add_department(c, &code, &name))?;
            println!("added department {code}");
            Ok(())
        }
        Command::Backup { to } => {
            let manifest = signaling::backup::backup(&config.data_dir, &to, now_ms())?;
            println!(
                "backed up {} files of {} into {}",
                manifest.files.len(),
                config.data_dir.display(),
                to.display()
            );
            Ok(())
        }
        Command::Restore { from } => {
            let manifest = signaling::backup::restore(&from, &config.data_dir)?;
            println!(
                "restored {} files into {}; start the server on it with --data-dir",
                manifest.files.len(),
                config.data_dir.display()
            );
            Ok(())
        }
        Command::Log(LogCommand::Checkpoint) => {
            let state = AppState::open(config)?;
            let key = state.log_key.clone();
            let signed = state
                .db
                .call_blocking(|c| signaling::tlog::checkpoint(c, &key))?;
            print!("{}", signed.note);
            Ok(())
        }
        Command::Verify { .. }
        | Command::Log(LogCommand::Consistency { .. })
        | Command::Impair { .. } => {
            unreachable!("handled before configuration is loaded")
        }
        Command::Item(ItemCommand::Add {
            code,
            name,
            department,
            materials,
            simple,
        }) => {
            let materials: Vec<String> = materials
                .split(';')
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            let state = AppState::open(config)?;
            state.db.call_blocking(|c| {
                catalogue::add_item(c, &code, &name, &department, &materials, simple)
            })?;
            println!("added service item {code}");
            Ok(())
        }
    }
}

fn verify(archives: &[PathBuf], trust: &std::path::Path, json: bool) -> Result<i32> {
    use esign::verify::{Receipt, printable, verify_chain, verify_file};
    let trust = esign::verify::Trust::load(trust)
        .with_context(|| format!("--trust {}", trust.display()))?;
    let reports: Vec<_> = archives.iter().map(|a| verify_file(a, &trust)).collect();
    // Several files: each is verified alone, then their statements must form one case's chain.
    let chain = (archives.len() > 1).then(|| {
        let receipts: Result<Vec<_>, _> = archives
            .iter()
            .map(|a| {
                Receipt::from_file(a).map(|r| (a.display().to_string(), r.to_json().into_bytes()))
            })
            .collect();
        match receipts {
            Ok(receipts) => verify_chain(&receipts, &trust),
            Err(e) => esign::verify::Check {
                name: "chain.files".into(),
                passed: false,
                detail: e.to_string(),
            },
        }
    });
    let valid = reports.iter().all(|r| r.passed()) && chain.as_ref().is_none_or(|c| c.passed);
    match (json, &chain) {
        (true, None) => println!("{}", reports[0].to_json()),
        (true, Some(chain)) => {
            let files: Vec<_> = archives
                .iter()
                .zip(&reports)
                .map(|(a, r)| serde_json::json!({ "file": a.display().to_string(), "valid": r.passed(), "checks": r.checks }))
                .collect();
            let value = serde_json::json!({ "valid": valid, "files": files, "chain": chain });
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        (false, None) => println!("{}", reports[0]),
        (false, Some(chain)) => {
            for (a, r) in archives.iter().zip(&reports) {
                println!("{}\n{r}", printable(&a.display().to_string()));
            }
            let mark = if chain.passed { "PASS" } else { "FAIL" };
            println!("{mark}  {:<34} {}", chain.name, printable(&chain.detail));
            println!("{}", if valid { "VALID" } else { "INVALID" });
        }
    }
    Ok(if valid { 0 } else { 1 })
}

/// A profile by name, or from a JSON file.
fn impair_profile(name_or_file: &str) -> Result<cloudhelp_impair::Profile> {
    match cloudhelp_impair::Profile::named(name_or_file) {
        Ok(profile) => Ok(profile),
        Err(unknown) if !std::path::Path::new(name_or_file).is_file() => Err(unknown.into()),
        Err(_) => {
            let text = std::fs::read_to_string(name_or_file)
                .with_context(|| format!("reading profile {name_or_file}"))?;
            Ok(cloudhelp_impair::Profile::from_json(&text)
                .with_context(|| format!("profile file {name_or_file}"))?)
        }
    }
}

fn impair(
    listen: SocketAddr,
    target: Option<SocketAddr>,
    profile: &str,
    seed: u64,
    print_profile: bool,
) -> Result<()> {
    use cloudhelp_impair::proxy::{self, Control};
    use tokio::io::AsyncBufReadExt;
    let profile = impair_profile(profile)?;
    if print_profile {
        println!("{}", serde_json::to_string_pretty(&profile)?);
        return Ok(());
    }
    let target = target.context("--target: the relay's UDP address")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let options = proxy::Options {
            listen,
            target,
            profile,
            seed,
        };
        let running = tokio::spawn(proxy::run(options, control_rx, events_tx));
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut words = line.split_whitespace();
                let command = match (words.next(), words.next()) {
                    (Some("profile"), Some(name)) => match impair_profile(name) {
                        Ok(profile) => Control::Profile(profile),
                        Err(err) => {
                            eprintln!("{err:#}");
                            continue;
                        }
                    },
                    (Some("rebind"), None) => Control::Rebind,
                    (Some("stats"), None) => Control::Stats,
                    (Some("quit"), None) => Control::Quit,
                    (None, _) => continue,
                    _ => {
                        eprintln!(
                            "unknown command {line:?}: use profile NAME|FILE, rebind, stats or quit"
                        );
                        continue;
                    }
                };
                if control.send(command).is_err() {
                    return;
                }
            }
        });
        while let Some(event) = events.recv().await {
            println!("{}", serde_json::to_string(&event)?);
        }
        running.await??;
        Ok(())
    })
}

fn consistency(
    old: &std::path::Path,
    new: &std::path::Path,
    trust: &std::path::Path,
    proof: &std::path::Path,
) -> Result<()> {
    let trust = esign::verify::Trust::load(trust)
        .with_context(|| format!("--trust {}", trust.display()))?;
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let proof: signaling::api::esign::ConsistencyProof = serde_json::from_slice(&read(proof)?)
        .context("--proof: expected the JSON of /api/log/consistency")?;
    let hashes = signaling::api::esign::decode_proof(&proof)?;
    let (old, new) = esign::log::verify_checkpoint_consistency(
        &read(old)?,
        &read(new)?,
        &hashes,
        trust.log_keys(),
    )
    .context("the newer checkpoint does NOT provably extend the older one")?;
    println!(
        "consistent: the log at size {} extends the log at size {} (origin {})",
        new.size, old.size, new.origin
    );
    Ok(())
}

fn serve(config: Config, demo: bool) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let state = AppState::open(config.clone())?;
    if demo {
        let seeded = state
            .db
            .call_blocking(|c| signaling::demo::seed(c, now_ms()))?;
        println!(
            "{}",
            if seeded {
                "demo data seeded. Demo logins:"
            } else {
                "demo data already present. Demo logins:"
            }
        );
        for login in signaling::demo::DEMO_LOGINS {
            println!(
                "  {:<10} {:<11} password {:<22} {}",
                login.role.as_str(),
                login.username,
                login.password,
                login.note
            );
        }
        println!("  (demo passwords are public: never use --demo with real data)");
    }
    println!("data folder: {}", config.data_dir.display());
    runtime.block_on(signaling::server::serve(state, |addr, scheme| {
        use std::io::Write;
        println!("cloudhelp listening on {scheme}://{addr}");
        let _ = std::io::stdout().flush();
    }))?;
    Ok(())
}

fn user(config: Config, cmd: UserCommand) -> Result<()> {
    let state = AppState::open(config)?;
    match cmd {
        UserCommand::Add {
            username,
            display_name,
            role,
            point,
            department,
            password_stdin,
        } => {
            let role = Role::parse(&role).with_context(|| {
                format!("--role {role}: use agent, approver, expert, supervisor, auditor or admin")
            })?;
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_to_string(&mut line)
                    .context("reading the password from stdin")?;
                (line.lines().next().unwrap_or("").to_string(), false)
            } else {
                (accounts::random_token()?.chars().take(16).collect(), true)
            };
            let new = NewUser {
                username,
                display_name,
                role,
                point_code: point,
                department_code: department,
                password: password.clone(),
            };
            let user = state
                .db
                .call_blocking(|c| accounts::add_user(c, &new, now_ms()))?;
            println!("added {} ({})", user.username, user.role.as_str());
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List => {
            for u in state.db.call_blocking(|c| accounts::list_users(c))? {
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<16} {:<10} {:<8} {}",
                    u.username,
                    u.role.as_str(),
                    status,
                    u.display_name
                );
            }
        }
        UserCommand::Disable { username } => {
            let user = state
                .db
                .call_blocking(|c| accounts::disable_user(c, &username))?;
            println!("disabled {}", user.username);
        }
    }
    Ok(())
}
