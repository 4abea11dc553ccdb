//! The NetworkPolicy `<name>-dataplane` in front of the dataplane pod (Ingress only): the NFS
//! port from the `clients` networks (kernel mounts come from the nodes) and the pods chosen
//! by `nfsClientPodSelector`; the HTTP port from the allowed namespaces (default: the
//! NasVolume's own); the SFTP port from `sftp.allowedNamespaces` (default: the NasVolume's
//! own); the metrics port from the NasVolume's namespace and the monitoring
//! namespace. A port of a protocol the share does not serve is not opened.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::service::{HTTP_PORT, METRICS_PORT, NFS_PORT, SFTP_PORT};
use super::{BuildError, identity, owned_meta, selector};
use crate::crd::{NasVolume, Protocol};

/// The label every namespace carries with its own name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Networks allowed to NFS when the NasVolume lists no `clients` (as the dataplane's
/// default rules: everyone).
pub const DEFAULT_NFS_NETWORKS: [&str; 2] = ["0.0.0.0/0", "::/0"];

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        end_port: None,
    }
}

/// A peer: every pod in the named namespaces.
fn namespaces(names: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: NAMESPACE_NAME_LABEL.into(),
                operator: "In".into(),
                values: Some(names),
            }]),
            match_labels: None,
        }),
        ..NetworkPolicyPeer::default()
    }
}

fn unique(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

/// The NetworkPolicy for this NasVolume; `monitoring_namespace` may scrape the metrics port.
pub fn network_policy(
    nv: &NasVolume,
    monitoring_namespace: &str,
) -> Result<NetworkPolicy, BuildError> {
    let (namespace, name, names) = identity(nv)?;
    let mut ingress = Vec::new();
    if nv.spec.protocols.contains(&Protocol::Nfs) {
        let networks: Vec<String> = if nv.spec.clients.is_empty() {
            DEFAULT_NFS_NETWORKS
                .iter()
                .map(|c| (*c).to_owned())
                .collect()
        } else {
            nv.spec.clients.iter().map(|c| c.cidr.clone()).collect()
        };
        let mut from: Vec<NetworkPolicyPeer> = unique(networks)
            .into_iter()
            .map(|cidr| NetworkPolicyPeer {
                ip_block: Some(IPBlock { cidr, except: None }),
                ..NetworkPolicyPeer::default()
            })
            .collect();
        if let Some(pods) = &nv.spec.nfs_client_pod_selector {
            from.push(NetworkPolicyPeer {
                pod_selector: Some(pods.clone()),
                ..NetworkPolicyPeer::default()
            });
        }
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(NFS_PORT)]),
            from: Some(from),
        });
    }
    if nv.spec.protocols.contains(&Protocol::Http) {
        let allowed = if nv.spec.http.allowed_namespaces.is_empty() {
            vec![namespace.clone()]
        } else {
            nv.spec.http.allowed_namespaces.clone()
        };
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(HTTP_PORT)]),
            from: Some(vec![namespaces(unique(allowed))]),
        });
    }
    if nv.spec.protocols.contains(&Protocol::Sftp) {
        let allowed = match nv.spec.sftp.as_ref() {
            Some(sftp) if !sftp.allowed_namespaces.is_empty() => sftp.allowed_namespaces.clone(),
            _ => vec![namespace.clone()],
        };
        ingress.push(NetworkPolicyIngressRule {
            ports: Some(vec![tcp(SFTP_PORT)]),
            from: Some(vec![namespaces(unique(allowed))]),
        });
    }
    ingress.push(NetworkPolicyIngressRule {
        ports: Some(vec![tcp(METRICS_PORT)]),
        from: Some(vec![namespaces(unique(vec![
            namespace,
            monitoring_namespace.to_owned(),
        ]))]),
    });
    Ok(NetworkPolicy {
        metadata: owned_meta(nv, &names.network_policy)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(&name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            egress: None,
        }),
    })
}

/// The ports a policy opens and, per port, its peers in a short text form (`ip:CIDR`,
/// `pods:{..}`, `ns:[..]`): what the tests and the e2e scenario compare.
pub fn summary(policy: &NetworkPolicy) -> BTreeMap<i32, Vec<String>> {
    let mut out = BTreeMap::new();
    for rule in policy.spec.iter().flat_map(|s| s.ingress.iter().flatten()) {
        let peers: Vec<String> = rule
            .from
            .iter()
            .flatten()
            .map(|p| {
                if let Some(block) = &p.ip_block {
                    format!("ip:{}", block.cidr)
                } else if let Some(ns) = &p.namespace_selector {
                    let values = ns
                        .match_expressions
                        .iter()
                        .flatten()
                        .flat_map(|e| e.values.iter().flatten().cloned())
                        .collect::<Vec<_>>();
                    format!("ns:[{}]", values.join(","))
                } else if let Some(pods) = &p.pod_selector {
                    format!("pods:{:?}", pods.match_labels.clone().unwrap_or_default())
                } else {
                    "?".into()
                }
            })
            .collect();
        for port in rule.ports.iter().flatten() {
            if let Some(IntOrString::Int(n)) = port.port {
                out.insert(n, peers.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::test_support::{basic, volume};

    #[test]
    fn default_policy_selects_the_dataplane_and_opens_three_ports() {
        let p = network_policy(&basic(), "monitoring").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("media-dataplane"));
        assert!(p.metadata.owner_references.is_some());
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
        let pods = spec
            .pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(pods["zeronas.io/volume"], "media");
        assert_eq!(pods["app.kubernetes.io/name"], "zeronas-dataplane");
        let s = summary(&p);
        assert_eq!(s[&2049], vec!["ip:0.0.0.0/0", "ip:::/0"]);
        assert_eq!(s[&8080], vec!["ns:[team-a]"]);
        assert_eq!(s[&9090], vec!["ns:[monitoring,team-a]"]);
    }

    #[test]
    fn clients_pods_and_namespaces_from_the_spec() {
        let nv = volume(
            "capacity: 1Gi\nclients: [{ cidr: 10.0.0.0/8 }, { cidr: 10.0.0.0/8, access: ReadOnly }, { cidr: 'fd00::/8' }]\n\
             nfsClientPodSelector: { matchLabels: { app: backup } }\n\
             http: { allowedNamespaces: [web, team-a] }\n",
        );
        let s = summary(&network_policy(&nv, "team-a").unwrap());
        assert_eq!(
            s[&2049],
            vec!["ip:10.0.0.0/8", "ip:fd00::/8", "pods:{\"app\": \"backup\"}"]
        );
        assert_eq!(s[&8080], vec!["ns:[team-a,web]"]);
        assert_eq!(s[&9090], vec!["ns:[team-a]"], "no duplicate namespace");
    }

    #[test]
    fn unserved_protocols_open_no_port() {
        let http_only = volume("capacity: 1Gi\nprotocols: [http]\n");
        let s = summary(&network_policy(&http_only, "monitoring").unwrap());
        assert_eq!(s.keys().copied().collect::<Vec<_>>(), vec![8080, 9090]);
        let nfs_only = volume("capacity: 1Gi\nprotocols: [nfs]\n");
        let s = summary(&network_policy(&nfs_only, "monitoring").unwrap());
        assert_eq!(s.keys().copied().collect::<Vec<_>>(), vec![2049, 9090]);
    }
}
