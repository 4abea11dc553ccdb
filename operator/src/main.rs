//! `zeronas-operator`: reconciles NasVolumes. Runs in cluster (service account) or out of
//! cluster with `--kubeconfig` / `KUBECONFIG`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use zeronas_operator::api_client::{ApiLayer, RateLimiter};
use zeronas_operator::cache::Caches;
use zeronas_operator::controller::{self, Context};
use zeronas_operator::crd::NasVolume;
use zeronas_operator::leader::{self, Elector, LeaseConfig, Timings};
use zeronas_operator::metrics::Metrics;
use zeronas_operator::reconcile::Settings;
use zeronas_operator::render;

/// zeronas operator: turns NasVolumes into dataplane pods and shares.
#[derive(Debug, Parser)]
#[command(name = "zeronas-operator", version, about)]
struct Cli {
    /// Kubeconfig to use (default: in-cluster config, or ~/.kube/config).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "ZERONAS_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Dataplane image for NasVolumes that do not set one.
    #[arg(long, global = true, env = "ZERONAS_DATAPLANE_IMAGE", default_value = concat!("ghcr.io/zeronas/dataplane:", env!("CARGO_PKG_VERSION")))]
    dataplane_image: String,
    /// Elect a leader on a Lease before reconciling (safe with several replicas).
    #[arg(long, env = "ZERONAS_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Namespace of the Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease.
    #[arg(long, default_value = "zeronas-operator")]
    lease_name: String,
    /// This replica's name in the Lease; the holder identity is `<name>_<per-process id>`
    /// (default name: the hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a standby waits, after it last saw the Lease change, before taking it over.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds the leader keeps reconciling without a successful renewal (< lease duration).
    #[arg(long, default_value_t = 10)]
    renew_deadline_seconds: u64,
    /// Seconds between renewals, and between a standby's looks at the Lease (< renew deadline).
    #[arg(long, default_value_t = 2)]
    retry_period_seconds: u64,
    /// Reconciles running at once; the others wait (metric
    /// zeronas_operator_reconcile_queue_depth).
    #[arg(long, env = "ZERONAS_MAX_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    max_concurrent_reconciles: u16,
    /// Requests a second to the apiserver, sustained (client-go's QPS); 0: no limit. The
    /// leader Lease has its own client, never held back by this limit.
    #[arg(long, env = "ZERONAS_API_QPS", default_value_t = 300.0)]
    api_qps: f64,
    /// Requests the client may send at once above --api-qps after a quiet spell.
    #[arg(long, env = "ZERONAS_API_BURST", default_value_t = 600)]
    api_burst: u32,
    /// Log format: text or json.
    #[arg(long, env = "ZERONAS_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints, as YAML, every object the operator would apply for a NasVolume (the same
    /// builders the controller uses), without contacting a cluster.
    Render {
        /// The NasVolume manifest (`-`: standard input).
        #[arg(short = 'f', long = "filename")]
        file: std::path::PathBuf,
        /// Namespace for a manifest that names none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The Service's ClusterIP for the PV's server (known once the Service exists).
        #[arg(long, default_value = render::PLACEHOLDER_CLUSTER_IP)]
        cluster_ip: String,
    },
}

/// `render`: reads the manifest, prints the objects.
fn render_command(
    file: &std::path::Path,
    namespace: &str,
    cluster_ip: &str,
    dataplane_image: &str,
) -> Result<(), String> {
    let text = if file == std::path::Path::new("-") {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("cannot read stdin: {e}"))?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let settings = Settings {
        dataplane_image: dataplane_image.to_owned(),
    };
    let nv = render::parse(&text, namespace).map_err(|e| format!("{}: {e}", file.display()))?;
    let objects = render::objects(&nv, &settings, cluster_ip).map_err(|e| e.to_string())?;
    print!("{}", render::to_yaml(&nv, &objects));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Render {
        file,
        namespace,
        cluster_ip,
    }) = &cli.command
    {
        return match render_command(file, namespace, cluster_ip, &cli.dataplane_image) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zeronas-operator render: {e}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&cli.log_format);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "operator stopped");
            eprintln!("zeronas-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A client whose requests go through `layer` (rate limit and counting).
async fn client(cli: &Cli, layer: &ApiLayer) -> Result<Client, String> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| format!("bad kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration found: {e}"))?,
    };
    // No retries inside the client: they would bypass the rate limit and the request
    // metrics, and hold a reconcile slot for minutes; a failed reconcile backs off instead.
    let mut config = config;
    config.default_retry = false;
    let builder = ClientBuilder::try_from(config)
        .map_err(|e| format!("cannot create a Kubernetes client: {e}"))?;
    Ok(builder.with_layer(layer).build())
}

