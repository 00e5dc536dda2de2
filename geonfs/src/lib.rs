//! The geonfs node runtime and command-line interface.
//!
//! [`node`] starts every role one configured node has (shared by the `geonfs`
//! binary and the in-process test cluster); [`cli`] is the binary's commands;
//! [`cert_cli`] makes the cluster CA and node certificates;
//! [`relocate`] moves a file's ownership to another site; [`failover`] takes
//! every file of a lost site over; [`quarantine_cli`] shows what the cores
//! set aside after one.
//!
//! Invariants are cited as `docs/ARCHITECTURE.md#invariant-N`.

pub mod cert_cli;
pub mod cli;
pub mod demo;
pub mod failover;
pub mod meta_cli;
pub mod metrics_http;
pub mod node;
pub mod quarantine_cli;
pub mod relocate;
