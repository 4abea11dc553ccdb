//! `csi_node_call`: kubelet's three node calls, by hand, over a node plugin's socket. The
//! kernel-client test runs it in its QEMU guest (the one place here with an NFS client) to
//! publish, inspect and unpublish a share through `zeronas-csi --mode node`; it is also a
//! way to try the node plugin on a real node.
//!
//! ```text
//! csi_node_call SOCKET publish VOLUME_ID TARGET SERVER ro|rw [MOUNT_OPTIONS]
//! csi_node_call SOCKET unpublish VOLUME_ID TARGET
//! csi_node_call SOCKET stats VOLUME_ID PATH
//! ```
//!
//! Prints `ok …` and exits 0, or `error CODE message` and exits 2 (1 for bad usage).

use std::collections::HashMap;
use std::process::ExitCode;

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};
use zeronas_csi::csi::node_client::NodeClient;
use zeronas_csi::csi::volume_capability::access_mode::Mode;
use zeronas_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use zeronas_csi::csi::volume_usage::Unit;
use zeronas_csi::csi::{
    NodeGetVolumeStatsRequest, NodePublishVolumeRequest, NodeUnpublishVolumeRequest,
    VolumeCapability,
};

const USAGE: &str = "usage: csi_node_call SOCKET publish VOLUME_ID TARGET SERVER ro|rw [MOUNT_OPTIONS]\n       csi_node_call SOCKET unpublish VOLUME_ID TARGET\n       csi_node_call SOCKET stats VOLUME_ID PATH";

/// `<name>.<namespace>.svc` for the volume id `<namespace>/<name>`.
fn service_name(volume: &str) -> String {
    match volume.split_once('/') {
        Some((namespace, name)) => format!("{name}.{namespace}.svc"),
        None => format!("{volume}.svc"),
    }
}

async fn call(args: &[String]) -> Result<String, tonic::Status> {
    let socket = args[0].clone();
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("{}: {e}", args[0])))?;
    let mut node = NodeClient::new(channel);
    match (args[1].as_str(), &args[2..]) {
        ("publish", [volume, target, server, mode, rest @ ..]) if rest.len() <= 1 => {
            let capability = VolumeCapability {
                access_type: Some(AccessType::Mount(MountVolume {
                    mount_flags: rest.to_vec(),
                    ..MountVolume::default()
                })),
                access_mode: Some(AccessMode {
                    mode: Mode::MultiNodeMultiWriter as i32,
                }),
            };
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: target.clone(),
                volume_capability: Some(capability),
                readonly: mode == "ro",
                // As the controller writes it: the Service name (resolved first; where it
                // cannot be, as in the test guest, the recorded address is used).
                volume_context: HashMap::from([
                    ("server".to_owned(), server.clone()),
                    ("service".to_owned(), service_name(volume)),
                    ("share".to_owned(), "/".to_owned()),
                ]),
                ..NodePublishVolumeRequest::default()
            })
            .await?;
            Ok(format!("published {volume} at {target}"))
        }
        ("unpublish", [volume, target]) => {
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: volume.clone(),
                target_path: target.clone(),
            })
            .await?;
            Ok(format!("unpublished {volume} from {target}"))
        }
        ("stats", [volume, path]) => {
            let stats = node
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: volume.clone(),
                    volume_path: path.clone(),
                    staging_target_path: String::new(),
                })
                .await?
                .into_inner();
            let mut out = Vec::new();
            for usage in &stats.usage {
                let unit = if usage.unit == Unit::Bytes as i32 {
                    "bytes"
                } else {
                    "inodes"
                };
                out.push(format!(
                    "{unit}_total={} {unit}_used={} {unit}_available={}",
                    usage.total, usage.used, usage.available
                ));
            }
            if let Some(condition) = &stats.volume_condition {
                out.push(format!(
                    "abnormal={} message={:?}",
                    condition.abnormal, condition.message
                ));
            }
            Ok(out.join(" "))
        }
        _ => Err(tonic::Status::invalid_argument(USAGE)),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("{USAGE}");
        return ExitCode::from(1);
    }
    match call(&args).await {
        Ok(text) => {
            println!("ok {text}");
            ExitCode::SUCCESS
        }
        Err(status) => {
            println!("error {:?} {}", status.code(), status.message());
            ExitCode::from(2)
        }
    }
}
