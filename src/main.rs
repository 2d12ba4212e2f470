//! The `gateway` binary: command line, runtime, signals.
//!
//! Go-style options are accepted as written in INFINI Gateway's and GOST's docs
//! (`gateway -config gateway.yml`, `-test`, `-version`) as well as the usual
//! `--config`. A single-dash word is rewritten to its double-dash form before
//! clap sees it, so both spellings share one definition.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use gateway::api::ApiConfig;
use gateway::config::Loaded;
use gateway::daemon::{self, Source};
use gateway::net::Interfaces;

/// Exit codes, documented in docs/operations.md.
const EXIT_CONFIG: u8 = 1;
/// `gateway import`: the translation was printed but is incomplete.
const EXIT_IMPORT_INCOMPLETE: u8 = 5;
const EXIT_PRIVILEGES: u8 = 3;
const EXIT_RUNTIME: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "High-availability gateway: floating IP failover, proxy and load balancing",
    after_help = gateway::cli::HELP_EXAMPLES
)]
struct Cli {
    /// Configuration file.
    #[arg(short = 'c', long = "config", default_value = "gateway.yml")]
    config: PathBuf,
    /// Check the configuration and exit (0: valid, 1: invalid), like `nginx -t`.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// On stop, how long in-flight connections may finish (seconds); a master
    /// with a secret hands its VIP connections to the peer and serves them as long
    /// (docs/operations.md, "Planned switchover").
    #[arg(long = "grace", default_value_t = 10)]
    grace: u64,
    /// The Web API, GOST's form: `[user:pass@]addr[?pathPrefix=/api]`; overrides `api:`.
    #[arg(long = "api", value_parser = ApiConfig::from_flag)]
    api: Option<ApiConfig>,
    /// GOST's `-metrics "user:pass@127.0.0.1:9000?path=/metrics"`: serve Prometheus
    /// metrics there (replaces the file's `metrics:` section).
    #[arg(long = "metrics", value_parser = gateway::config::metrics::MetricsConfig::from_flag)]
    metrics: Option<gateway::config::metrics::MetricsConfig>,
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG overrides it.
    #[arg(long = "log-level", default_value = "info")]
    log_level: String,
    /// GOST: a service from a URL, repeatable: -L http://:8080, -L tcp://:80/10.0.0.5:80
    /// (see docs/command-line.md). With -config, added to the file's services.
    #[arg(short = 'L', value_name = "URL")]
    listen: Vec<String>,
    /// GOST: a hop of the default chain of every -L service, repeatable, in order:
    /// -F http://10.0.0.1:3128 (?ignoreChain=true on a -L opts out).
    #[arg(short = 'F', value_name = "URL")]
    forward: Vec<String>,
    /// Print the configuration the command line means as gateway.yml and exit: -O yaml, -O json.
    #[arg(short = 'O', value_name = "FORMAT")]
    output: Option<gateway::cli::output::Format>,
    /// Whether -config was given (not its default): with -L alone no file is read.
    #[arg(skip)]
    config_given: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Translate another balancer's config to gateway.yml (printed on stdout).
    #[command(subcommand)]
    Import(ImportFrom),
}

#[derive(Debug, clap::Subcommand)]
enum ImportFrom {
    /// A gobetween TOML file. Options that cannot be carried over are listed on
    /// stderr with their line; exit code 0: complete, 5: incomplete, 1: unreadable.
    Gobetween { file: PathBuf },
}

/// `gateway import gobetween FILE`.
fn import_gobetween(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gateway: {}: cannot read: {e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let t = match gateway::import::gobetween::translate(&text, &file.display().to_string()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("gateway: {}:{e}", file.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    print!("{}", t.yaml);
    for n in &t.notes {
        eprintln!("gateway: {}: note: {n}", file.display());
    }
    for u in &t.unmapped {
        eprintln!("gateway: {}: not translated: {u}", file.display());
    }
    if t.complete() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "gateway: {}: translation incomplete ({} option(s) above)",
            file.display(),
            t.unmapped.len()
        );
        ExitCode::from(EXIT_IMPORT_INCOMPLETE)
    }
}

/// `-config` → `--config`, `-config=x` → `--config=x`; `-c`, `--x` and values are kept.
fn go_style_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let single_dash_word = i > 0
                && a.starts_with('-')
                && !a.starts_with("--")
                && a.len() > 2
                && a[1..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic());
            if single_dash_word { format!("-{a}") } else { a }
        })
        .collect()
}

impl Cli {
    /// `-config`'s file, unless -L/-F stand alone.
    fn config_file(&self) -> Option<&std::path::Path> {
        (self.config_given || (self.listen.is_empty() && self.forward.is_empty()))
            .then_some(self.config.as_path())
    }

    fn flags(&self) -> gateway::cli::Flags {
        gateway::cli::Flags {
            listen: self.listen.clone(),
            forward: self.forward.clone(),
        }
    }

    /// What the configuration comes from, for messages.
    fn source(&self) -> String {
        match self.config_file() {
            Some(f) => f.display().to_string(),
            None => "the command line".into(),
        }
    }
}

