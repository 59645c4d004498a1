//! A private nginx for a test: Debian's `nginx` package, installed when missing (`support::debian`), run in
//! the foreground as one process (`daemon off; master_process off;`) with its own prefix folder,
//! pid file, logs and temporary folders, on free loopback ports, around a site configuration the test gives
//! (`deploy/nginx/wasmcorn.conf`, rewritten). It is stopped by pid when the value is dropped.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::PATIENCE;
use super::debian::installed;

const NGINX: &str = "/usr/sbin/nginx";

pub(crate) struct Nginx {
    child: Child,
    folder: PathBuf,
}

impl Nginx {
    /// Starts nginx with `site` (server and upstream blocks) inside its `http {}` block, its files under
    /// `folder`, and waits until it accepts connections on `port` (one of the site's `listen` ports).
    pub(crate) fn start(folder: &Path, site: &str, port: u16) -> Nginx {
        installed(NGINX, "nginx");
        let prefix = folder.display();
        fs::write(folder.join("site.conf"), site).expect("write the site configuration");
        let main = format!(
            "daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log {prefix}/access.log;\n  client_body_temp_path {prefix}/client_body;\n  \
             proxy_temp_path {prefix}/proxy;\n  fastcgi_temp_path {prefix}/fastcgi;\n  \
             uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n  include {prefix}/site.conf;\n}}\n"
        );
        fs::write(folder.join("nginx.conf"), main).expect("write nginx.conf");
        let check = Command::new(NGINX).args(nginx_args(folder)).arg("-t").output().expect("run nginx -t");
        assert!(
            check.status.success(),
            "nginx -t refuses the configuration:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(NGINX)
            .args(nginx_args(folder))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx { child, folder: folder.to_path_buf() };
        nginx.wait_until_listening(port);
        nginx
    }

    /// nginx's error log so far (upstream connection failures are logged there).
    pub(crate) fn error_log(&self) -> String {
        fs::read_to_string(self.folder.join("error.log")).unwrap_or_default()
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            assert!(Instant::now() < deadline, "nginx did not start:\n{}", self.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT is nginx's graceful stop; SIGKILL if it does not end in time.
        super::stop_child(&mut self.child, Signal::SIGQUIT);
        if std::thread::panicking() {
            eprintln!("--- nginx error log ---\n{}\n--- end of nginx error log ---", self.error_log());
        }
    }
}

/// `-p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log`: nothing of the system's nginx is read or written
/// (`-e` also covers the log nginx opens before it reads its configuration).
fn nginx_args(folder: &Path) -> Vec<String> {
    let prefix = folder.display().to_string();
    vec![
        "-p".into(),
        format!("{prefix}/"),
        "-c".into(),
        format!("{prefix}/nginx.conf"),
        "-e".into(),
        format!("{prefix}/error.log"),
    ]
}

/// A loopback port nothing listens on now.
pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}
