//! The `fabric-gossip` binary: one command per tool, each in its own module.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc (feature `mimalloc`, off by default): the simulator's per-message buffers and
/// per-connection state are small allocations made and freed by the million.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod demo;
mod expiry;
mod keygen;
mod limits;
mod logging;
mod lookup;
mod membership;
mod node;
mod ops;
mod opts;
mod out;
mod probe;
mod sim;
mod validate;
mod watch;

/// Fabric gossip comm layer in Rust: a demo, nodes, probes of real peers, development
/// certificates and simulation.
#[derive(Debug, Parser)]
#[command(name = "fabric-gossip", version, about)]
struct Cli {
    /// Which logs to print on stderr, in Fabric's FABRIC_LOGGING_SPEC syntax:
    /// [LOGGER[,LOGGER...]=]LEVEL[:...], e.g. gossip.comm=debug:info. Loggers: gossip
    /// (gossip.comm, gossip.discovery, gossip.discovery.bootstrap,
    /// gossip.discovery.members), msp, grpc, nodeCmd, certmonitor, or a crate name.
    /// Default: the FABRIC_LOGGING_SPEC variable, else RUST_LOG, else info for node and
    /// warning for the other commands, which print their own result or progress (watch:
    /// gossip.discovery.bootstrap,gossip.discovery.members=error:warning, as it reports
    /// each failed bootstrap attempt and member change itself; demo:
    /// gossip.discovery.members=error:warning; ping and handshake:
    /// gossip.comm=error:warning, as a failed probe is their result).
    #[arg(long, global = true, value_name = "SPEC")]
    log_spec: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a deterministic simulation of N nodes and print a summary.
    Sim(sim::SimArgs),
    /// Run 5 nodes of two organizations with mutual TLS on loopback: messages, a node
    /// stopped (presumed dead), restarted (reconnected); then as members of Fabric's
    /// membership protocol: joined, one declared dead, back as a new incarnation; live
    /// progress and a final table.
    Demo(demo::DemoArgs),
    /// Run one gossip node: received messages and events as JSON lines on stdout,
    /// commands (or plain text to send) on stdin.
    Node(Box<node::NodeArgs>),
    /// Probe a gossip endpoint (dial and Ping, Fabric's Probe) and print the round trip.
    Ping(probe::PingArgs),
    /// Authenticate a gossip peer (Fabric's Handshake) and print its PKI-ID and identity.
    Handshake(probe::HandshakeArgs),
    /// Join a Fabric network as a member (through a bootstrap peer) and show the live
    /// membership table: PKI-ID, MSP ID, endpoints, incarnation, last alive, alive/dead.
    Watch(Box<watch::WatchArgs>),
    /// Write development CAs, peer identities and TLS certificates in Fabric's MSP layout.
    Keygen(keygen::KeygenArgs),
    /// Judge certificates as a node trusting the given MSP folders judges a peer's
    /// identity (chain, CRLs, NodeOU roles, validity): valid, or refused and why; one JSON
    /// line each, exit status 1 if any is refused.
    Validate(validate::ValidateArgs),
    /// Print a shell completion script, e.g. `fabric-gossip completions bash >
    /// /etc/bash_completion.d/fabric-gossip` or `fabric-gossip completions zsh >
    /// "${fpath[1]}/_fabric-gossip"`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    // Before anything allocates much: a node's receive buffers would otherwise go back to
    // the kernel and fault in again, buffer after buffer (README, "glibc's heap trimming").
    fabric_gossip_tonic::malloc::warm_glibc_malloc();
    let cli = Cli::parse();
    // A daemon logs what it does at `info`, as a Fabric peer does. The one-shot commands
    // print their own result (and the simulator and the demo their progress): their
    // libraries' logs would drown it unless asked for.
    let default = match cli.command {
        Command::Node(_) => "info",
        // The simulated nodes' warnings (a bootstrap attempt failed) carry the wall clock's
        // time and read as real dials (an operator's trial); the summary and the trace say
        // what happened in virtual time.
        Command::Sim(_) => "gossip=error:warning",
        // Each failed bootstrap attempt is explained on stderr by `watch` itself, with
        // hints; the layer's own warning said it a second time (an operator's trial).
        // Members found dead likewise: `watch` and `demo` print each change themselves.
        Command::Watch(_) => logging::WATCH_SPEC,
        Command::Demo(_) => logging::DEMO_SPEC,
        // A probe's failure is its result, printed with hints and again as the error:
        // comm's warning of the same failed handshake made it three times (an operator's
        // trial, 2026-12-07).
        Command::Ping(_) | Command::Handshake(_) => "gossip.comm=error:warning",
        _ => "warning",
    };
    match logging::filter(cli.log_spec.as_deref(), default) {
        Ok(f) => logging::init(f),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    raise_open_file_limit();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Node(args) => node::run(&args),
        Command::Ping(args) => probe::run_ping(&args),
        Command::Handshake(args) => probe::run_handshake(&args),
        Command::Watch(args) => watch::run(&args),
        Command::Keygen(args) => keygen::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            // Generated into memory, then written once: a reader that stops early (`| head`)
            // gets the one-shot commands' error and status 2 (see `out::WriteError`),
            // never a panic inside the generator.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fabric-gossip", &mut script);
            match out::print("completion script", &script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => e.exit(),
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit. The usual soft default (1,024)
/// is what a node's connections, a flood of idle ones included, run into first; the hard
/// limit is what the administrator allows. Failure is not fatal: the node runs with what
/// it has.
fn raise_open_file_limit() {
    #[cfg(unix)]
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(target: logging::TARGET, "open-file limit: {n}"),
        Err(e) => tracing::warn!(target: logging::TARGET, "cannot raise the open-file limit: {e}"),
    }
}
