//! `zeronas-dataplane`: the command line. See `zeronas_dataplane::config::Config`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use zeronas_dataplane::config::Config;
use zeronas_dataplane::logging;
use zeronas_dataplane::runtime::{BLOCKING_NAME, RuntimeReport};
use zeronas_dataplane::server::{Server, shutdown_signal};

fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(config.log_format);
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("zeronas-dataplane: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &Config) -> Result<(), String> {
    let report = RuntimeReport::detect(config.workers, config.pin_cpus, config.rdma)?;
    report.log();
    let plan = report.plan.clone();
    // The control runtime: start-up, signals, rescans and the metrics listener. The
    // workers get runtimes of their own (see `server.rs`).
    let control = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(BLOCKING_NAME)
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    let server = control
        .block_on(Server::bind(config, report))
        .map_err(|e| e.to_string())?;
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    let http = server
        .http_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let metrics = server.metrics_addr().map(|a| a.to_string());
    let line = serde_json::json!({ "event": "listening", "http": http, "metrics": metrics });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    tracing::info!(http = %http, metrics = ?metrics, workers = plan.workers, "serving");
    server.run_on_workers(&control, &plan, shutdown_signal())
}
