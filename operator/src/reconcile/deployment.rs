//! The dataplane Deployment `<name>-dataplane`: one Guaranteed-QoS pod (requests == limits
//! for every container), non-root with a read-only root filesystem, no capabilities,
//! RuntimeDefault seccomp, probes on the metrics port. Any change to its pod template
//! (resources, image, data path) rolls the pod; strategy Recreate, because the backing
//! volume is ReadWriteOnce.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::service::{HTTP_PORT, METRICS_PORT, NFS_PORT};
use super::{BuildError, Settings, capacity_bytes, identity, labels, owned_meta, selector};
use crate::crd::{Access, ClientRule, NasVolume, Protocol, Rdma, Squash, ZeroCopy};

/// Where the backing volume is mounted in the dataplane container.
pub const DATA_MOUNT: &str = "/data";
/// The unprivileged user the dataplane runs as.
pub const RUN_AS: i64 = 65532;
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

/// The dataplane's command line for this NasVolume.
pub fn dataplane_args(nv: &NasVolume) -> Result<Vec<String>, BuildError> {
    let (_, name, _) = identity(nv)?;
    let mut args = vec![
        "--root".to_owned(),
        DATA_MOUNT.to_owned(),
        "--share".to_owned(),
        name,
        "--http".to_owned(),
        format!("0.0.0.0:{HTTP_PORT}"),
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
    ];
    args.push("--nfs".to_owned());
    args.push(if nv.spec.protocols.contains(&Protocol::Nfs) {
        format!("0.0.0.0:{NFS_PORT}")
    } else {
        "off".to_owned()
    });
    for rule in &nv.spec.clients {
        args.push("--nfs-client".to_owned());
        args.push(nfs_client_rule(rule));
    }
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

/// The Deployment for this NasVolume.
pub fn deployment(nv: &NasVolume, settings: &Settings) -> Result<Deployment, BuildError> {
    let (_, name, names) = identity(nv)?;
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
        ports: Some(vec![
            container_port("nfs", NFS_PORT),
            container_port("http", HTTP_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(resources.clone()),
            limits: Some(resources),
            ..ResourceRequirements::default()
        }),
        liveness_probe: Some(http_probe("/healthz", 10, 3)),
        readiness_probe: Some(http_probe("/readyz", 2, 1)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..PodSecurityContext::default()
        }),
        volumes: Some(vec![Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names.data_claim.clone(),
                read_only: Some(false),
            }),
            ..Volume::default()
        }]),
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
        assert_eq!(
            (sc.run_as_non_root, sc.run_as_user),
            (Some(true), Some(65532))
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let c = &p.containers[0];
        let csc = c.security_context.as_ref().unwrap();
        assert_eq!(csc.read_only_root_filesystem, Some(true));
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.as_ref().unwrap().drop,
            Some(vec!["ALL".to_owned()])
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
            args.ends_with("--nfs 0.0.0.0:2049 --read-only --pin-cpus"),
            "{args}"
        );
        let with_clients = volume(
            "capacity: 1Gi\nprotocols: [http]\nclients:\n- { cidr: 10.0.0.0/8, access: ReadOnly, squash: None }\n- { cidr: 192.168.0.0/16 }\n",
        );
        let args = dataplane_args(&with_clients).unwrap().join(" ");
        assert!(
            args.ends_with("--nfs off --nfs-client 10.0.0.0/8,ro,no_root_squash --nfs-client 192.168.0.0/16,rw,root_squash"),
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
}
