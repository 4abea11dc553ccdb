//! The dataplane Deployment `<name>-dataplane`: one Guaranteed-QoS pod (requests == limits
//! for every container), a read-only root filesystem, no privilege escalation,
//! RuntimeDefault seccomp, probes on the metrics port, and the identity of the NasVolume's
//! mode: `Posix` runs as uid 0 with exactly the capabilities per-caller identities need
//! (Pod Security Standard `baseline`), `Squash` as a non-root user with none (`restricted`).
//! Any change to its pod template (resources, image, data path) rolls the pod; strategy
//! Recreate, because the backing volume is ReadWriteOnce.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, KeyToPath,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::secret::{MOUNT_PATH as TOKEN_MOUNT, READ_TOKEN_KEY, TOKEN_KEY};
use super::service::{HTTP_PORT, METRICS_PORT, NFS_PORT, SFTP_PORT};
use super::sftp::{
    AUTHORIZED_KEYS_KEY, AUTHORIZED_KEYS_MOUNT, HOST_KEY_KEY, HOST_KEY_MOUNT,
    authorized_keys_secret, serves_sftp,
};
use super::{BuildError, Settings, capacity_bytes, identity, labels, owned_meta, selector};
use crate::crd::{Access, ClientRule, Identity, NasVolume, Protocol, Rdma, Squash, ZeroCopy};

/// Where the backing volume is mounted in the dataplane container.
pub const DATA_MOUNT: &str = "/data";
/// The unprivileged user (and group) the dataplane runs as in `Squash` mode by default.
pub const SQUASH_ID: i64 = 65532;
/// The capabilities the dataplane keeps in `Posix` mode (see the dataplane's
/// `identity::POSIX_CAPABILITIES`); all are allowed by the `baseline` Pod Security Standard.
pub const POSIX_CAPABILITIES: [&str; 6] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "SETUID",
    "SETGID",
];
/// The share root's mode on a new `Posix` share: any uid may create its files.
pub const DEFAULT_ROOT_MODE: &str = "0777";
/// Seconds the kubelet waits after SIGTERM; the dataplane drains for up to 30.
pub const GRACE_SECONDS: i64 = 35;

/// A NasVolume client rule as the dataplane's `--nfs-client` value.
pub fn nfs_client_rule(rule: &ClientRule) -> String {
    let access = match rule.access {
        Access::ReadWrite => "rw",
        Access::ReadOnly => "ro",
    };
    let squash = match rule.squash {
        Squash::Root => "root_squash",
        Squash::None => "no_root_squash",
        Squash::All => "all_squash",
    };
    format!("{},{access},{squash}", rule.cidr)
}

/// Client rules when the NasVolume lists none: every client, read-write, root kept.
pub const DEFAULT_CLIENT_RULES: [&str; 2] =
    ["0.0.0.0/0,rw,no_root_squash", "::/0,rw,no_root_squash"];

/// The uid and gid the dataplane process runs as.
pub fn process_ids(nv: &NasVolume) -> (i64, i64) {
    let root = nv.spec.share_root.clone().unwrap_or_default();
    match nv.spec.identity {
        Identity::Posix => (0, 0),
        Identity::Squash => (root.uid.unwrap_or(SQUASH_ID), root.gid.unwrap_or(SQUASH_ID)),
    }
}

/// The dataplane's identity arguments: the mode, and in `Posix` mode the share root's owner
/// and mode for a new share.
fn identity_args(nv: &NasVolume) -> Vec<String> {
    match nv.spec.identity {
        Identity::Posix => {
            let root = nv.spec.share_root.clone().unwrap_or_default();
            vec![
                "--identity".to_owned(),
                "posix".to_owned(),
                "--root-owner".to_owned(),
                format!("{}:{}", root.uid.unwrap_or(0), root.gid.unwrap_or(0)),
                "--root-mode".to_owned(),
                root.mode.unwrap_or_else(|| DEFAULT_ROOT_MODE.to_owned()),
            ]
        }
        Identity::Squash => vec!["--identity".to_owned(), "squash".to_owned()],
    }
}

/// Whether the share is served over HTTP (then the pod mounts the token Secret).
fn serves_http(nv: &NasVolume) -> bool {
    nv.spec.protocols.contains(&Protocol::Http)
}

