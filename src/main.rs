//! The `plenary` binary: parses flags, sets up logging, and runs the server or a tool
//! subcommand. Everything else lives in the library.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use plenary::config::{ConfigSource, DEFAULT_CONFIG_PATH};
use plenary::grant::{Claims, Permissions};
use plenary::membership::store::Store;
use plenary::Config;
use plenary_proto::{Role, TrackSource};

/// jemalloc: memory freed after sessions end goes back to the system (see `plenary::memory`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Plenary: a self-hosted WebRTC SFU for the general meetings of co-operatives.
///
/// Configuration comes from the TOML file given with --config or PLENARY_CONFIG (else
/// /etc/plenary/plenary.toml if it exists; see plenary.example.toml), then from PLENARY_<SECTION>_<KEY> environment variables (e.g. PLENARY_HTTP_ADDR,
/// PLENARY_MEDIA_ANNOUNCE_IPS='["203.0.113.7"]', PLENARY_AUTH_API_KEYS='{ mykey = "…" }'),
/// then from the flags below. With no configuration at all, Plenary runs in dev mode on
/// 127.0.0.1:8080 (HTTP) and UDP 127.0.0.1:7882 (media).
#[derive(Parser, Debug)]
#[command(name = "plenary", version, about, long_about)]
struct Cli {
    /// TOML configuration file (default: /etc/plenary/plenary.toml, if it exists). Give the
    /// tools (audit, keys) the same one as the server.
    #[arg(long, short, global = true, env = "PLENARY_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `plenary=debug`.
    #[arg(long, global = true, env = "PLENARY_LOG", default_value = "info")]
    log: String,
    #[command(flatten)]
    serve: ServeFlags,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Args, Debug, Default)]
struct ServeFlags {
    /// HTTP listen address (overrides http.addr).
    #[arg(long, global = true)]
    http_addr: Option<SocketAddr>,
    /// Media UDP address (overrides media.addr).
    #[arg(long, global = true)]
    media_addr: Option<SocketAddr>,
    /// IP announced in ICE candidates (repeatable; overrides media.announce_ips).
    #[arg(long = "announce-ip", global = true)]
    announce_ip: Vec<IpAddr>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server (the default).
    Serve,
    /// Mint a room grant with the first configured API key and print it.
    Token(TokenArgs),
    /// Validate the configuration and print it (secrets hidden).
    CheckConfig,
    /// Print recent entries of the audit log (sign-ins, refusals, grants, invitations,
    /// host actions, key rotations), newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Manage the Ed25519 keys that sign member and guest grants.
    Keys {
        #[command(subcommand)]
        action: KeysCmd,
    },
    /// Print the minutes of a room's meeting (attendance, speakers, motions and results) as
    /// Markdown, or as JSON.
    Minutes {
        /// The room.
        #[arg(long)]
        room: String,
        /// The day the meeting started, YYYY-MM-DD in UTC (default: the room's latest
        /// meeting). Every meeting of that day is printed.
        #[arg(long)]
        date: Option<String>,
        /// JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCmd {
    /// Add a new signing key; older keys keep verifying until their grants expired.
    Rotate,
    /// List the keys.
    List,
}

#[derive(Args, Debug)]
struct TokenArgs {
    /// The room.
    #[arg(long)]
    room: String,
    /// The participant's stable identity.
    #[arg(long)]
    identity: String,
    /// Display name (default: the identity).
    #[arg(long)]
    name: Option<String>,
    /// Role: host, member or guest.
    #[arg(long, default_value = "member", value_parser = parse_role)]
    role: Role,
    /// May publish (all sources unless --source is given).
    #[arg(long)]
    publish: bool,
    /// Restrict publishing to these sources (microphone, camera, screen, screen_audio).
    #[arg(long = "source", value_parser = parse_source)]
    sources: Vec<TrackSource>,
    /// May NOT receive others' media (default: may).
    #[arg(long)]
    no_subscribe: bool,
    /// May send data messages.
    #[arg(long)]
    data: bool,
    /// Has host powers.
    #[arg(long)]
    host: bool,
    /// Lifetime, e.g. 90s, 10m, 2h.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    ttl: Duration,
}

fn parse_role(s: &str) -> Result<Role, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("unknown role {s:?}: use host, member or guest"))
}

fn parse_source(s: &str) -> Result<TrackSource, String> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
        format!("unknown source {s:?}: use microphone, camera, screen or screen_audio")
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 90s, 10m, 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

/// The configuration, and which file it came from: the same for `serve` and every tool.
fn load_config(cli: &Cli) -> Result<(Config, ConfigSource), String> {
    let source = ConfigSource::locate(cli.config.as_deref(), Path::new(DEFAULT_CONFIG_PATH));
    let mut config = Config::load(source.path(), std::env::vars()).map_err(|e| e.to_string())?;
    if let Some(a) = cli.serve.http_addr {
        config.http.addr = a;
    }
    if let Some(a) = cli.serve.media_addr {
        config.media.addr = a;
    }
    if !cli.serve.announce_ip.is_empty() {
        config.media.announce_ips = cli.serve.announce_ip.clone();
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok((config, source))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let (config, source) = match load_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("plenary: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => {
            tracing::info!("configuration: {source}");
            serve(config)
        }
        Cmd::CheckConfig => {
            println!("{source}");
            println!("{config:#?}");
            println!("dev mode: {}", config.dev_mode());
            ExitCode::SUCCESS
        }
        Cmd::Token(args) => token(&config, args),
        Cmd::Audit { limit, json } => audit(&config, &source, limit, json),
        Cmd::Keys { action } => keys(&config, &source, action),
        Cmd::Minutes { room, date, json } => minutes(&config, &source, &room, date, json),
    }
}

