//! The `fabric-gossip` binary: one command per tool, each in its own module.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod sim;

/// Fabric gossip comm layer in Rust: tools for simulation and (later) real peers.
#[derive(Debug, Parser)]
#[command(name = "fabric-gossip", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a deterministic simulation of N nodes and print a summary.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::run(&args),
    }
}
