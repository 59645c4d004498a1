//! `deploy/container/Containerfile` and `deploy/k8s/`, as far as this machine can run them (it has no container
//! engine and no cluster): the image's command (ENTRYPOINT and CMD, read from the Containerfile) runs as the
//! image's user with its cache folder on a fresh volume whose root belongs to root, as an emptyDir's does; the
//! Deployment's grace period covers its preStop delay and wasmcorn's graceful timeout, its probes ask the
//! metrics address for /readyz and /healthz, and its container's arguments pass `--check-config`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::{recipe, replaced};
use crate::support::{Server, binary, status_field};

/// The rest of the Containerfile's first line that starts with `instruction ` (`ENV`, `USER`, ...).
fn instruction(containerfile: &str, instruction: &str) -> String {
    let prefix = format!("{instruction} ");
    let line = containerfile.lines().find_map(|line| line.strip_prefix(&prefix));
    line.unwrap_or_else(|| panic!("the Containerfile has no {instruction}")).trim().to_string()
}

/// An instruction in exec form: `["a", "b"]`.
fn exec_form(containerfile: &str, name: &str) -> Vec<String> {
    serde_json::from_str(&instruction(containerfile, name)).unwrap_or_else(|err| panic!("{name} is not [...]: {err}"))
}

#[test]
fn image_command_runs_as_its_user_with_the_cache_on_a_fresh_volume() {
    let containerfile = recipe("container/Containerfile");
    let user = instruction(&containerfile, "USER");
    let (uid, gid) = user.split_once(':').expect("USER UID:GID");
    let (uid, gid): (u32, u32) = (uid.parse().unwrap(), gid.parse().unwrap());
    let volume = exec_form(&containerfile, "VOLUME").pop().expect("a volume");
    let cache = replaced(&instruction(&containerfile, "ENV"), "WASMCORN_CACHE_DIR=", "");

    // A fresh volume as Kubernetes makes an emptyDir: root's, 0777 (setgid to the pod's fsGroup).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mounted = dir.path().join("volume");
    std::fs::create_dir(&mounted).unwrap();
    std::os::unix::fs::chown(&mounted, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&mounted, std::fs::Permissions::from_mode(0o2777)).unwrap();
    let cache = Path::new(&replaced(&cache, &volume, &mounted.display().to_string())).to_path_buf();

    let mut args = exec_form(&containerfile, "ENTRYPOINT");
    args.extend(exec_form(&containerfile, "CMD"));
    assert_eq!(args.first().map(String::as_str), Some("/usr/local/bin/wasmcorn"));
    let bind = args.iter_mut().find(|arg| *arg == "0.0.0.0:8000").expect("CMD binds 0.0.0.0:8000");
    *bind = "127.0.0.1:0".into();
    let mut command = Command::new(binary());
    command.args(&args[1..]).env("WASMCORN_CACHE_DIR", &cache).env_remove("WEB_CONCURRENCY").current_dir("/");
    command.uid(uid).gid(gid);
    let server = Server::spawn(command);
    let workers = args.iter().position(|arg| arg == "--workers").map(|at| args[at + 1].parse().unwrap());
    server.wait_for_count("Booting worker with pid", workers.unwrap_or(1));
    let response = server.get("/");
    assert_eq!((response.status, response.text().as_str()), (200, "Hello, World!"));
    assert_eq!(status_field(server.pid, "Uid:"), uid.to_string(), "the image's user");
    let artefacts: Vec<_> = std::fs::read_dir(&cache).expect("the cache folder was created").flatten().collect();
    assert!(!artefacts.is_empty(), "the compiled app is cached on the volume");
    assert!(artefacts.iter().all(|entry| entry.metadata().is_ok_and(|metadata| metadata.uid() == uid)));
}

/// The number after `key: ` on the first line of `text` that has it.
fn yaml_number(text: &str, key: &str) -> u64 {
    let prefix = format!("{key}: ");
    let value = text.lines().find_map(|line| line.trim().strip_prefix(&prefix));
    value.and_then(|value| value.trim().parse().ok()).unwrap_or_else(|| panic!("no number for {key}"))
}

/// The lines of `text` after its first line containing `marker`.
fn after<'a>(text: &'a str, marker: &str) -> impl Iterator<Item = &'a str> {
    text.lines().skip_while(move |line| !line.contains(marker)).skip(1)
}

#[test]
fn deployment_grace_period_covers_the_stop_and_probes_ask_the_metrics_address() {
    let deployment = recipe("k8s/deployment.yaml");
    let grace = yaml_number(&deployment, "terminationGracePeriodSeconds");
    let graceful: u64 = deployment
        .lines()
        .find_map(|line| line.trim().strip_prefix("- --graceful-timeout="))
        .and_then(|value| value.parse().ok())
        .expect("args: --graceful-timeout=N");
    let pre_stop = after(&deployment, "preStop:").find(|line| line.contains("command:")).expect("preStop command");
    let pre_stop: u64 = pre_stop.rsplit('"').nth(1).and_then(|seconds| seconds.parse().ok()).expect("sleep N");
    assert!(grace > graceful + pre_stop, "grace {grace} s > --graceful-timeout {graceful} s + preStop {pre_stop} s");

    assert!(deployment.contains("- --metrics-bind=0.0.0.0:9100"));
    assert!(deployment.contains("name: metrics\n              containerPort: 9100"));
    for (probe, path) in [("readinessProbe:", "/readyz"), ("livenessProbe:", "/healthz")] {
        let mut lines = after(&deployment, probe);
        assert!(lines.any(|line| line.trim() == format!("path: {path}")), "{probe} asks {path}");
        assert!(after(&deployment, probe).take(4).any(|line| line.trim() == "port: metrics"), "{probe} on metrics");
    }
    let containerfile = recipe("container/Containerfile");
    let volume = exec_form(&containerfile, "VOLUME").pop().unwrap();
    assert!(deployment.contains(&format!("mountPath: {volume}\n")), "the cache volume is mounted at {volume}");
}

#[test]
fn deployment_args_are_a_configuration_wasmcorn_accepts() {
    let deployment = recipe("k8s/deployment.yaml");
    let args: Vec<&str> = after(&deployment, "args:")
        .filter(|line| !line.trim_start().starts_with('#'))
        .map_while(|line| line.trim().strip_prefix("- "))
        .collect();
    assert_eq!(args.first(), Some(&"sample:hello"), "the app comes first: {args:?}");
    assert!(args.iter().any(|arg| arg.starts_with("--metrics-bind=")), "the probes need the metrics address: {args:?}");
    let check = crate::support::command(&["serve"]).args(&args).arg("--check-config").output().unwrap();
    assert!(check.status.success(), "{args:?}: {}", String::from_utf8_lossy(&check.stderr));
}
