//! `portico`: the Kubernetes ingress controller binary.
//!
//! The controller (watches, translation, status) and `portico run` arrive
//! with the controller issue; today the binary only reports its version so
//! the workspace, packaging and CI have a real artifact to build.
#![forbid(unsafe_code)]

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "portico",
    version,
    about = "Kubernetes ingress controller with an embedded Rust dataplane"
)]
struct Cli {}

fn main() {
    let _cli = Cli::parse();
    eprintln!(
        "portico {}: the controller arrives with `portico run`; see README",
        env!("CARGO_PKG_VERSION")
    );
}
