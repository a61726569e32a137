//! What this machine provides: the server binaries, the `postgres` user, a directory, a port.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `$VYX_PGTEMP_DIR`, else `/dev/shm` if it has at least 1 GiB free (containers often give it 64 MiB),
/// else the system temp dir.
pub(super) fn default_parent_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VYX_PGTEMP_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && free_kib(shm).is_some_and(|kib| kib >= 1024 * 1024) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// Free space under `dir`, from `df` (std has no statvfs).
fn free_kib(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()
}

pub(super) fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// uid and gid of the `postgres` user, from /etc/passwd.
pub(super) fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut f = line.split(':');
        if f.next()? != "postgres" {
            return None;
        }
        let _password = f.next()?;
        Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
    })
}

/// A directory holding both `initdb` and `pg_ctl`: `$VYX_PG_BIN`, then `$PATH`, then the newest
/// `/usr/lib/postgresql/*/bin` (Debian keeps the server binaries off `$PATH`).
pub(super) fn find_bin_dir() -> Option<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("VYX_PG_BIN") {
        let dir = PathBuf::from(dir);
        return has_both(&dir).then_some(dir);
    }
    if let Some(initdb) = find_in_path("initdb") {
        // Resolve symlinks so pg_ctl finds `postgres` next to it.
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        if let Some(dir) = real.parent().filter(|d| has_both(d)) {
            return Some(dir.to_path_buf());
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    versions.pop().map(|(_, d)| d)
}

/// util-linux's `runuser`, which lives in sbin (often off a non-root `$PATH`).
pub(super) fn runuser() -> Option<PathBuf> {
    find_in_path("runuser").or_else(|| {
        ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

pub(super) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Our paths are built from the temp dir and ASCII names; a non-UTF-8 temp dir would be unusual enough
/// to fail on (as an empty argument that the command rejects).
pub(super) fn path_str(p: &Path) -> &str {
    p.to_str().unwrap_or("")
}
