//! The README's curl examples, run as written against a fresh dataplane.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The shell lines of the README's first ```sh block under "## HTTP API".
fn readme_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let api = readme
        .split("## HTTP API")
        .nth(1)
        .expect("an HTTP API section");
    let block = api
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn readme_curl_examples_work_as_written() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is required (make deps installs it)");
    }
    let examples = readme_examples();
    assert!(
        examples.len() >= 10,
        "expected the README's examples, found {examples:?}"
    );

    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zeronas-dataplane"))
        .arg("--root")
        .arg(root.path())
        .args(["--http", "127.0.0.1:0", "--nfs", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = v["http"].as_str().unwrap().to_owned();

    // Run from the repository root, where README.md and Makefile exist, as a reader would.
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = examples.join("\n").replace("localhost:8080", &addr);
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo)
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    assert!(
        out.status.success(),
        "README examples failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\"entries\""),
        "listing output missing: {stdout}"
    );
    assert!(
        stdout.contains("zeronas_http_requests_total"),
        "metrics output missing"
    );
    assert!(
        common_nothing_left(root.path()),
        "the examples should leave the share empty"
    );
}

fn common_nothing_left(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}
