//! The Linux kernel NFS client against the dataplane, run exactly as the operator's pod spec
//! says (`make kernel-client`, part of `make test`).
//!
//! For each identity mode a NasVolume (`e2e/kernel/nasvolume-*.yaml`) is rendered with
//! `zeronas-operator render`; the dataplane then runs with the rendered container's
//! arguments, user, groups, capabilities and no_new_privs (through `setpriv`, checked in
//! `/proc/PID/status`), on a folder prepared as the kubelet would (fsGroup). Debian's kernel
//! (`e2e/kernel/prepare.sh`) boots in QEMU with a busybox initramfs, mounts each share with
//! the rendered PV's mount options through QEMU's user-mode network (the guest's 10.0.2.2 is
//! this machine's loopback) and runs `e2e/kernel/workload.sh`. Every step prints one line;
//! the test fails on any failed or missing step, checks what the guest wrote on disk here,
//! and restarts a dataplane (SIGKILL) while the guest's 64 MiB write is arriving. Then the CSI
//! node plugin runs in the guest (`e2e/kernel/csi.sh`): kubelet's publish, stats and
//! unpublish calls, made with the `csi_node_call` example, mount the posix share with the
//! kernel client; the dataplane is stopped (SIGSTOP) to show a stale server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::serde::Deserialize;
use zeronas_e2e::security::{RunAs, apply_fs_group};

