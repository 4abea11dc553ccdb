//! `zeronas-dataplane`: the command line. See `zeronas_dataplane::config::Config`.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use zeronas_dataplane::config::Config;
use zeronas_dataplane::server::{Server, shutdown_signal};
use zeronas_dataplane::{logging, runtime};

fn main() -> ExitCode {
    let config = Config::parse();
    logging::init(config.log_format);
    let (rt, report) = match runtime::start(config.workers, config.pin_cpus, config.rdma) {
        Ok(started) => started,
        Err(e) => {
            tracing::error!(error = %e, "start-up failed");
            eprintln!("zeronas-dataplane: {e}");
            return ExitCode::FAILURE;
        }
    };
    report.log();
    rt.block_on(async {
        let server = match Server::bind(&config, report).await {
            Ok(server) => server,
            Err(e) => {
                tracing::error!(error = %e, "start-up failed");
                return ExitCode::FAILURE;
            }
        };
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
        tracing::info!(http = %http, metrics = ?metrics, "serving");
        server.run(shutdown_signal()).await;
        ExitCode::SUCCESS
    })
}
