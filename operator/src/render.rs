//! `zeronas-operator render`: every object the operator would apply for one NasVolume, as
//! YAML, from the same builders the controller uses. Users review or commit the output;
//! tests run the dataplane exactly as the rendered pod spec says.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
use kube::CustomResourceExt;
use kube::Resource;
use serde::Serialize;

use crate::controller::DEFAULT_MONITORING_NAMESPACE;
use crate::crd::NasVolume;
use crate::reconcile::{
    BuildError, Settings, deployment, network_policy, pvc, secret, service, share,
};

/// The uid given to a NasVolume read from a file that has none (owner references need one;
/// the apiserver assigns the real one).
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";
/// The PV's server when no `--cluster-ip` is given (the Service's ClusterIP is only known
/// once the apiserver allocated it).
pub const PLACEHOLDER_CLUSTER_IP: &str = "SERVICE-CLUSTER-IP";
/// The token values the Secret is built with before its data is dropped from the output:
/// the operator generates the real ones (random, once) when it creates the Secret, and a
/// rendered Secret must never carry a token anyone can read here.
const PLACEHOLDER_TOKEN: &str = "GENERATED-BY-THE-OPERATOR";

/// Why a NasVolume cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// Not a NasVolume document.
    #[error("not a NasVolume: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// The document is another kind.
    #[error("expected kind NasVolume (apiVersion zeronas.io/v1alpha1), found {0}")]
    WrongKind(String),
    /// The CRD's validation rules refuse it (the apiserver would too).
    #[error("invalid NasVolume: {0}")]
    Invalid(String),
    /// A builder failed.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Reads a NasVolume from YAML the way the apiserver would store it: defaults and enums
/// applied by the types, the CRD's CEL rules checked, the share root's mode parsed, the
/// namespace (when the document has none) and a placeholder uid set. (The schema's other
/// bounds, such as list lengths, are the apiserver's to check.)
pub fn parse(yaml: &str, namespace: &str) -> Result<NasVolume, RenderError> {
    let value: serde_yaml::Value = serde_yaml::from_str(yaml)?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
    let api_version = value
        .get("apiVersion")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    let crd = NasVolume::api_resource();
    if kind != crd.kind || api_version != crd.api_version {
        return Err(RenderError::WrongKind(format!("{api_version}/{kind}")));
    }
    let mut nv: NasVolume = serde_yaml::from_value(value)?;
    nv.validate_cel()
        .map_err(|e| RenderError::Invalid(e.to_string()))?;
    if let Some(mode) = nv.spec.share_root.as_ref().and_then(|r| r.mode.as_deref()) {
        let digits = mode
            .strip_prefix('0')
            .filter(|d| d.len() >= 3)
            .unwrap_or(mode);
        if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(RenderError::Invalid(format!(
                "spec.shareRoot.mode {mode:?} is not an octal mode such as 0777 or 2775"
            )));
        }
    }
    let meta = nv.meta_mut();
    if meta.namespace.is_none() {
        meta.namespace = Some(namespace.to_owned());
    }
    if meta.uid.is_none() {
        meta.uid = Some(PLACEHOLDER_UID.to_owned());
    }
    Ok(nv)
}

/// The Secret without its data: applied by hand, the dataplane refuses to start
/// (no token file) instead of accepting a token printed in a file.
fn without_data(mut secret: serde_json::Value) -> serde_json::Value {
    if let Some(object) = secret.as_object_mut() {
        object.remove("stringData");
        object.remove("data");
    }
    secret
}

