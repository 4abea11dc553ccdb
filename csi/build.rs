//! Compiles the CSI specification's `csi.proto` into the gRPC types and services.
//!
//! The proto is not kept in this repository: it is read from the Go module
//! `github.com/container-storage-interface/spec` (the spec's own distribution), found by
//! `ZERONAS_CSI_PROTO` (a path to csi.proto) or downloaded once into the Go module cache with
//! `go mod download`. `protox` parses it in Rust, so no `protoc` is needed.

use std::path::PathBuf;
use std::process::Command;

/// The CSI spec version compiled in: v1.12, the last with `VolumeCondition` in
/// NodeGetVolumeStats, which kubelet (spec v1.9 in Kubernetes 1.34) reads to mark a volume
/// abnormal; v1.13 removed it. The wire format is the same for the sidecars and csi-sanity,
/// which use v1.13.
const SPEC: &str = "github.com/container-storage-interface/spec@v1.12.0";

fn proto_path() -> Result<PathBuf, String> {
    println!("cargo:rerun-if-env-changed=ZERONAS_CSI_PROTO");
    if let Some(path) = std::env::var_os("ZERONAS_CSI_PROTO") {
        return Ok(PathBuf::from(path));
    }
    println!("cargo:rerun-if-env-changed=GO");
    // As the Makefile finds it: $GO, else `go` on the PATH, else Go's default install path.
    let candidates: Vec<String> = std::env::var("GO")
        .into_iter()
        .chain(["go".to_owned(), "/usr/local/go/bin/go".to_owned()])
        .collect();
    let out_dir = std::env::var("OUT_DIR").map_err(|e| e.to_string())?;
    let mut last_error = String::new();
    let mut output = None;
    for go in &candidates {
        match Command::new(go)
            .args(["mod", "download", "-json", SPEC])
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .current_dir(&out_dir)
            .output()
        {
            Ok(out) => {
                output = Some((go.clone(), out));
                break;
            }
            Err(e) => last_error = format!("{go}: {e}"),
        }
    }
    let (go, out) = output.ok_or_else(|| {
        format!("running `go mod download {SPEC}` (install Go, or set ZERONAS_CSI_PROTO to a csi.proto): {last_error}")
    })?;
    if !out.status.success() {
        return Err(format!(
            "`{go} mod download {SPEC}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // The JSON has one "Dir" field; a tiny scan avoids a JSON dependency in the build script.
    let dir = text
        .split("\"Dir\": \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or_else(|| format!("no Dir in `go mod download` output: {text}"))?;
    Ok(PathBuf::from(dir).join("csi.proto"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = proto_path()?;
    println!("cargo:rerun-if-changed={}", proto.display());
    let include = proto
        .parent()
        .ok_or("csi.proto has no folder")?
        .to_path_buf();
    let descriptors = protox::compile([&proto], [&include])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
