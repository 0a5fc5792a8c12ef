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
        cluster.start_server();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` from the PostgreSQL binaries, as the cluster's user.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
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
        let _ = self
            .command("pg_ctl")
            .args(["-D"])
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
