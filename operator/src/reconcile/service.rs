//! The Service `<name>` in front of the dataplane. Its ClusterIP goes into the PV, so the
//! operator never sets or changes it: server-side apply leaves the allocated IP alone.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{BuildError, identity, owned_meta, selector};
use crate::crd::{NasVolume, Protocol};

/// NFS port (MOUNT shares it).
pub const NFS_PORT: i32 = 2049;
/// HTTP file API port.
pub const HTTP_PORT: i32 = 8080;
/// SFTP port.
pub const SFTP_PORT: i32 = 2222;
/// Metrics and probes port.
pub const METRICS_PORT: i32 = 9090;

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The ClusterIP Service with ports nfs 2049, http 8080 and sftp 2222 (each only when the
/// share is served over that protocol) and metrics 9090.
pub fn service(nv: &NasVolume) -> Result<Service, BuildError> {
    let (_, name, names) = identity(nv)?;
    let mut ports = Vec::new();
    if nv.spec.protocols.contains(&Protocol::Nfs) {
        ports.push(port("nfs", NFS_PORT));
    }
    if nv.spec.protocols.contains(&Protocol::Http) {
        ports.push(port("http", HTTP_PORT));
    }
    if nv.spec.protocols.contains(&Protocol::Sftp) {
        ports.push(port("sftp", SFTP_PORT));
    }
    ports.push(port("metrics", METRICS_PORT));
    Ok(Service {
        metadata: owned_meta(nv, &names.service)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(&name)),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, volume};

    #[test]
    fn ports_and_selector_no_cluster_ip() {
        let svc = service(&basic()).unwrap();
        assert_eq!(svc.metadata.name.as_deref(), Some("media"));
        let spec = svc.spec.unwrap();
        assert_eq!(
            spec.cluster_ip, None,
            "the allocated IP must never be overwritten"
        );
        let ports: Vec<(String, i32)> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("nfs".into(), 2049),
                ("http".into(), 8080),
                ("metrics".into(), 9090)
            ]
        );
        assert_eq!(spec.selector.unwrap()["zeronas.io/volume"], "media");
    }

    #[test]
    fn only_served_protocols_get_a_port() {
        let names = |yaml: &str| -> Vec<String> {
            service(&volume(yaml))
                .unwrap()
                .spec
                .unwrap()
                .ports
                .unwrap()
                .into_iter()
                .filter_map(|p| p.name)
                .collect()
        };
        assert_eq!(
            names("capacity: 1Gi\nprotocols: [nfs]\n"),
            ["nfs", "metrics"]
        );
        assert_eq!(
            names("capacity: 1Gi\nprotocols: [http]\n"),
            ["http", "metrics"]
        );
    }
}
