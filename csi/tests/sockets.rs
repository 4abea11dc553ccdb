//! The zeronas-csi binary on a real unix socket, called with the generated gRPC client: the
//! node mode's answers that need no NFS mount (this kernel has none), socket handling, and
//! the controller mode's refusal to start without a cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tonic::Code;
use tonic::transport::{Channel, Endpoint, Uri};
use zeronas_csi::csi::identity_client::IdentityClient;
use zeronas_csi::csi::node_client::NodeClient;
use zeronas_csi::csi::volume_capability::access_mode::Mode;
use zeronas_csi::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use zeronas_csi::csi::*;

struct Driver {
    child: Child,
    socket: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path) -> Driver {
    let socket = dir.join("csi.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_zeronas-csi"))
        .args(["--mode", "node", "--node-id", "node-7"])
        .arg(format!("--endpoint=unix://{}", socket.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("zeronas-csi starts");
    Driver { child, socket }
}

async fn channel(socket: &Path) -> Channel {
    let started = Instant::now();
    loop {
        let path = socket.to_owned();
        let connected = Endpoint::try_from("http://[::]:50051")
            .expect("endpoint")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }))
            .await;
        match connected {
            Ok(channel) => return channel,
            Err(e) if started.elapsed() > Duration::from_secs(10) => {
                panic!("no gRPC server on {}: {e}", socket.display())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn mount_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume::default())),
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
    }
}

#[tokio::test]
async fn node_mode_answers_over_its_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    // A socket file left by a killed driver must not keep the next one from starting.
    std::fs::write(dir.path().join("csi.sock"), b"stale").unwrap();
    let driver = start_node(dir.path());
    let channel = channel(&driver.socket).await;

    let mut identity = IdentityClient::new(channel.clone());
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.zeronas.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        caps.capabilities.is_empty(),
        "a node plugin offers no controller"
    );

    let mut node = NodeClient::new(channel);
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-7");

    // Bad requests are refused by name, before anything is mounted.
    let target = dir.path().join("target");
    let publish = |f: &dyn Fn(&mut NodePublishVolumeRequest)| {
        let mut req = NodePublishVolumeRequest {
            volume_id: "team/pvc-1".into(),
            target_path: target.display().to_string(),
            volume_capability: Some(mount_capability()),
            volume_context: [("server".to_owned(), "127.0.0.1".to_owned())]
                .into_iter()
                .collect(),
            ..NodePublishVolumeRequest::default()
        };
        f(&mut req);
        req
    };
    for (what, req, code) in [
        (
            "no volume id",
            publish(&|r| r.volume_id.clear()),
            Code::InvalidArgument,
        ),
        (
            "no target",
            publish(&|r| r.target_path.clear()),
            Code::InvalidArgument,
        ),
        (
            "no capability",
            publish(&|r| r.volume_capability = None),
            Code::InvalidArgument,
        ),
        (
            "an HTTP-only share",
            publish(&|r| r.volume_context.clear()),
            Code::FailedPrecondition,
        ),
        (
            "an address in the options",
            publish(&|r| {
                r.volume_capability = Some(VolumeCapability {
                    access_type: Some(AccessType::Mount(MountVolume {
                        mount_flags: vec!["addr=10.9.9.9".into()],
                        ..MountVolume::default()
                    })),
                    ..mount_capability()
                })
            }),
            Code::InvalidArgument,
        ),
    ] {
        let err = node.node_publish_volume(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    assert!(
        !target.exists(),
        "nothing was created for a refused publish"
    );

    // Unpublishing what is not mounted succeeds and removes the folder (idempotent).
    std::fs::create_dir(&target).unwrap();
    for _ in 0..2 {
        node.node_unpublish_volume(NodeUnpublishVolumeRequest {
            volume_id: "team/pvc-1".into(),
            target_path: target.display().to_string(),
        })
        .await
        .unwrap();
        assert!(!target.exists());
    }

    // Stats of a path where nothing is mounted: NotFound, not numbers of another file system.
    let err = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: "team/pvc-1".into(),
            volume_path: dir.path().display().to_string(),
            staging_target_path: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let caps = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        caps.capabilities.len(),
        2,
        "volume stats and volume condition"
    );
}

#[test]
fn controller_mode_without_a_cluster_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_zeronas-csi"))
        .args(["--mode", "controller", "--kubeconfig"])
        .arg(dir.path().join("missing-kubeconfig"))
        .arg(format!(
            "--endpoint=unix://{}",
            dir.path().join("c.sock").display()
        ))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("missing-kubeconfig"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_zeronas-csi"))
        .args([
            "--mode",
            "node",
            "--node-id",
            "n",
            "--endpoint",
            "tcp://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only unix:///path"));
}
