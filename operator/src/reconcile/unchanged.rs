//! Write skipping: whether the object the builders describe is already what the cluster holds,
//! so that a reconcile of an unchanged NasVolume writes nothing.
//!
//! Two checks, because each alone misses a case:
//! - every field the desired object sets has that value in the live object (the apiserver
//!   adds defaults and status, so the live object is a superset): catches drift, a field
//!   someone changed by hand;
//! - the live object carries [`ANNOTATION_APPLIED`], a hash of the desired object as last
//!   applied: catches a field the operator stopped setting (server-side apply removes it,
//!   the superset check cannot see that it should go).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::quantity;

/// Annotation on every applied object: a hash of what the operator applied.
pub const ANNOTATION_APPLIED: &str = "zeronas.io/applied-hash";

/// Hashes `desired` (FNV-1a over its JSON: stable across builds and Rust versions, so an
/// operator upgrade re-applies only objects whose description really changed).
pub fn applied_hash<K: Serialize>(desired: &K) -> Result<String, serde_json::Error> {
    let bytes = serde_json::to_vec(desired)?;
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("{hash:016x}"))
}

/// Sets [`ANNOTATION_APPLIED`] to `hash` (computed before the annotation was added, so the
/// hash never covers itself).
pub fn stamp(annotations: &mut Option<BTreeMap<String, String>>, hash: String) {
    annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(ANNOTATION_APPLIED.to_owned(), hash);
}

/// Why an apply is needed, or `None` when the live object already matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The live object was applied from another description (or before hashes existed).
    Description,
    /// A field the operator sets differs in the live object: the JSON path of the first.
    Field(String),
}

/// Compares the `desired` object (already stamped) with the `live` one.
pub fn difference(desired: &Value, live: &Value) -> Option<Difference> {
    let hash = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(ANNOTATION_APPLIED))
            .cloned()
    };
    if hash(desired).is_none() || hash(desired) != hash(live) {
        return Some(Difference::Description);
    }
    first_missing(desired, live, &mut String::new()).map(Difference::Field)
}

/// The path of the first field of `desired` that `live` lacks or holds differently.
fn first_missing(desired: &Value, live: &Value, path: &mut String) -> Option<String> {
    match (desired, live) {
        (Value::Object(want), Value::Object(have)) => want.iter().find_map(|(key, value)| {
            let len = path.len();
            path.push('/');
            path.push_str(key);
            let found = match have.get(key) {
                Some(present) => first_missing(value, present, path),
                None if is_empty(value) => None,
                None => Some(path.clone()),
            };
            path.truncate(len);
            found
        }),
        // Lists are compared element by element and must have the same length: a list the
        // operator sets (ports, containers, args) is the operator's alone.
        (Value::Array(want), Value::Array(have)) => {
            if want.len() != have.len() {
                return Some(path.clone());
            }
            want.iter().zip(have).enumerate().find_map(|(i, (w, h))| {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                let found = first_missing(w, h, path);
                path.truncate(len);
                found
            })
        }
        (Value::String(want), Value::String(have))
            if want != have && is_quantity_path(path) && same_quantity(want, have) =>
        {
            None
        }
        (want, have) if want == have => None,
        (want, Value::Null) if is_empty(want) => None,
        _ => Some(path.clone()),
    }
}

/// The apiserver omits what Go's `omitempty` drops: nulls, empty lists and maps, and the
/// zero values `""`, `false` and `0` of plain (non-pointer) fields. Setting one of those is
/// not a difference from its absence.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether `path` holds a quantity: a resource request or limit, or a capacity.
fn is_quantity_path(path: &str) -> bool {
    ["/requests/", "/limits/", "/capacity/"]
        .iter()
        .any(|part| path.contains(part))
}

