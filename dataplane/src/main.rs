//! `zeronas-dataplane`: the command line. See `zeronas_dataplane::config::Config`.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use zeronas_dataplane::config::Config;
use zeronas_dataplane::identity::{self, IdentityMode, RootSetup};
use zeronas_dataplane::logging;
use zeronas_dataplane::nfs::export::ClientRule;
use zeronas_dataplane::nfs::{ExportOptions, NfsServer};
use zeronas_dataplane::runtime::{BLOCKING_NAME, RuntimeReport};
use zeronas_dataplane::server::{Server, shutdown_signal};
use zeronas_dataplane::sftp::{SftpOptions, SftpServer};

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
    let mode = identity::detect(config.identity).map_err(|e| e.to_string())?;
    let root_setup = RootSetup {
        owner: config.root_owner,
        mode: config.root_mode,
    };
    identity::prepare_root(&config.root, root_setup, mode, config.read_only)
        .map_err(|e| e.to_string())?;
    let me = identity::ProcessIdentity::current();
    tracing::info!(
        identity = mode.as_str(),
        uid = me.uid,
        gid = me.gid,
        groups = ?me.groups,
        "file-system identity"
    );
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
    let nfs = start_nfs(config, &server, mode)?;
    let sftp = start_sftp(config, &server, mode)?;
    // One machine-readable line on stdout, for scripts and tests that bind port 0.
    let http = server.http_addr().ok().map(|a| a.to_string());
    let metrics = server.metrics_addr().map(|a| a.to_string());
    let line = serde_json::json!({
        "event": "listening", "http": http, "metrics": metrics, "nfs": nfs, "sftp": sftp,
        "identity": mode.as_str(),
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);
    tracing::info!(http = ?http, metrics = ?metrics, nfs = ?nfs, sftp = ?sftp, workers = plan.workers, "serving");
    server.run_on_workers(&control, &plan, shutdown_signal())
}

/// Starts the SFTP export unless `--sftp off`; returns its address.
fn start_sftp(
    config: &Config,
    server: &Server,
    identity: IdentityMode,
) -> Result<Option<String>, String> {
    if config.sftp == "off" {
        return Ok(None);
    }
    let addr = config.sftp.parse().map_err(|_| {
        format!(
            "--sftp {:?} is not an address such as 0.0.0.0:2222, nor off",
            config.sftp
        )
    })?;
    let (Some(host_key), Some(authorized_keys)) =
        (&config.sftp_host_key, &config.sftp_authorized_keys)
    else {
        return Err("--sftp needs --sftp-host-key FILE and --sftp-authorized-keys FILE".to_owned());
    };
    let options = SftpOptions {
        addr,
        host_key: host_key.clone(),
        authorized_keys: authorized_keys.clone(),
        read_only: config.read_only,
        identity,
        anon_id: config.anon_id,
        max_connections: config.sftp_max_connections,
        max_handles: config.sftp_max_handles,
        threads: config.sftp_threads,
    };
    let app = server.app();
    let sftp = SftpServer::start(
        options,
        &config.root,
        Arc::clone(&app.metrics),
        Arc::clone(&app.usage),
    )
    .map_err(|e| format!("cannot serve SFTP on {}: {e}", config.sftp))?;
    Ok(Some(sftp.local_addr().to_string()))
}

/// Starts the NFS export unless `--nfs off`; returns its address.
fn start_nfs(
    config: &Config,
    server: &Server,
    identity: IdentityMode,
) -> Result<Option<String>, String> {
    if config.nfs == "off" {
        return Ok(None);
    }
    let app = server.app();
    let rules = config
        .nfs_clients
        .iter()
        .map(|r| {
            r.parse::<ClientRule>()
                .map_err(|e| format!("--nfs-client {r}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = ExportOptions {
        share: config.share.clone(),
        read_only: config.read_only,
        rules,
        rule_texts: config.nfs_clients.clone(),
        anon: (config.anon_id, config.anon_id),
        identity,
        max_connections: config.nfs_max_connections,
        threads: config.nfs_threads,
        max_requests_per_connection: config.nfs_max_requests_per_connection,
    };
    let nfs = NfsServer::start(
        &config.nfs,
        &config.root,
        options,
        Arc::clone(&app.metrics),
        Arc::clone(&app.usage),
    )
    .map_err(|e| format!("cannot serve NFS on {}: {e}", config.nfs))?;
    Ok(Some(nfs.local_addr().to_string()))
}