async fn run(cli: Cli) -> Result<(), String> {
    // Bad timings fail before anything starts: a deadline at or past the lease would let a
    // standby take over while a stalled leader still reconciles.
    let timings = Timings::from_secs(
        cli.lease_duration_seconds,
        cli.renew_deadline_seconds,
        cli.retry_period_seconds,
    )
    .map_err(|e| format!("bad leader election timings: {e}"))?;
    if !cli.api_qps.is_finite() || cli.api_qps < 0.0 {
        return Err(format!("--api-qps must be 0 or more, not {}", cli.api_qps));
    }
    let metrics = Arc::new(Metrics::new());
    let limited = ApiLayer::new(
        RateLimiter::new(cli.api_qps, cli.api_burst),
        Arc::clone(&metrics),
    );
    let client = client(&cli, &limited).await?;
    // The Lease must be renewed on time however busy the reconciles are.
    let unlimited = ApiLayer::new(RateLimiter::new(0.0, 1), Arc::clone(&metrics));
    let lease_client = self::client(&cli, &unlimited).await?;
    let ready = Arc::new(AtomicBool::new(false));
    let (caches, feeds) = Caches::watch(&client);
    let (stop_tx, stop_rx) = watch::channel(false);

    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    tracing::info!(listen = %cli.listen, "health and metrics endpoint");
    tokio::spawn(serve_probes(
        listener,
        Arc::clone(&metrics),
        Arc::clone(&ready),
        caches.volumes.clone(),
    ));

    // Fail early and clearly when the CRD is missing or RBAC forbids reading NasVolumes.
    kube::Api::<NasVolume>::all(client.clone())
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            format!("cannot list NasVolumes (is the CRD installed and RBAC granted?): {e}")
        })?;
    // Ready means "up and able to lead", not "leading": standbys are Ready too, so a rolling
    // update of several replicas completes. Leadership is the zeronas_operator_leader gauge.
    ready.store(true, Ordering::Relaxed);

    let mut elector = cli.leader_election.then(|| {
        let name = cli.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            host.trim().to_owned()
        });
        Elector::new(
            lease_client.clone(),
            LeaseConfig {
                namespace: cli.lease_namespace.clone(),
                name: cli.lease_name.clone(),
                identity: leader::process_identity(&name),
                timings,
            },
        )
    });
    if let Some(elector) = &mut elector {
        tracing::info!(identity = %elector.identity(), ?timings, "standing by for the leader lease");
        let acquired = tokio::select! {
            () = elector.acquire() => true,
            () = shutdown_signal() => false,
        };
        if !acquired {
            // A take cut short by the signal may have landed: hand it back if so.
            release(elector).await;
            return Ok(());
        }
        metrics.set_leader(true);
    }

    let ctx = Context::new(
        client.clone(),
        Settings {
            dataplane_image: cli.dataplane_image.clone(),
        },
        Arc::clone(&metrics),
        caches,
        usize::from(cli.max_concurrent_reconciles),
    );
    tracing::info!(
        max_concurrent_reconciles = cli.max_concurrent_reconciles,
        api_qps = cli.api_qps,
        api_burst = cli.api_burst,
        "reconciling"
    );
    let mut stop = stop_rx.clone();
    let mut controller = tokio::spawn(controller::run(ctx, feeds, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));
    let lost = tokio::select! {
        () = shutdown_signal() => None,
        lost = hold(elector.as_mut()) => Some(lost),
    };
    if let Some(lost) = lost {
        // Stop reconciling now, without waiting for reconciles in flight: a standby may
        // take the lease once it has seen no renewal for a lease duration.
        controller.abort();
        metrics.set_leader(false);
        ready.store(false, Ordering::Relaxed);
        return Err(format!(
            "lost the leader lease ({lost}); exiting so a fresh process stands by"
        ));
    }
    ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    // Reconciles in flight finish, the lease still renewed meanwhile; if it is lost while
    // they drain, they are cut off.
    tokio::select! {
        drained = tokio::time::timeout(Duration::from_secs(20), &mut controller) => {
            if drained.is_err() {
                // Never release the lease while this replica may still be reconciling.
                tracing::warn!("reconciles still running after 20 s; cutting them off");
                controller.abort();
                let _ = (&mut controller).await;
            }
        }
        lost = hold(elector.as_mut()) => {
            tracing::error!(%lost, "lost the leader lease while stopping");
            controller.abort();
        }
    }
    metrics.set_leader(false);
    if let Some(elector) = &mut elector {
        release(elector).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Renews the lease until it is lost; without leader election, never returns.
async fn hold(elector: Option<&mut Elector>) -> leader::Lost {
    match elector {
        Some(elector) => elector.hold().await,
        None => std::future::pending().await,
    }
}

/// Releases the lease (bounded: shutdown must not hang on an unreachable API server; the
/// standby then takes over after a lease duration instead).
async fn release(elector: &mut Elector) {
    match tokio::time::timeout(Duration::from_secs(5), elector.release()).await {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => tracing::debug!("no lease of ours to release"),
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot release the leader lease"),
        Err(_) => tracing::warn!("releasing the leader lease timed out"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => std::future::pending().await,
    }
}

async fn serve_probes(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    store: Store<NasVolume>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, ready, store) = (Arc::clone(&metrics), Arc::clone(&ready), store.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let response = probe_response(req.uri().path(), &metrics, &ready, &store);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn probe_response(
    path: &str,
    metrics: &Metrics,
    ready: &AtomicBool,
    store: &Store<NasVolume>,
) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/healthz" => (StatusCode::OK, "ok\n".to_owned()),
        "/readyz" if ready.load(Ordering::Relaxed) => (StatusCode::OK, "ready\n".to_owned()),
        "/readyz" => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_owned()),
        "/metrics" => {
            let volumes = store.state();
            (
                StatusCode::OK,
                metrics.render(volumes.iter().map(|v| v.as_ref())),
            )
        }
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let content_type = if path == "/metrics" {
        // prometheus-client writes OpenMetrics text; Prometheus 3 refuses a scrape without
        // a media type it knows.
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
