//! The `geonfs` binary: parses the command line and hands over to [`geonfs::cli`].

use clap::Parser;

fn main() -> std::process::ExitCode {
    geonfs::cli::main(geonfs::cli::Cli::parse())
}
