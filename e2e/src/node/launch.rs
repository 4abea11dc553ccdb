//! Pure pieces of starting a container as a local process: which binary an image maps to,
//! how its arguments and environment are rewritten for a pod running on the host.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

/// The repository part of an image reference: `reg:5000/a/b:tag` → `reg:5000/a/b`
/// (a digest `@sha256:…` is dropped too).
pub fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// The local binary for `image`, from `images` (repository → binary).
pub fn binary_for<'a>(images: &'a BTreeMap<String, PathBuf>, image: &str) -> Option<&'a Path> {
    images.get(image_repository(image)).map(PathBuf::as_path)
}

/// Rewrites one container argument for a process on the host: a listen address on all
/// interfaces (`0.0.0.0:PORT`) becomes the pod IP, so pods never collide on a port and
/// listen only on their own loopback address; a path under a volume's `mountPath` becomes
/// the folder that volume maps to (also behind a `unix://` scheme, as CSI endpoints are
/// written). Mounts are (mountPath, host folder), longest path first.
pub fn rewrite_arg(arg: &str, ip: Ipv4Addr, mounts: &[(String, PathBuf)]) -> String {
    let arg = arg.replace("0.0.0.0:", &format!("{ip}:"));
    // A path can be the whole argument or the value of `--flag=PATH`.
    let (mut prefix, mut value) = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with('-') => (format!("{flag}="), value.to_owned()),
        _ => (String::new(), arg.clone()),
    };
    if let Some(path) = value.strip_prefix("unix://") {
        prefix.push_str("unix://");
        value = path.to_owned();
    }
    for (mount_path, host) in mounts {
        let mount_path = mount_path.trim_end_matches('/');
        if value == mount_path {
            return format!("{prefix}{}", host.display());
        }
        if let Some(rest) = value.strip_prefix(&format!("{mount_path}/")) {
            return format!("{prefix}{}", host.join(rest).display());
        }
    }
    arg
}

/// The values of the downward-API fields the node agent resolves.
pub fn field_value(pod: &Pod, ip: Ipv4Addr, field_path: &str) -> Option<String> {
    let spec = pod.spec.as_ref();
    match field_path {
        "metadata.name" => pod.metadata.name.clone(),
        "metadata.namespace" => pod.metadata.namespace.clone(),
        "metadata.uid" => pod.metadata.uid.clone(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()),
        "status.podIP" => Some(ip.to_string()),
        "status.hostIP" => Some("127.0.0.1".to_owned()),
        _ => None,
    }
}

/// The container's environment: literal values and downward-API fields. Anything else
/// (Secrets, ConfigMaps, resource fields) is an error: the project's pods do not use it.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, None) => String::new(),
            (None, Some(from)) => {
                let field = from
                    .field_ref
                    .as_ref()
                    .ok_or_else(|| format!("env {}: only fieldRef is supported", var.name))?;
                field_value(pod, ip, &field.field_path).ok_or_else(|| {
                    format!("env {}: unsupported field {}", var.name, field.field_path)
                })?
            }
        };
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// A kubeconfig that authenticates with a service-account token, like the token a kubelet
/// mounts into a pod. The process finds it through `KUBECONFIG` (the in-cluster token path
/// is fixed and cannot be mapped without a mount namespace).
pub fn token_kubeconfig(server: &str, ca_file: &Path, namespace: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{ server: \"{server}\", certificate-authority: \"{}\" }}\nusers:\n- name: pod\n  user: {{ token: \"{token}\" }}\ncontexts:\n- name: pod\n  context: {{ cluster: e2e, user: pod, namespace: \"{namespace}\" }}\ncurrent-context: pod\n",
        ca_file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec};

    #[test]
    fn image_repositories() {
        assert_eq!(
            image_repository("zeronas/dataplane:0.1.0"),
            "zeronas/dataplane"
        );
        assert_eq!(image_repository("zeronas/dataplane"), "zeronas/dataplane");
        assert_eq!(image_repository("reg:5000/a/b:tag"), "reg:5000/a/b");
        assert_eq!(image_repository("reg:5000/a/b"), "reg:5000/a/b");
        assert_eq!(image_repository("a/b:1@sha256:00"), "a/b");
        let images = BTreeMap::from([("zeronas/operator".to_owned(), PathBuf::from("/bin/op"))]);
        assert_eq!(
            binary_for(&images, "zeronas/operator:e2e"),
            Some(Path::new("/bin/op"))
        );
        assert_eq!(binary_for(&images, "nginx:1"), None);
    }

    #[test]
    fn arguments_are_rewritten_for_the_host() {
        let ip = Ipv4Addr::new(127, 0, 9, 2);
        let mounts = vec![("/data".to_owned(), PathBuf::from("/tmp/pv-1"))];
        let r = |a: &str| rewrite_arg(a, ip, &mounts);
        assert_eq!(r("0.0.0.0:8080"), "127.0.9.2:8080");
        assert_eq!(r("--listen=0.0.0.0:8080"), "--listen=127.0.9.2:8080");
        assert_eq!(r("127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(r("/data"), "/tmp/pv-1");
        assert_eq!(r("/data/x/y"), "/tmp/pv-1/x/y");
        assert_eq!(r("--root=/data"), "--root=/tmp/pv-1");
        assert_eq!(r("/database"), "/database");
        assert_eq!(
            r("--endpoint=unix:///data/csi.sock"),
            "--endpoint=unix:///tmp/pv-1/csi.sock"
        );
        assert_eq!(r("media"), "media");
    }

    #[test]
    fn environment_resolves_downward_api_fields() {
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec::default()),
            ..Default::default()
        };
        let field = |path: &str| EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let container = Container {
            env: Some(vec![
                EnvVar {
                    name: "A".into(),
                    value: Some("1".into()),
                    ..Default::default()
                },
                EnvVar {
                    name: "NS".into(),
                    value_from: Some(field("metadata.namespace")),
                    ..Default::default()
                },
                EnvVar {
                    name: "IP".into(),
                    value_from: Some(field("status.podIP")),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let ip = Ipv4Addr::new(127, 0, 9, 3);
        assert_eq!(
            container_env(&pod, &container, ip).unwrap(),
            vec![
                ("A".to_owned(), "1".to_owned()),
                ("NS".to_owned(), "ns".to_owned()),
                ("IP".to_owned(), "127.0.9.3".to_owned())
            ]
        );
        let bad = Container {
            env: Some(vec![EnvVar {
                name: "X".into(),
                value_from: Some(field("metadata.labels")),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(
            container_env(&pod, &bad, ip)
                .unwrap_err()
                .contains("metadata.labels")
        );
        let kc = token_kubeconfig("https://127.0.0.1:1", Path::new("/ca.crt"), "ns", "tok");
        assert!(
            kc.contains("token: \"tok\"") && kc.contains("/ca.crt"),
            "{kc}"
        );
    }
}
