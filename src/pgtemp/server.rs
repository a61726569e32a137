//! Running the server binaries: `initdb` (or a copy of its cached result), `pg_ctl` start and stop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::host::{free_port, path_str, runuser};
use super::{PgCluster, PgTempError};

impl PgCluster {
    /// `pg_ctl start` on a free port. The port is free when we look, but another process may take it
    /// before the server binds it (test binaries start clusters in parallel under nextest): retry on a
    /// fresh port.
    pub(super) fn start_server(&mut self) -> Result<(), PgTempError> {
        let mut last_err = None;
        for _ in 0..5 {
            self.port = free_port().map_err(|source| PgTempError::Io {
                what: "finding a free loopback port".into(),
                source,
            })?;
            let server_opts = format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c max_connections=300 -c shared_buffers=32MB",
                self.port,
                path_str(&self.socket_dir)
            );
            let log = self.base_dir.join("server.log");
            match self.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&self.data_dir),
                    "-l",
                    path_str(&log),
                    "-o",
                    &server_opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// Runs one of the server binaries (as `postgres` when we are root) and waits for it.
    pub(super) fn run(&self, program: &str, args: &[&str]) -> Result<(), PgTempError> {
        run_server_bin(
            &self.bin_dir,
            self.run_as_postgres,
            &self.base_dir,
            program,
            args,
        )
    }

    /// Fills `data_dir` with a copy of an `initdb` result cached next to the clusters (made on first use),
    /// which is much cheaper than running `initdb` each time. Returns the cache used, or `None` (and
    /// nothing left behind) if it cannot be made or copied: the caller runs `initdb` itself.
    pub(super) fn copy_cached_data_dir(
        &self,
        parent: &Path,
        owner: Option<(u32, u32)>,
    ) -> Option<PathBuf> {
        let cache = parent.join(format!("vyx-pgtemp-initdb-{}", self.initdb_cache_key()));
        let cached_data = cache.join("data");
        if !cached_data.join("PG_VERSION").is_file() && !self.build_initdb_cache(&cache, owner) {
            return None;
        }
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&cached_data)
            .arg(&self.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !copied {
            let _ = std::fs::remove_dir_all(&self.data_dir);
            return None;
        }
        Some(cache)
    }

    /// Runs `initdb` into a private directory, then renames it into place (atomic: concurrent test
    /// binaries either see the whole cache or none of it).
    fn build_initdb_cache(&self, cache: &Path, owner: Option<(u32, u32)>) -> bool {
        let tmp = cache.with_extension(format!(
            "tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let built = std::fs::create_dir(&tmp).is_ok()
            && owner.is_none_or(|(uid, gid)| {
                std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).is_ok()
            })
            && run_server_bin(
                &self.bin_dir,
                self.run_as_postgres,
                &tmp,
                "initdb",
                &initdb_args(&tmp.join("data")),
            )
            .is_ok()
            && std::fs::rename(&tmp, cache).is_ok();
        if !built {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        cache.join("data").join("PG_VERSION").is_file()
    }

    /// Changes whenever the binaries or our `initdb` arguments do, so a stale cache is never used.
    fn initdb_cache_key(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        initdb_args(Path::new("")).hash(&mut h);
        self.bin_dir.hash(&mut h);
        self.run_as_postgres.hash(&mut h);
        if let Ok(m) = std::fs::metadata(self.bin_dir.join("initdb")) {
            (m.len(), m.mtime(), m.mtime_nsec(), m.ino()).hash(&mut h);
        }
        format!("{:016x}", h.finish())
    }
}

/// Runs one of the server binaries (as `postgres` when `as_postgres`) in `cwd` and waits for it. On
/// failure the error holds its output and the tail of `cwd/server.log`, if any.
fn run_server_bin(
    bin_dir: &Path,
    as_postgres: bool,
    cwd: &Path,
    program: &str,
    args: &[&str],
) -> Result<(), PgTempError> {
    let out = server_command(bin_dir, program, as_postgres)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PgTempError::Io {
            what: format!("running {program}"),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        output.push('\n');
        output.push_str(stdout.trim());
    }
    if let Ok(log) = std::fs::read_to_string(cwd.join("server.log")) {
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        output.push_str("\nserver log (last lines):\n");
        for l in tail.into_iter().rev() {
            output.push_str(l);
            output.push('\n');
        }
    }
    Err(PgTempError::Command {
        command: format!("{program} ({})", out.status),
        output,
    })
}

pub(super) fn stop_and_remove(bin_dir: &Path, data_dir: &Path, base_dir: &Path, as_postgres: bool) {
    if data_dir.join("postmaster.pid").exists() {
        let _ = server_command(bin_dir, "pg_ctl", as_postgres)
            .args(["-D", path_str(data_dir), "stop", "-m", "immediate", "-w"])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(base_dir);
}

fn server_command(bin_dir: &Path, program: &str, as_postgres: bool) -> Command {
    let exe = bin_dir.join(program);
    let mut cmd = if as_postgres {
        let mut c = Command::new(runuser().unwrap_or_else(|| PathBuf::from("runuser")));
        c.args(["-u", "postgres", "--"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    // The caller's PG* settings must not leak into the throwaway cluster.
    for var in [
        "PGDATA",
        "PGPORT",
        "PGHOST",
        "PGUSER",
        "PGDATABASE",
        "PGOPTIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub(super) fn initdb_args(data_dir: &Path) -> Vec<&str> {
    vec![
        "-D",
        path_str(data_dir),
        "-U",
        "postgres",
        "-A",
        "trust",
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
}