/// The apiserver writes quantities in canonical form (`1536Mi` for `1.5Gi`): equal amounts,
/// exactly, are the same value.
fn same_quantity(a: &str, b: &str) -> bool {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    quantity::same_amount(&Quantity(a.to_owned()), &Quantity(b.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stamped(mut object: Value) -> Value {
        let hash = applied_hash(&object).unwrap();
        object["metadata"]["annotations"][ANNOTATION_APPLIED] = json!(hash);
        object
    }

    #[test]
    fn a_live_superset_with_the_same_hash_is_unchanged() {
        let desired = stamped(json!({
            "metadata": { "name": "media", "labels": { "a": "b" } },
            "spec": {
                "ports": [{ "name": "nfs", "port": 2049 }], "args": [], "capacity": { "storage": "1.5Gi" },
                "storageClassName": "", "readOnly": false, "replicas": 0,
            },
        }));
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["labels"]["other"] = json!("x");
        live["spec"]["ports"][0]["protocol"] = json!("TCP");
        live["spec"]["args"] = Value::Null;
        live["spec"]["capacity"]["storage"] = json!("1536Mi");
        live["status"] = json!({ "phase": "Bound" });
        assert_eq!(difference(&desired, &live), None);
        // Only at quantity paths, and exactly: a CPU limit edited within one core shows, and
        // so does an argument that reads like a number.
        let desired = stamped(json!({ "spec": { "limits": { "cpu": "1" }, "args": ["0755"] } }));
        let mut live = desired.clone();
        live["spec"]["limits"]["cpu"] = json!("100m");
        assert_eq!(
            difference(&desired, &live),
            Some(Difference::Field("/spec/limits/cpu".into()))
        );
        let mut live = desired.clone();
        live["spec"]["limits"]["cpu"] = json!("1000m");
        live["spec"]["args"][0] = json!("755");
        assert_eq!(
            difference(&desired, &live),
            Some(Difference::Field("/spec/args/0".into()))
        );
    }

    #[test]
    fn drift_and_old_descriptions_are_differences() {
        let desired = stamped(json!({
            "metadata": { "name": "media" },
            "spec": { "ports": [{ "name": "nfs", "port": 2049 }], "replicas": 1 },
        }));
        let mut drifted = desired.clone();
        drifted["spec"]["ports"][0]["port"] = json!(2050);
        assert_eq!(
            difference(&desired, &drifted),
            Some(Difference::Field("/spec/ports/0/port".into()))
        );
        let mut extra_port = desired.clone();
        extra_port["spec"]["ports"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "http", "port": 8080 }));
        assert_eq!(
            difference(&desired, &extra_port),
            Some(Difference::Field("/spec/ports".into()))
        );
        let mut removed = desired.clone();
        removed["spec"].as_object_mut().unwrap().remove("replicas");
        assert_eq!(
            difference(&desired, &removed),
            Some(Difference::Field("/spec/replicas".into()))
        );
        // A field the operator no longer sets is still on the live object: only the hash
        // tells that the description changed.
        let mut old = desired.clone();
        old["metadata"]["annotations"][ANNOTATION_APPLIED] = json!("0");
        old["spec"]["nodeSelector"] = json!({ "disk": "ssd" });
        assert_eq!(difference(&desired, &old), Some(Difference::Description));
        let mut unstamped = desired.clone();
        unstamped["metadata"]["annotations"] = Value::Null;
        assert_eq!(
            difference(&desired, &unstamped),
            Some(Difference::Description)
        );
    }

    #[test]
    fn the_hash_is_stable_and_covers_every_field() {
        let a = json!({ "spec": { "replicas": 1 } });
        assert_eq!(applied_hash(&a).unwrap(), applied_hash(&a.clone()).unwrap());
        assert_ne!(
            applied_hash(&a).unwrap(),
            applied_hash(&json!({ "spec": { "replicas": 2 } })).unwrap()
        );
        // Pinned: a change of the hash function re-applies every object of every cluster.
        assert_eq!(applied_hash(&json!({})).unwrap(), "08f44b07b5901a25");
    }
}
