//! The detached process that removes a cluster its owner left behind.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::host::{path_str, runuser};
use super::{PgCluster, PgTempError};

impl PgCluster {
    /// A detached `sh` loop that waits for this process to exit, then stops the cluster and removes its
    /// directory. In its own process group, so a Ctrl-C aimed at us does not kill it too.
    pub(super) fn spawn_watchdog(&self) -> Result<(), PgTempError> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = if self.run_as_postgres {
            let runuser = runuser().unwrap_or_else(|| PathBuf::from("runuser"));
            format!(
                "{} -u postgres -- {} -D {} stop -m immediate",
                sh_quote(path_str(&runuser)),
                sh_quote(path_str(&pg_ctl)),
                sh_quote(path_str(&self.data_dir))
            )
        } else {
            format!(
                "{} -D {} stop -m immediate",
                sh_quote(path_str(&pg_ctl)),
                sh_quote(path_str(&self.data_dir))
            )
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
            pid = std::process::id(),
            dir = sh_quote(path_str(&self.base_dir)),
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn()
            .map_err(|source| PgTempError::Io {
                what: "spawning the cluster watchdog".into(),
                source,
            })?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    pub(super) fn kill_watchdog(&self) {
        if let Some(mut child) = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
