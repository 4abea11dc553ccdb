//! `zeronas-csi`: the CSI driver, in controller mode (beside external-provisioner and
//! external-resizer) or node mode (a DaemonSet beside node-driver-registrar).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use zeronas_csi::controller::ControllerService;
use zeronas_csi::csi::controller_server::ControllerServer;
use zeronas_csi::csi::identity_server::IdentityServer;
use zeronas_csi::csi::node_server::NodeServer;
use zeronas_csi::identity::IdentityService;
use zeronas_csi::node::NodeService;

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Identity and Controller: volumes as NasVolumes on the apiserver.
    Controller,
    /// Identity and Node: NFS mounts on this node.
    Node,
}

/// zeronas CSI driver (csi.zeronas.io).
#[derive(Debug, Parser)]
#[command(name = "zeronas-csi", version, about)]
struct Cli {
    /// `controller` or `node`.
    #[arg(long, env = "CSI_MODE")]
    mode: Mode,
    /// The gRPC endpoint: `unix:///path/csi.sock` (a stale socket file there is replaced).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Kubeconfig (controller mode; default: in-cluster config, or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of volumes whose claim's namespace is not passed (external-provisioner
    /// passes it with --extra-create-metadata).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Seconds CreateVolume waits for a NasVolume to be Ready when the caller sets no
    /// deadline (external-provisioner sets one with --timeout and calls again).
    #[arg(long, default_value_t = 300)]
    ready_timeout_seconds: u64,
    /// This node's id (node mode): the Kubernetes node name.
    #[arg(long, env = "NODE_NAME")]
    node_id: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "ZERONAS_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

fn socket_path(endpoint: &str) -> Result<PathBuf, String> {
    let path = endpoint
        .strip_prefix("unix://")
        .ok_or_else(|| format!("endpoint {endpoint:?}: only unix:///path is served"))?;
    if !path.starts_with('/') {
        return Err(format!(
            "endpoint {endpoint:?}: the socket path must be absolute"
        ));
    }
    Ok(PathBuf::from(path))
}

async fn client(cli: &Cli) -> Result<Client, String> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no cluster configuration: {e}"))?,
    };
    Client::try_from(config).map_err(|e| format!("kube client: {e}"))
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
}

async fn run(cli: Cli) -> Result<(), String> {
    let path = socket_path(&cli.endpoint)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!(socket = %path.display(), "replaced a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", path.display())),
    }
    let listener =
        UnixListener::bind(&path).map_err(|e| format!("listening on {}: {e}", path.display()))?;
    let incoming = UnixListenerStream::new(listener);
    let router = match cli.mode {
        Mode::Controller => {
            let client = client(&cli).await?;
            let identity = IdentityService {
                client: Some(client.clone()),
                controller: true,
            };
            let controller = ControllerService {
                client,
                default_namespace: cli.namespace.clone(),
                ready_timeout: Duration::from_secs(cli.ready_timeout_seconds),
            };
            Server::builder()
                .add_service(IdentityServer::new(identity))
                .add_service(ControllerServer::new(controller))
        }
        Mode::Node => {
            let node_id = cli
                .node_id
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or("node mode needs --node-id (or NODE_NAME)")?;
            let node = NodeService::new(node_id);
            Server::builder()
                .add_service(IdentityServer::new(IdentityService {
                    client: None,
                    controller: false,
                }))
                .add_service(NodeServer::new(node))
        }
    };
    tracing::info!(mode = ?cli.mode, socket = %path.display(), "serving CSI");
    router
        .serve_with_incoming_shutdown(incoming, shutdown())
        .await
        .map_err(|e| format!("gRPC server: {e}"))?;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "zeronas-csi failed");
            eprintln!("zeronas-csi: {e}");
            ExitCode::FAILURE
        }
    }
}
