//! A throwaway PostgreSQL cluster per test: `initdb` in a temporary
//! directory, the server on a free loopback port, run as an unprivileged
//! user when the tests run as root (PostgreSQL refuses root). Stopped when
//! dropped. Built from the system's PostgreSQL binaries: `./scripts/test`
//! installs them; without them this panics, naming what is missing.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Who runs the server (`None`: the current user).
    user: Option<&'static str>,
    port: u16,
}

/// The directory holding `pg_ctl`: on the `PATH`, or Debian's
/// `/usr/lib/postgresql/<version>/bin` (newest first).
#[allow(clippy::disallowed_methods, reason = "finding programs on PATH")]
fn binaries() -> PathBuf {
    let on_path = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .find(|dir| dir.join("pg_ctl").is_file() && dir.join("initdb").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("pg_ctl").is_file())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in \
             /usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install \
             postgresql); ./scripts/test does it when run as root"
        )
    })
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

fn check(what: &str, output: Output) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Cluster {
    /// A new cluster, started.
    pub fn start() -> Self {
        let cluster = Self::init();
        cluster.start_server();
        cluster
    }

    /// A new cluster where only `postgres` is trusted: every other role
    /// logs in with its password (SCRAM-SHA-256), as in production.
    pub fn start_with_passwords() -> Self {
        let cluster = Self::init();
        std::fs::write(
            cluster.data().join("pg_hba.conf"),
            "local all postgres trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .unwrap();
        cluster.start_server();
        cluster
    }

    /// A new cluster that takes TLS, its certificate (for `127.0.0.1`)
    /// issued by a throwaway CA; started. Returns it and the CA's
    /// certificate file.
    pub fn start_with_tls() -> (Self, PathBuf) {
        let cluster = Self::init();
        let data = cluster.data();
        // As the server's user, so that its key is its own (mode 0600).
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        check(
            "openssl (CA)",
            cluster
                .as_user(Path::new("openssl"))
                .current_dir(&data)
                .args([
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=approval test CA",
                ])
                .args(ec)
                .args(["-keyout", "ca.key", "-out", "ca.crt"])
                .output()
                .unwrap(),
        );
        check(
            "openssl (server)",
            cluster
                .as_user(Path::new("openssl"))
                .current_dir(&data)
                .args([
                    "req", "-x509", "-CA", "ca.crt", "-CAkey", "ca.key", "-days", "2",
                ])
                .args(["-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .args(["-addext", "basicConstraints=critical,CA:FALSE"])
                .args(ec)
                .args(["-keyout", "server.key", "-out", "server.crt"])
                .output()
                .unwrap(),
        );
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(
            &mut conf,
            b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n",
        )
        .unwrap();
        cluster.start_server();
        (cluster, data.join("ca.crt"))
    }

    /// Makes the data directory; the server is not started.
    fn init() -> Self {
        let bin = binaries();
        let dir = tempfile::tempdir().unwrap();
        let user = running_as_root().then_some("nobody");
        if let Some(user) = user {
            check(
                "chown",
                Command::new("chown")
                    .arg(user)
                    .arg(dir.path())
                    .output()
                    .unwrap(),
            );
        }
        let cluster = Self {
            dir,
            bin,
            user,
            port: 0,
        };
        let data = cluster.data();
        check(
            "initdb",
            cluster
                .command("initdb")
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data)
                .output()
                .unwrap(),
        );
        let mut cluster = cluster;
        cluster.port = free_port();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` from the PostgreSQL binaries, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        self.as_user(&self.bin.join(program))
    }

    /// `path` run as the cluster's user, in its directory.
    fn as_user(&self, path: &Path) -> Command {
        let mut command = match self.user {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        command.current_dir(self.dir.path());
        command
    }

    fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        let started = self
            .command("pg_ctl")
            .args(["-w", "-t", "60", "-D"])
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .args(["-o", &options, "start"])
            .output()
            .unwrap();
        if !started.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "pg_ctl start failed: {}\n{log}",
                String::from_utf8_lossy(&started.stderr)
            );
        }
    }

    /// The connection URL (trust authentication on loopback).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The database, as the crate connects to it.
    #[allow(dead_code, reason = "not every test that shares this module uses it")]
    pub fn database(&self) -> approval_postgres::Database {
        approval_postgres::Database::new(&self.url()).unwrap()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `fast` (clean) or `immediate` (as a crash).
    pub fn stop(&self, mode: &str) {
        check(
            "pg_ctl stop",
            self.command("pg_ctl")
                .args(["-w", "-D"])
                .arg(self.data())
                .args(["-m", mode, "stop"])
                .output()
                .unwrap(),
        );
    }

    /// Starts the server again, on the same port.
    pub fn restart(&self) {
        self.start_server();
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stopped = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
        match stopped {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr)),
            Err(e) => eprintln!("pg_ctl stop: {e}"),
        }
    }
}