/// The HTTP arguments: the listen address and the token files, or `off`.
fn http_args(nv: &NasVolume) -> Vec<String> {
    if !serves_http(nv) {
        return vec!["--http".to_owned(), "off".to_owned()];
    }
    let mut args = vec![
        "--http".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
        "--http-token-file".to_owned(),
        format!("{TOKEN_MOUNT}/{TOKEN_KEY}"),
        "--http-read-token-file".to_owned(),
        format!("{TOKEN_MOUNT}/{READ_TOKEN_KEY}"),
    ];
    if nv.spec.http.anonymous_read {
        args.push("--http-anonymous-read".to_owned());
    }
    args
}

/// The dataplane's command line for this NasVolume.
pub fn dataplane_args(nv: &NasVolume) -> Result<Vec<String>, BuildError> {
    let (_, name, _) = identity(nv)?;
    let mut args = vec![
        "--root".to_owned(),
        DATA_MOUNT.to_owned(),
        "--share".to_owned(),
        name,
    ];
    args.extend(http_args(nv));
    args.extend([
        // Probes use the metrics listener, so they work whichever protocols are served.
        "--metrics".to_owned(),
        format!("0.0.0.0:{METRICS_PORT}"),
        "--capacity".to_owned(),
        capacity_bytes(nv)?.to_string(),
        "--zero-copy".to_owned(),
        match nv.spec.data_path.zero_copy {
            ZeroCopy::Auto => "auto",
            ZeroCopy::Sendfile => "sendfile",
            ZeroCopy::Copy => "copy",
        }
        .to_owned(),
        "--rdma".to_owned(),
        match nv.spec.data_path.rdma {
            Rdma::Auto => "auto",
            Rdma::Disabled => "disabled",
            Rdma::Required => "required",
        }
        .to_owned(),
        "--drain-timeout".to_owned(),
        "30s".to_owned(),
        "--log-format".to_owned(),
        "json".to_owned(),
    ]);
    args.push("--nfs".to_owned());
    args.push(if nv.spec.protocols.contains(&Protocol::Nfs) {
        format!("0.0.0.0:{NFS_PORT}")
    } else {
        "off".to_owned()
    });
    let rules: Vec<String> = if nv.spec.clients.is_empty() {
        DEFAULT_CLIENT_RULES
            .iter()
            .map(|r| (*r).to_owned())
            .collect()
    } else {
        nv.spec.clients.iter().map(nfs_client_rule).collect()
    };
    for rule in rules {
        args.push("--nfs-client".to_owned());
        args.push(rule);
    }
    if serves_sftp(nv) {
        args.extend([
            "--sftp".to_owned(),
            format!("0.0.0.0:{SFTP_PORT}"),
            "--sftp-host-key".to_owned(),
            format!("{HOST_KEY_MOUNT}/{HOST_KEY_KEY}"),
            "--sftp-authorized-keys".to_owned(),
            format!("{AUTHORIZED_KEYS_MOUNT}/{AUTHORIZED_KEYS_KEY}"),
        ]);
    }
    args.extend(identity_args(nv));
    if nv.spec.read_only {
        args.push("--read-only".to_owned());
    }
    if nv.spec.cpu_pinning {
        args.push("--pin-cpus".to_owned());
    }
    Ok(args)
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The container's security context: no privilege escalation, a read-only root file
/// system, every capability dropped but those `Posix` needs.
pub fn container_security(nv: &NasVolume) -> SecurityContext {
    let (uid, gid) = process_ids(nv);
    let add = match nv.spec.identity {
        Identity::Posix => Some(POSIX_CAPABILITIES.iter().map(|c| (*c).to_owned()).collect()),
        Identity::Squash => None,
    };
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(uid != 0),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add,
        }),
        ..SecurityContext::default()
    }
}

