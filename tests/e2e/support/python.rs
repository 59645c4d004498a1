//! Python apps for the tests: Python with venv is made present (installed from Debian's packages when missing,
//! as `postgres` does for PostgreSQL), and the apps under tests/python/ are built with `wasmcorn build python`.
//! A built component is kept under the target folder, named by a hash of everything that goes into it (the app's
//! files, the SDK, the WIT, the build command's sources and its arguments), so that reruns do not build again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Builds and installs run one at a time: each is CPU-heavy, and two builds of one app would race.
static BUILDS: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The folder of the test app `name` (tests/python/NAME).
pub(crate) fn app_dir(name: &str) -> PathBuf {
    repo().join("tests/python").join(name)
}

/// Makes sure `python3` can create virtual environments: on Debian, `apt-get install python3-venv` when not.
fn ensure_python() {
    let works = || {
        Command::new("python3")
            .args(["-c", "import venv, ensurepip"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if works() {
        return;
    }
    let update = Command::new("apt-get").arg("update").output().expect("run apt-get update");
    assert!(update.status.success(), "apt-get update failed: {}", String::from_utf8_lossy(&update.stderr));
    let install = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", "python3", "python3-venv", "python3-pip"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("run apt-get install");
    assert!(
        install.status.success(),
        "apt-get install python3-venv failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    assert!(works(), "python3 still cannot create a virtual environment");
}

/// Runs `wasmcorn build python ARGS...` with the tests' cache (which keeps the build's virtual environment).
pub(crate) fn build(args: &[&str]) -> Output {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    build_now(args)
}

/// `build`, run from the folder `from`.
pub(crate) fn build_from(from: &Path, args: &[&str]) -> Output {
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    build_command(args).current_dir(from).output().expect("run wasmcorn build python")
}

fn build_now(args: &[&str]) -> Output {
    build_command(args).output().expect("run wasmcorn build python")
}

/// `wasmcorn build python ARGS...`, once Python can make the build's virtual environment.
fn build_command(args: &[&str]) -> Command {
    ensure_python();
    let mut all = vec!["build", "python"];
    all.extend_from_slice(args);
    super::command(&all)
}

/// The component built from tests/python/APP with `args` (after `--src DIR`), built once for these inputs and
/// compiled into the tests' cache.
pub(crate) fn built(app: &str, args: &[&str]) -> String {
    let dir = app_dir(app);
    let mut hasher = Sha256::new();
    for folder in [dir.clone(), repo().join("sdk/python/wasmcorn_wsgi"), repo().join("host/src/build")] {
        hash_folder(&mut hasher, &folder);
    }
    hasher.update(fs::read(repo().join("wit/wasmcorn.wit")).expect("read the WIT"));
    for arg in args {
        hasher.update(arg.as_bytes());
        hasher.update([0]);
    }
    let key: String = hasher.finalize().iter().take(16).map(|byte| format!("{byte:02x}")).collect();
    let folder = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-guests");
    fs::create_dir_all(&folder).expect("create the folder of built Python guests");
    let output = folder.join(format!("{app}-{key}.wasm"));
    let _one_at_a_time = BUILDS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !output.exists() {
        let dir_text = dir.to_str().expect("a UTF-8 path");
        let out_text = output.to_str().expect("a UTF-8 path");
        let mut all = vec!["--src", dir_text, "-o", out_text];
        all.extend_from_slice(args);
        let result = build_now(&all);
        assert!(
            result.status.success(),
            "wasmcorn build python {all:?} failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        // Compiled into the tests' cache now, once, rather than by several tests' servers at the same time.
        let check = super::command(&["serve", out_text, "--check-config"]).output().expect("run wasmcorn serve");
        assert!(check.status.success(), "--check-config {out_text} failed: {}", String::from_utf8_lossy(&check.stderr));
    }
    output.to_str().expect("a UTF-8 path").to_string()
}

fn hash_folder(hasher: &mut Sha256, folder: &Path) {
    let mut names: Vec<PathBuf> = fs::read_dir(folder)
        .expect("list a folder of build inputs")
        .map(|entry| entry.expect("a folder entry").path())
        .filter(|path| path.is_file())
        .collect();
    names.sort();
    for path in names {
        hasher.update(path.file_name().expect("a file name").as_encoded_bytes());
        hasher.update(fs::read(&path).expect("read a build input"));
    }
}