/// How long the guest may take (TCG, no KVM: a few minutes at most).
const GUEST_DEADLINE: Duration = Duration::from_secs(900);
/// Size of the file the guest copies while its dataplane is restarted (workload.sh).
const RESTART_FILE: u64 = 64 << 20;
/// Bytes on the server's disk before the restart.
const RESTART_AFTER: u64 = 4 << 20;
/// Steps each user runs from steps.sh (`main` and `read-big` phases).
const USER_STEPS: usize = 20;
/// Steps the workload runs as root around them, per mode (mount, df, database, parallel,
/// many files, restart, quota, umount).
const ROOT_STEPS: usize = 8;
/// Steps of the CSI node plugin in the guest (csi.sh).
const CSI_STEPS: usize = 8;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn binary(name: &str) -> PathBuf {
    let env = format!("ZERONAS_{}_BIN", name.to_uppercase());
    std::env::var_os(env)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/debug").join(format!("zeronas-{name}")))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One share: the rendered pod spec, and its dataplane process.
struct Share {
    mode: &'static str,
    dir: PathBuf,
    run_as: RunAs,
    command: Vec<String>,
    mount_options: String,
    nfs_port: u16,
    capacity: u64,
    log: PathBuf,
    child: Option<Child>,
}

/// Renders `e2e/kernel/nasvolume-MODE.yaml` and prepares its share: the rendered Deployment's
/// dataplane container and the PV's mount options, with the container's `/data` mapped to a
/// folder here and its NFS port to a free loopback port.
fn render(mode: &'static str, work: &Path) -> Share {
    let manifest = repo().join(format!("e2e/kernel/nasvolume-{mode}.yaml"));
    let output = Command::new(binary("operator"))
        .args(["render", "-f"])
        .arg(&manifest)
        .args(["--namespace", "kernel", "--cluster-ip", "10.0.0.10"])
        .output()
        .expect("zeronas-operator runs (make builds it)");
    assert!(
        output.status.success(),
        "render failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("YAML is UTF-8");
    let mut deployment = None;
    let mut volume = None;
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_json::Value =
            serde_json::Value::deserialize(document).expect("rendered YAML parses");
        match value["kind"].as_str() {
            Some("Deployment") => deployment = serde_json::from_value::<Deployment>(value).ok(),
            Some("PersistentVolume") => {
                volume = serde_json::from_value::<PersistentVolume>(value).ok()
            }
            _ => {}
        }
    }
    let deployment = deployment.expect("render prints the Deployment");
    let volume = volume.expect("render prints the PV");
    let pod = deployment
        .spec
        .and_then(|s| s.template.spec)
        .expect("a pod template");
    let container = pod.containers[0].clone();
    let run_as = RunAs::for_container(&pod, &container).expect("a usable security context");

    // A fresh volume, as a local-path provisioner makes it (root, 0755), then what the
    // kubelet does for the pod's fsGroup.
    let dir = work.join(format!("share-{mode}"));
    std::fs::create_dir_all(&dir).expect("share folder");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    if let Some(gid) = run_as.fs_group {
        apply_fs_group(&dir, gid, run_as.fs_group_on_root_mismatch).expect("fsGroup");
    }

    let nfs_port = free_port();
    let mut args = Vec::new();
    let mut capacity = 0;
    let container_args = container.args.clone().unwrap_or_default();
    for (i, arg) in container_args.iter().enumerate() {
        if i > 0 && container_args[i - 1] == "--capacity" {
            capacity = arg.parse().expect("--capacity in bytes");
        }
        args.push(match arg.as_str() {
            "/data" => dir.display().to_string(),
            "0.0.0.0:2049" => format!("127.0.0.1:{nfs_port}"),
            a if a.starts_with("0.0.0.0:") => "127.0.0.1:0".to_owned(),
            a => a.to_owned(),
        });
    }
    let mut command = vec!["setpriv".to_owned()];
    command.extend(run_as.setpriv_args());
    command.push("--".to_owned());
    command.push(binary("dataplane").display().to_string());
    command.extend(args);
    let mount_options = volume
        .spec
        .and_then(|s| s.mount_options)
        .expect("the PV has mount options")
        .iter()
        .map(|o| match o.as_str() {
            "port=2049" => format!("port={nfs_port}"),
            "mountport=2049" => format!("mountport={nfs_port}"),
            o => o.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",");
    Share {
        mode,
        log: work.join(format!("dataplane-{mode}.log")),
        dir,
        run_as,
        command,
        mount_options,
        nfs_port,
        capacity,
        child: None,
    }
}

impl Share {
    /// Starts the dataplane and waits for its `listening` line; checks the process's
    /// identity against the pod spec.
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let mut child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("setpriv and the dataplane start");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let pid = child.id();
        self.child = Some(child);
        let listening: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "{} dataplane did not start: {line:?}\n{}",
                self.mode,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        });
        assert_eq!(listening["identity"], self.mode, "{listening}");
        self.check_identity(pid);
    }

    /// `/proc/PID/status` shows the uid, gid, groups, capabilities and no_new_privs of the
    /// rendered security context.
    fn check_identity(&self, pid: u32) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let r = &self.run_as;
        assert_eq!(
            field("Uid"),
            vec![r.uid.to_string(); 4],
            "{}: uid",
            self.mode
        );
        assert_eq!(
            field("Gid"),
            vec![r.gid.to_string(); 4],
            "{}: gid",
            self.mode
        );
        let groups: Vec<String> = r.groups.iter().map(u32::to_string).collect();
        assert_eq!(field("Groups"), groups, "{}: groups", self.mode);
        let bounding = r.bounding_mask().expect("known capabilities");
        let effective = if r.uid == 0 { bounding } else { 0 };
        let eff = u64::from_str_radix(&field("CapEff")[0], 16).expect("CapEff");
        let bnd = u64::from_str_radix(&field("CapBnd")[0], 16).expect("CapBnd");
        assert_eq!(
            eff, effective,
            "{}: effective capabilities {eff:x}",
            self.mode
        );
        assert_eq!(bnd, bounding, "{}: bounding set {bnd:x}", self.mode);
        assert_eq!(
            field("NoNewPrivs"),
            [if r.no_new_privs { "1" } else { "0" }]
        );
        println!(
            "{}: dataplane pid {pid} uid {} gid {} groups {:?} CapEff {eff:016x} NoNewPrivs {}",
            self.mode, r.uid, r.gid, r.groups, r.no_new_privs
        );
    }

    /// SIGSTOP (`stop`) or SIGCONT: a server that stops answering, and comes back.
    fn pause(&self, stop: bool) {
        let child = self.child.as_ref().expect("a running dataplane");
        let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a pid");
        let signal = if stop {
            rustix::process::Signal::STOP
        } else {
            rustix::process::Signal::CONT
        };
        rustix::process::kill_process(pid, signal).expect("signal the dataplane");
    }

    /// SIGKILL (a crash, as a node losing the pod would cause), then waits.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.kill();
    }
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("md5sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Every file under `dir` with its owner uid.
fn owners(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if meta.is_dir() {
                    pending.push(path.clone());
                }
                out.push((path, meta.uid()));
            }
        }
    }
    out
}

