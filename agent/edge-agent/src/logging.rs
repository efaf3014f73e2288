//! Log setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`; the embedded demo broker is silent, as its readiness probe would read as a failed client), so stdout stays
//! free for the JSON lines of `detect` and the demo's messages.

pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    // colours only on a terminal: under systemd stderr is the journal, which would keep the
    // escape codes
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}