/// Where `membership.database` came from, in words.
fn database_origin(source: &ConfigSource) -> String {
    if std::env::var_os("PLENARY_MEMBERSHIP_DATABASE").is_some() {
        return "from PLENARY_MEMBERSHIP_DATABASE".into();
    }
    match source.path() {
        Some(_) => format!("membership.database of {source}"),
        None => format!("the default membership.database; {source}"),
    }
}

/// The database the server with this configuration uses, for a tool. Says on stderr which
/// one it opens, or plainly why there is none (it never creates one).
fn open_store(config: &Config, source: &ConfigSource, tool: &str) -> Result<Store, ExitCode> {
    let configured = Path::new(&config.membership.database);
    let path = std::path::absolute(configured).unwrap_or_else(|_| configured.to_path_buf());
    let origin = database_origin(source);
    if !path.exists() {
        eprintln!(
            "plenary {tool}: no database at {} ({origin}). The server creates it when it \
             starts with sign-in configured (or meetings.always_record); give this command \
             the server's configuration \
             with --config FILE or PLENARY_CONFIG=FILE (read by default from \
             {DEFAULT_CONFIG_PATH}), or set PLENARY_MEMBERSHIP_DATABASE",
            path.display()
        );
        return Err(ExitCode::from(2));
    }
    eprintln!("plenary {tool}: database {} ({origin})", path.display());
    Store::open(&path).map_err(|e| {
        eprintln!("plenary {tool}: {}: {e}", path.display());
        ExitCode::FAILURE
    })
}

fn audit(config: &Config, source: &ConfigSource, limit: usize, json: bool) -> ExitCode {
    let store = match open_store(config, source, "audit") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let entries = match store.run_sync(|c| plenary::membership::store::recent_audit(c, limit)) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("plenary audit: {e}");
            return ExitCode::FAILURE;
        }
    };
    for e in entries {
        if json {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        } else {
            println!(
                "{:>6}  {}  {:<20} {:<28} {:<16} {}",
                e.id, e.at, e.kind, e.actor, e.room, e.detail
            );
        }
    }
    ExitCode::SUCCESS
}

fn minutes(
    config: &Config,
    source: &ConfigSource,
    room: &str,
    date: Option<String>,
    json: bool,
) -> ExitCode {
    use plenary::record::minutes;
    let store = match open_store(config, source, "minutes") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let all = match store.run_sync(|c| Ok(minutes::load(c, room, date.as_deref()))) {
        Ok(Ok(all)) => all,
        Ok(Err(e)) => {
            eprintln!("plenary minutes: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("plenary minutes: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let doc = serde_json::json!({ "room": room, "date": date, "meetings": all });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print!("{}", minutes::markdown(&all));
    }
    ExitCode::SUCCESS
}

fn keys(config: &Config, source: &ConfigSource, action: KeysCmd) -> ExitCode {
    use plenary::membership::{keys, keys_dir, store};
    let st = match open_store(config, source, "keys") {
        Ok(s) => s,
        Err(code) => return code,
    };
    match action {
        KeysCmd::Rotate => {
            let now = plenary::grant::unix_now() as i64;
            match keys::rotate(&st, &keys_dir(&config.membership), now) {
                Ok(kid) => {
                    println!("new signing key {kid}; older keys verify until their grants expire");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("plenary keys rotate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        KeysCmd::List => match st.run_sync(|c| store::signing_keys(c)) {
            Ok(rows) => {
                for r in rows {
                    let state = match r.retired_at {
                        None => "signing".to_string(),
                        Some(t) => format!("retired at {t}"),
                    };
                    println!(
                        "{}  created {}  {}  {}",
                        r.kid, r.created_at, state, r.private_key_file
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("plenary keys list: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn token(config: &Config, args: TokenArgs) -> ExitCode {
    let name = args.name.clone().unwrap_or_else(|| args.identity.clone());
    let permissions = Permissions {
        can_publish: args.publish || !args.sources.is_empty(),
        can_publish_sources: args.sources,
        can_subscribe: !args.no_subscribe,
        can_publish_data: args.data,
        is_host: args.host,
    };
    let claims = Claims::new(&args.room, &args.identity, &name, args.role, args.ttl)
        .with_permissions(permissions);
    match config.mint_grant(&claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "plenary token: {e} (configure [auth] api_keys, e.g. \
                 PLENARY_AUTH_API_KEYS='{{ mykey = \"a-secret-of-at-least-32-characters\" }}')"
            );
            ExitCode::from(2)
        }
    }
}

fn serve(config: Config) -> ExitCode {
    // However the drain and the close go, the process ends this long after the signal.
    let stop_limit =
        Duration::from_secs(config.limits.drain_secs + config.limits.shutdown_grace_secs)
            + Duration::from_secs(2);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("plenary: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async move {
        let server = match plenary::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("plenary: {e}");
                return ExitCode::FAILURE;
            }
        };
        if server.dev_mode() {
            eprintln!(
                "Plenary (dev mode) on http://{} — open it in a browser, type a name and a room.",
                server.http_addr()
            );
        }
        wait_for_signal().await;
        tracing::info!("shutting down (a second SIGTERM or Ctrl-C stops at once)");
        tokio::select! {
            done = tokio::time::timeout(stop_limit, server.shutdown()) => {
                if done.is_err() {
                    tracing::warn!("the shutdown took longer than {stop_limit:?}: stopping now");
                }
            }
            _ = wait_for_signal() => tracing::warn!("second signal: stopping now"),
        }
        ExitCode::SUCCESS
    });
    // Blocking work still running (a database call) gets a moment, not forever.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