#[test]
fn kernel_client_workload_in_both_identity_modes() {
    let started = Instant::now();
    let work = repo().join("target/kernel-client");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work folder");
    // Non-root dataplanes must reach their share.
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let prepare = Command::new(repo().join("e2e/kernel/prepare.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("prepare.sh runs");
    assert!(prepare.status.success(), "prepare.sh failed");
    let kernel = PathBuf::from(String::from_utf8_lossy(&prepare.stdout).trim());
    println!(
        "kernel: {} ({:.1} s)",
        kernel.display(),
        started.elapsed().as_secs_f64()
    );

    let mut shares: Vec<Share> = ["posix", "squash"]
        .into_iter()
        .map(|mode| render(mode, &work))
        .collect();
    let mut config = String::from("MODES=\"posix squash\"\n");
    for share in &mut shares {
        share.start();
        let owner = if share.mode == "squash" {
            share.run_as.uid.to_string()
        } else {
            String::new()
        };
        config.push_str(&format!(
            "OPTS_{m}='{}'\nOWNER_{m}='{owner}'\nCAPACITY_KB_{m}={}\n",
            share.mount_options,
            share.capacity / 1024,
            m = share.mode
        ));
        println!("{}: mount options {}", share.mode, share.mount_options);
    }
    let posix = shares
        .iter()
        .find(|s| s.mode == "posix")
        .expect("a posix share");
    config.push_str(&format!("CSI_PORT={}\n", posix.nfs_port));
    let config_file = work.join("config.sh");
    std::fs::write(&config_file, &config).expect("config.sh");

    // The CSI node plugin and the client that plays kubelet, with the libraries they link.
    let mut extra_roots = Vec::new();
    for (name, path) in [
        ("zeronas-csi", binary("csi")),
        (
            "csi_node_call",
            repo().join("target/debug/examples/csi_node_call"),
        ),
    ] {
        let root = work.join(format!("rootfs-{name}"));
        let status = Command::new(repo().join("images/rootfs.sh"))
            .arg(&path)
            .arg(&root)
            .status()
            .expect("rootfs.sh runs");
        assert!(status.success(), "rootfs.sh {} failed", path.display());
        extra_roots.push(root.display().to_string());
    }

    let initrd = work.join("initrd.gz");
    let kernel_dir = repo().join("e2e/kernel");
    let status = Command::new(kernel_dir.join("initramfs.sh"))
        .env("EXTRA_ROOTS", extra_roots.join(" "))
        .arg(&kernel)
        .arg(&initrd)
        .arg(kernel_dir.join("workload.sh"))
        .arg(kernel_dir.join("steps.sh"))
        .arg(kernel_dir.join("lib.sh"))
        .arg(kernel_dir.join("csi.sh"))
        .arg(&config_file)
        .status()
        .expect("initramfs.sh runs");
    assert!(status.success(), "initramfs.sh failed");

    // The guest: TCG (a KVM guest hangs at boot on these machines), user-mode network.
    let boot = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-m", "768", "-smp", "2"])
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .args(["-nographic", "-no-reboot"])
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 starts");
    let stdout = qemu.stdout.take().expect("guest console");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut console = std::fs::File::create(work.join("console.log")).expect("console log");
    let mut lines = Vec::new();
    let mut restarts = Vec::new();
    let deadline = Instant::now() + GUEST_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line.trim_end_matches('\r').to_owned(),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = qemu.kill();
                panic!(
                    "the guest did not finish in {GUEST_DEADLINE:?}; see {}",
                    work.join("console.log").display()
                );
            }
        };
        let _ = writeln!(console, "{line}");
        if let Some(mode) = line.strip_prefix("ZN-RESTART ") {
            let share = shares
                .iter_mut()
                .find(|s| s.mode == mode.trim())
                .expect("a known mode");
            // Kill once the copy's data is arriving, and before it has all arrived: a
            // restart before or after the write would prove nothing.
            let file = share.dir.join("restart.bin");
            let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let waiting = Instant::now();
            while size() < RESTART_AFTER && waiting.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(2));
            }
            let written = size();
            let at = Instant::now();
            share.kill();
            assert!(
                (RESTART_AFTER..RESTART_FILE).contains(&written),
                "{mode}: the restart came with {written} of {RESTART_FILE} bytes on disk: not during the write"
            );
            std::thread::sleep(Duration::from_millis(500));
            share.start();
            println!(
                "{mode}: dataplane killed with {written} of {RESTART_FILE} bytes on disk, restarted in {:.1} s",
                at.elapsed().as_secs_f64()
            );
            restarts.push(format!(
                "{mode} at {:.0} of 64 MiB",
                written as f64 / 1048576.0
            ));
        }
        if line == "ZN-CSI-STOP" || line == "ZN-CSI-CONT" {
            let posix = shares
                .iter()
                .find(|s| s.mode == "posix")
                .expect("a posix share");
            posix.pause(line == "ZN-CSI-STOP");
        }
        if line.starts_with("ZN-") {
            println!("{line}");
        }
        lines.push(line);
    }
    let _ = qemu.wait();
    let guest_seconds = boot.elapsed().as_secs_f64();

    // Every step ran and passed.
    let steps: Vec<Vec<&str>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ZN-STEP "))
        .map(|l| l.splitn(5, ' ').collect())
        .collect();
    let failed: Vec<String> = steps
        .iter()
        .filter(|s| s.get(3) != Some(&"ok"))
        .map(|s| s.join(" "))
        .collect();
    assert!(
        lines.iter().any(|l| l.starts_with("ZN-END")),
        "the workload did not finish; see {}",
        work.join("console.log").display()
    );
    assert!(failed.is_empty(), "failed steps:\n{}", failed.join("\n"));
    let expected = 2 * (2 * USER_STEPS + ROOT_STEPS) + 1 + CSI_STEPS;
    assert_eq!(
        steps.len(),
        expected,
        "steps reported (one is missing or extra)"
    );

    // What the guest wrote, byte for byte, as stored here.
    let md5s: BTreeMap<(String, String), String> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ZN-MD5 "))
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            Some((
                (p.next()?.to_owned(), p.next()?.to_owned()),
                p.next()?.to_owned(),
            ))
        })
        .collect();
    let big32 = &md5s[&("-".to_owned(), "big32".to_owned())];
    for share in &shares {
        for user in ["root", "alice"] {
            assert_eq!(
                &md5_of(&share.dir.join(user).join("big32")),
                big32,
                "{} {user}/big32 on disk",
                share.mode
            );
        }
        assert_eq!(
            md5_of(&share.dir.join("restart.bin")),
            md5s[&(share.mode.to_owned(), "restart.bin".to_owned())],
            "{}: restart.bin on disk",
            share.mode
        );
        let files = owners(&share.dir);
        if share.mode == "posix" {
            // Each writer owns what it wrote.
            let owner = |rel: &str| {
                std::fs::symlink_metadata(share.dir.join(rel))
                    .map(|m| m.uid())
                    .ok()
            };
            assert_eq!(owner("alice/b.txt"), Some(1000));
            assert_eq!(owner("root/b.txt"), Some(0));
            assert_eq!(owner("pgdata/PG_VERSION"), Some(999));
            assert_eq!(owner("alice/many/file-700"), Some(1000));
            assert_eq!(
                std::fs::read_to_string(share.dir.join("csi/hello.txt")).ok(),
                Some("through csi\n".to_owned()),
                "the file written through the CSI node plugin's mount"
            );
        } else {
            let foreign: Vec<_> = files
                .iter()
                .filter(|(_, uid)| *uid != share.run_as.uid)
                .collect();
            assert!(
                foreign.is_empty(),
                "squash: files not owned by {}: {foreign:?}",
                share.run_as.uid
            );
        }
    }
    let per_mode: Vec<String> = lines
        .iter()
        .filter(|l| {
            l.starts_with("ZN-MODE ") || l.starts_with("ZN-END ") || l.starts_with("ZN-BOOTED ")
        })
        .cloned()
        .collect();
    println!(
        "kernel client: {} steps passed ({} per mode, {CSI_STEPS} of the CSI node plugin); restarts {}; guest {guest_seconds:.1} s (uptime marks: {}); whole test {:.1} s",
        steps.len(),
        (steps.len() - CSI_STEPS) / 2,
        restarts.join(", "),
        per_mode.join(", "),
        started.elapsed().as_secs_f64()
    );
}