/// The pod's security context: RuntimeDefault seccomp; in `Squash` mode the fsGroup that
/// makes the backing volume writable by the dataplane's user (changed only when the root's
/// group differs, so a large share mounts fast). `Posix` sets no fsGroup: it would give
/// every caller's file to one group.
pub fn pod_security(nv: &NasVolume) -> PodSecurityContext {
    let (uid, gid) = process_ids(nv);
    let squash = nv.spec.identity == Identity::Squash;
    PodSecurityContext {
        run_as_non_root: Some(uid != 0),
        run_as_user: Some(uid),
        run_as_group: Some(gid),
        fs_group: squash.then_some(gid),
        fs_group_change_policy: squash.then(|| "OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The Deployment for this NasVolume.
pub fn deployment(nv: &NasVolume, settings: &Settings) -> Result<Deployment, BuildError> {
    let (_, name, names) = identity(nv)?;
    let mut ports = Vec::new();
    if nv.spec.protocols.contains(&Protocol::Nfs) {
        ports.push(container_port("nfs", NFS_PORT));
    }
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA_MOUNT.into(),
        ..VolumeMount::default()
    }];
    let mut volumes = vec![Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: names.data_claim.clone(),
            read_only: Some(false),
        }),
        ..Volume::default()
    }];
    if serves_http(nv) {
        ports.push(container_port("http", HTTP_PORT));
        mounts.push(VolumeMount {
            name: "http-tokens".into(),
            mount_path: TOKEN_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
        volumes.push(Volume {
            name: "http-tokens".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names.token_secret.clone()),
                // Owner-and-group readable: the dataplane's user, or its fsGroup (Squash).
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if serves_sftp(nv) {
        ports.push(container_port("sftp", SFTP_PORT));
        let secrets = [
            (
                "sftp-host-key",
                HOST_KEY_MOUNT,
                Some(names.sftp_host_key_secret.clone()),
                HOST_KEY_KEY,
            ),
            (
                "sftp-authorized-keys",
                AUTHORIZED_KEYS_MOUNT,
                authorized_keys_secret(nv).map(str::to_owned),
                AUTHORIZED_KEYS_KEY,
            ),
        ];
        for (volume, mount, secret_name, key) in secrets {
            mounts.push(VolumeMount {
                name: volume.into(),
                mount_path: mount.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(Volume {
                name: volume.into(),
                secret: Some(SecretVolumeSource {
                    secret_name,
                    // As the token Secret: the dataplane's user, or its fsGroup (Squash).
                    default_mode: Some(0o440),
                    // Only the key the dataplane reads; a Secret without it fails the mount
                    // with a kubelet event rather than the process at start.
                    items: Some(vec![KeyToPath {
                        key: key.to_owned(),
                        path: key.to_owned(),
                        mode: None,
                    }]),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
    }
    ports.push(container_port("metrics", METRICS_PORT));
    let resources = BTreeMap::from([
        ("cpu".to_owned(), nv.spec.resources.cpu.clone()),
        ("memory".to_owned(), nv.spec.resources.memory.clone()),
    ]);
    let container = Container {
        name: "dataplane".into(),
        image: Some(
            nv.spec
                .image
                .clone()
                .unwrap_or_else(|| settings.dataplane_image.clone()),
        ),
        args: Some(dataplane_args(nv)?),
        env: Some(vec![EnvVar {
            name: "RUST_LOG".into(),
            value: Some("info".into()),
            ..EnvVar::default()
        }]),
        ports: Some(ports),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 2, 1)),
        security_context: Some(container_security(nv)),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        security_context: Some(pod_security(nv)),
        volumes: Some(volumes),
        node_selector: nv.spec.node_selector.clone(),
        tolerations: nv.spec.tolerations.clone(),
        termination_grace_period_seconds: Some(GRACE_SECONDS),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    Ok(Deployment {
        metadata: owned_meta(nv, &names.deployment)?,
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, q, volume};

    fn settings() -> Settings {
        Settings {
            dataplane_image: "zeronas/dataplane:test".into(),
        }
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    /// The chart's PodMonitor selects these pods by their labels and scrapes the port
    /// named `metrics`: renaming either here would silently stop the scrapes.
    #[test]
    fn the_charts_pod_monitor_selects_the_dataplane_pods() {
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../charts/zeronas/templates/monitoring.yaml"
        ))
        .unwrap();
        let d = deployment(&basic(), &settings()).unwrap();
        let template_labels = d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap();
        let labels = template_labels.labels.as_ref().unwrap();
        for key in ["app.kubernetes.io/name", crate::names::LABEL_MANAGED_BY] {
            let line = format!("{key}: {}", labels[key]);
            assert!(template.contains(&line), "the PodMonitor lacks {line}");
        }
        assert!(labels.contains_key(crate::names::LABEL_VOLUME));
        assert!(template.contains("__meta_kubernetes_pod_label_zeronas_io_volume"));
        assert_eq!(crate::names::LABEL_VOLUME, "zeronas.io/volume");
        let ports: Vec<_> = pod(&d).containers[0]
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        assert!(ports.contains(&"metrics".to_owned()));
        assert!(template.contains("- port: metrics"));
    }

    #[test]
    fn every_container_is_guaranteed() {
        let nv = volume("capacity: 1Gi\nresources: { cpu: '2', memory: 1Gi }\n");
        let d = deployment(&nv, &settings()).unwrap();
        for c in pod(&d)
            .containers
            .iter()
            .chain(pod(&d).init_containers.iter().flatten())
        {
            let r = c.resources.as_ref().unwrap();
            assert_eq!(
                r.requests, r.limits,
                "container {} is not Guaranteed",
                c.name
            );
            let limits = r.limits.as_ref().unwrap();
            assert_eq!((&limits["cpu"], &limits["memory"]), (&q("2"), &q("1Gi")));
        }
    }

    #[test]
    fn shape_security_and_probes() {
        let d = deployment(&basic(), &settings()).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("media-dataplane"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.strategy.as_ref().unwrap().type_.as_deref(),
            Some("Recreate")
        );
        let p = pod(&d);
        let sc = p.security_context.as_ref().unwrap();
        // Posix (the default): uid 0 with exactly six capabilities, no fsGroup.
        assert_eq!(
            (sc.run_as_non_root, sc.run_as_user, sc.fs_group),
            (Some(false), Some(0), None)
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let c = &p.containers[0];
        let csc = c.security_context.as_ref().unwrap();
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        let caps = csc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(
            caps.add.as_deref().unwrap(),
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "SETUID",
                "SETGID"
            ]
        );
        // Only capabilities the `baseline` Pod Security Standard allows.
        let baseline = [
            "AUDIT_WRITE",
            "CHOWN",
            "DAC_OVERRIDE",
            "FOWNER",
            "FSETID",
            "KILL",
            "MKNOD",
            "NET_BIND_SERVICE",
            "SETFCAP",
            "SETGID",
            "SETPCAP",
            "SETUID",
            "SYS_CHROOT",
        ];
        assert!(
            caps.add
                .iter()
                .flatten()
                .all(|c| baseline.contains(&c.as_str()))
        );
        let probe_path = |p: &Option<Probe>| p.as_ref()?.http_get.as_ref()?.path.clone();
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(c.image.as_deref(), Some("zeronas/dataplane:test"));
        assert_eq!(
            p.volumes.as_ref().unwrap()[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "media-data"
        );
        // The selector is a subset of the pod labels.
        let pod_labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .as_ref()
            .unwrap();
        for (k, v) in spec.selector.match_labels.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v));
        }
    }

    #[test]
    fn args_follow_the_spec() {
        let nv = volume(
            "capacity: 1.5Gi\nreadOnly: true\ncpuPinning: true\nresources: { cpu: '2', memory: 1Gi }\n\
             dataPath: { zeroCopy: Sendfile, rdma: Disabled }\nimage: custom:1\n",
        );
        let args = dataplane_args(&nv).unwrap().join(" ");
        assert!(args.contains("--root /data --share media"), "{args}");
        assert!(args.contains("--capacity 1610612736"), "{args}");
        assert!(
            args.contains("--zero-copy sendfile --rdma disabled"),
            "{args}"
        );
        assert!(
            args.ends_with(
                "--nfs 0.0.0.0:2049 --nfs-client 0.0.0.0/0,rw,no_root_squash \
                 --nfs-client ::/0,rw,no_root_squash --identity posix --root-owner 0:0 \
                 --root-mode 0777 --read-only --pin-cpus"
            ),
            "{args}"
        );
        let with_clients = volume(
            "capacity: 1Gi\nprotocols: [http]\nclients:\n- { cidr: 10.0.0.0/8, access: ReadOnly, squash: None }\n- { cidr: 192.168.0.0/16 }\n",
        );
        let args = dataplane_args(&with_clients).unwrap().join(" ");
        assert!(
            args.ends_with("--nfs off --nfs-client 10.0.0.0/8,ro,no_root_squash --nfs-client 192.168.0.0/16,rw,no_root_squash --identity posix --root-owner 0:0 --root-mode 0777"),
            "{args}"
        );
        let d = deployment(&nv, &settings()).unwrap();
        assert_eq!(pod(&d).containers[0].image.as_deref(), Some("custom:1"));
        assert!(
            !dataplane_args(&basic())
                .unwrap()
                .contains(&"--pin-cpus".to_owned())
        );
    }

    #[test]
    fn http_tokens_and_protocols() {
        let args = dataplane_args(&basic()).unwrap().join(" ");
        assert!(
            args.contains(
                "--http 0.0.0.0:8080 --http-token-file /etc/zeronas/http/token \
                 --http-read-token-file /etc/zeronas/http/read-token --metrics 0.0.0.0:9090"
            ),
            "{args}"
        );
        assert!(!args.contains("--http-anonymous-read"));
        let anonymous = volume("capacity: 1Gi\nhttp: { anonymousRead: true }\n");
        let args = dataplane_args(&anonymous).unwrap().join(" ");
        assert!(args.contains("--http-anonymous-read"), "{args}");
        let d = deployment(&basic(), &settings()).unwrap();
        let p = pod(&d);
        let secret = p.volumes.as_ref().unwrap()[1].secret.as_ref().unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("media-http-tokens"));
        let mount = &p.containers[0].volume_mounts.as_ref().unwrap()[1];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/zeronas/http", Some(true))
        );

        // NFS only: HTTP off, no http port, no token mount; probes still on the metrics port.
        let nfs_only = volume("capacity: 1Gi\nprotocols: [nfs]\nhttp: { anonymousRead: true }\n");
        let args = dataplane_args(&nfs_only).unwrap().join(" ");
        assert!(args.contains("--http off --metrics 0.0.0.0:9090"), "{args}");
        assert!(
            !args.contains("token") && !args.contains("anonymous"),
            "{args}"
        );
        let d = deployment(&nfs_only, &settings()).unwrap();
        let c = &pod(&d).containers[0];
        let ports: Vec<_> = c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone())
            .collect();
        assert_eq!(ports, ["nfs", "metrics"]);
        assert_eq!(pod(&d).volumes.as_ref().unwrap().len(), 1);
        for probe in [&c.liveness_probe, &c.readiness_probe] {
            let port = &probe.as_ref().unwrap().http_get.as_ref().unwrap().port;
            assert_eq!(port, &IntOrString::Int(METRICS_PORT));
        }
    }

    #[test]
    fn squash_runs_unprivileged() {
        let nv = volume("capacity: 1Gi\nidentity: Squash\n");
        let d = deployment(&nv, &settings()).unwrap();
        let p = pod(&d);
        let sc = p.security_context.as_ref().unwrap();
        assert_eq!(
            (
                sc.run_as_non_root,
                sc.run_as_user,
                sc.run_as_group,
                sc.fs_group
            ),
            (Some(true), Some(65532), Some(65532), Some(65532))
        );
        assert_eq!(sc.fs_group_change_policy.as_deref(), Some("OnRootMismatch"));
        let csc = p.containers[0].security_context.as_ref().unwrap();
        let caps = csc.capabilities.as_ref().unwrap();
        assert_eq!(
            (caps.drop.clone(), caps.add.clone()),
            (Some(vec!["ALL".to_owned()]), None)
        );
        assert_eq!(csc.run_as_non_root, Some(true));
        let args = dataplane_args(&nv).unwrap().join(" ");
        assert!(args.ends_with("--identity squash"), "{args}");
        assert!(
            !args.contains("--root-owner") && !args.contains("--root-mode"),
            "{args}"
        );
        let db = volume("capacity: 1Gi\nidentity: Squash\nshareRoot: { uid: 999, gid: 999 }\n");
        assert_eq!(process_ids(&db), (999, 999));
        let posix = volume("capacity: 1Gi\nshareRoot: { uid: 1000, gid: 100, mode: '2775' }\n");
        let args = dataplane_args(&posix).unwrap().join(" ");
        assert!(
            args.ends_with("--root-owner 1000:100 --root-mode 2775"),
            "{args}"
        );
        assert_eq!(process_ids(&posix), (0, 0));
    }
}