fn main() -> ExitCode {
    let args = go_style_args(std::env::args());
    // `--`: one child process per group, this one supervises (src/cli/groups.rs).
    if let Some(groups) = gateway::cli::groups::split(&args) {
        return run_groups(groups);
    }
    let cli = parse_cli(&args);
    init_logging(&cli.log_level);

    if let Some(Command::Import(ImportFrom::Gobetween { file })) = &cli.command {
        return import_gobetween(file);
    }

    let ifs = match Interfaces::current() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("gateway: cannot list network interfaces: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let source = match Source::load(cli.config_file(), &cli.flags(), &ifs) {
        Ok(l) => l,
        Err(e) => {
            // A gobetween file gets a pointer to the importer, not YAML's confusion.
            let text = std::fs::read_to_string(&cli.config).unwrap_or_default();
            if cli.config_file().is_some()
                && gateway::import::looks_like_gobetween(&cli.config, &text)
            {
                eprintln!(
                    "gateway: {}: this looks like a gobetween TOML config: run `gateway import gobetween {}`",
                    cli.config.display(),
                    cli.config.display()
                );
            } else {
                eprintln!("gateway: {e}");
            }
            if cli.test {
                eprintln!("gateway: configuration {} test failed", cli.source());
            }
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(format) = cli.output {
        return print_config(&cli, &source.loaded, format);
    }
    let loaded = &source.loaded;
    if !cli.test {
        for n in loaded.config.notes() {
            tracing::warn!("{n}");
        }
    }
    if cli.test {
        print_summary(loaded);
        println!("gateway: configuration {} test is successful", cli.source());
        return ExitCode::SUCCESS;
    }
    if loaded.floating_ip.is_some()
        && let Err(missing) = check_privileges()
    {
        eprintln!(
            "gateway: floating_ip is enabled but this process lacks {missing}: run as root (or grant CAP_NET_ADMIN and CAP_NET_RAW); nothing was changed"
        );
        return ExitCode::from(EXIT_PRIVILEGES);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gateway: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let opts = daemon::Options {
        config: cli.config.clone(),
        grace: Duration::from_secs(cli.grace),
        api: cli.api.clone(),
        metrics: cli.metrics.clone(),
    };
    match runtime.block_on(daemon::run(opts, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn print_summary(loaded: &Loaded) {
    match &loaded.floating_ip {
        Some(f) => {
            println!(
                "floating_ip: vip {}/{} on {} (node {}, priority {}, preempt {}, heartbeat every {:?} to {}:{}, dead after {})",
                f.vip,
                f.prefix,
                f.interface,
                f.local_ip,
                f.priority,
                f.preempt,
                f.heartbeat_interval,
                f.heartbeat_dest,
                f.heartbeat_port,
                f.dead_count
            );
            if f.keys.is_empty() {
                println!(
                    "floating_ip: no secret: heartbeats are not authenticated, any host on the LAN can take the VIP"
                );
            } else {
                let ring = gateway::failover::auth::Keyring::from_config(&f.keys);
                let ids: Vec<String> = ring.ids().iter().map(|i| i.to_string()).collect();
                println!(
                    "floating_ip: heartbeats signed with HMAC-SHA256, key ids {} (the first signs)",
                    ids.join(", ")
                );
            }
            for n in &f.notes {
                println!("note: {n}");
            }
        }
        None => println!("floating_ip: disabled"),
    }
    println!("services: {}", loaded.config.services.len());
    for n in loaded.config.notes() {
        println!("note: {n}");
    }
}

/// Logs on stderr; RUST_LOG overrides `level`.
fn init_logging(level: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// CAP_NET_ADMIN (12) to change addresses, CAP_NET_RAW (13) for ARP and ICMP.
fn check_privileges() -> Result<(), &'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
    match caps {
        Some(c) if c & (1 << 12) == 0 => Err("CAP_NET_ADMIN"),
        Some(c) if c & (1 << 13) == 0 => Err("CAP_NET_RAW"),
        Some(_) => Ok(()),
        // Not Linux (no /proc): fall back to the effective uid.
        None if nix::unistd::geteuid().is_root() => Ok(()),
        None => Err("root privileges"),
    }
}

/// Parse one argv with clap (exits with clap's message on error), noting
/// whether `-config` was given.
fn parse_cli(args: &[String]) -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches_from(args);
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    cli.config_given =
        matches.value_source("config") == Some(clap::parser::ValueSource::CommandLine);
    cli
}

/// `gateway ARGS -- ARGS ...`: every group is checked here first, then each runs
/// as a child process supervised by this one.
fn run_groups(groups: Result<Vec<Vec<String>>, String>) -> ExitCode {
    let groups = match groups {
        Ok(g) => g,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for g in &groups {
        parse_cli(g);
    }
    init_logging("info");
    ExitCode::from(gateway::cli::groups::supervise(&groups))
}

/// `-O yaml|json`: the command line's services as a file, on stdout.
fn print_config(cli: &Cli, loaded: &Loaded, format: gateway::cli::output::Format) -> ExitCode {
    if cli.config_given {
        eprintln!(
            "gateway: -O prints what -L/-F mean; it does not rewrite {}: drop -config (then add the printed services to your file)",
            cli.config.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    match gateway::cli::output::render(&loaded.config, format) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gateway: cannot print the configuration: {e}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        go_style_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn go_style_options() {
        assert_eq!(
            args(&["gateway", "-config", "g.yml"]),
            ["gateway", "--config", "g.yml"]
        );
        assert_eq!(
            args(&["gateway", "-config=g.yml", "-test"]),
            ["gateway", "--config=g.yml", "--test"]
        );
        assert_eq!(
            args(&["gateway", "-c", "g.yml", "-version"]),
            ["gateway", "-c", "g.yml", "--version"]
        );
        let cli = Cli::try_parse_from(args(&["gateway", "-config", "a.yml", "-test"])).unwrap();
        assert_eq!(cli.config, PathBuf::from("a.yml"));
        assert!(cli.test);
        let cli = Cli::try_parse_from(args(&["gateway"])).unwrap();
        assert_eq!(cli.config, PathBuf::from("gateway.yml"));
    }
}
