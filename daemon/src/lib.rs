//! The `lookout` daemon as a library: the binary's `run` and `check-config` subcommands call into
//! it, and its modules are unit-tested here.

pub mod app;
pub mod broker;
pub mod camera;
pub mod clock;
pub mod config;
pub mod detection;
pub mod discovery;
pub mod jobs;
pub mod logging;
pub mod mqtt;
pub mod outbox;
pub mod service;
pub mod snapshot;