/// Every object the controller applies for `nv`, in its order: the backing claim, the token
/// Secret (without its data), the Service, the NetworkPolicy (metrics open to the default
/// monitoring namespace), the dataplane Deployment, the share's PV and the consumer claim.
pub fn objects(
    nv: &NasVolume,
    settings: &Settings,
    cluster_ip: &str,
) -> Result<Vec<serde_json::Value>, RenderError> {
    fn value(o: impl Serialize) -> serde_json::Value {
        serde_json::to_value(o).unwrap_or_default()
    }
    let capacity = &nv.spec.capacity;
    let data: PersistentVolumeClaim = pvc::data_claim(nv, pvc::request_for(None, capacity, true))?;
    let svc: Service = service::service(nv)?;
    Ok(vec![
        value(data),
        without_data(value(secret::token_secret(
            nv,
            PLACEHOLDER_TOKEN,
            PLACEHOLDER_TOKEN,
        )?)),
        value(svc),
        value(network_policy::network_policy(
            nv,
            DEFAULT_MONITORING_NAMESPACE,
        )?),
        value(deployment::deployment(nv, settings)?),
        value(share::volume(nv, cluster_ip)?),
        value(share::consumer_claim(
            nv,
            pvc::request_for(None, capacity, false),
        )?),
    ])
}

/// The objects as one YAML stream, with a comment saying what it is.
pub fn to_yaml(nv: &NasVolume, objects: &[serde_json::Value]) -> String {
    let mut out = format!(
        "# Objects zeronas-operator applies (server-side apply, field manager {}) for\n\
         # NasVolume {}/{}.\n",
        crate::controller::FIELD_MANAGER,
        nv.meta().namespace.as_deref().unwrap_or_default(),
        nv.meta().name.as_deref().unwrap_or_default(),
    );
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(object).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "apiVersion: zeronas.io/v1alpha1\nkind: NasVolume\nmetadata: { name: media }\nspec: { capacity: 10Gi, identity: Squash }\n";

    fn settings() -> Settings {
        Settings {
            dataplane_image: "zeronas/dataplane:test".into(),
        }
    }

    #[test]
    fn renders_every_object_of_the_controller() {
        let nv = parse(SAMPLE, "team-a").unwrap();
        let objects = objects(&nv, &settings(), "10.0.0.7").unwrap();
        let kinds: Vec<_> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "PersistentVolumeClaim/media-data",
                "Secret/media-http-tokens",
                "Service/media",
                "NetworkPolicy/media-dataplane",
                "Deployment/media-dataplane",
                "PersistentVolume/zeronas-00000000-0000-0000-0000-000000000000",
                "PersistentVolumeClaim/media"
            ]
        );
        let deployment = &objects[4];
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(objects[5]["spec"]["nfs"]["server"], "10.0.0.7");
        assert!(
            objects[1].get("stringData").is_none() && objects[1].get("data").is_none(),
            "a rendered Secret carries no token"
        );
        assert_eq!(
            deployment["metadata"]["ownerReferences"][0]["uid"],
            PLACEHOLDER_UID
        );
        let yaml = to_yaml(&nv, &objects);
        assert_eq!(
            yaml.matches("\n---\n").count() + usize::from(yaml.starts_with("---")),
            7
        );
        assert!(yaml.starts_with("# Objects zeronas-operator applies"));
    }

    #[test]
    fn refuses_what_the_apiserver_would() {
        let bad = SAMPLE.replace(
            "identity: Squash",
            "identity: Squash, shareRoot: { uid: 0 }",
        );
        let err = parse(&bad, "d").unwrap_err().to_string();
        assert!(err.contains("must not be 0"), "{err}");
        let other = "apiVersion: v1\nkind: Pod\nmetadata: { name: p }\n";
        assert!(matches!(parse(other, "d"), Err(RenderError::WrongKind(_))));
        let bad_mode = SAMPLE.replace("identity: Squash", "shareRoot: { mode: '9' }");
        let err = parse(&bad_mode, "d").unwrap_err().to_string();
        assert!(err.contains("not an octal mode"), "{err}");
        let wrong_mode = SAMPLE.replace("Squash", "Nobody");
        assert!(matches!(
            parse(&wrong_mode, "d"),
            Err(RenderError::Parse(_))
        ));
    }
}
