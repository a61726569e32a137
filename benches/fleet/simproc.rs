//! The Fly simulator in a child process, so the daemon's CPU time and peak RSS (measured on this
//! process) do not include the simulator's. Protocol on the child's stdin/stdout, one line each:
//! parent sends the `SimConfig` as JSON; child answers `VYX_SIM_URL=<base url>`; then the parent
//! may send `limits <RateLimitConfig json>` or `timings <Timings json>`, each answered `VYX_SIM_OK`. EOF on
//! stdin stops the child.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use vyx_fleet::sim::{CallRecord, RateLimitConfig, Sim, SimConfig, Timings};

const URL_PREFIX: &str = "VYX_SIM_URL=";
const ACK: &str = "VYX_SIM_OK";

/// How to start the child: the bench binary with `--sim-child`, or a test binary with its own entry.
#[derive(Clone, Debug)]
pub struct Launcher {
    pub exe: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Launcher {
    pub fn this_binary() -> Launcher {
        Launcher {
            exe: std::env::current_exe().expect("current exe"),
            args: vec!["--sim-child".into()],
            env: vec![],
        }
    }
}

pub struct SimProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub base_url: String,
    http: reqwest::Client,
}

impl SimProc {
    pub fn start(l: &Launcher, cfg: &SimConfig) -> Result<SimProc, String> {
        let mut child = Command::new(&l.exe)
            .args(&l.args)
            .envs(l.env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the simulator process: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut p = SimProc {
            child,
            stdin,
            stdout,
            base_url: String::new(),
            http: reqwest::Client::new(),
        };
        p.send(&serde_json::to_string(cfg).map_err(|e| e.to_string())?)?;
        let line = p.read_until(URL_PREFIX)?;
        p.base_url = line[URL_PREFIX.len()..].trim().to_string();
        Ok(p)
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let w = self.stdin.as_mut().ok_or("simulator stdin closed")?;
        writeln!(w, "{line}")
            .and_then(|_| w.flush())
            .map_err(|e| format!("talking to the simulator: {e}"))
    }

    /// The line holding `marker`, from the marker on. Other lines (a test harness's chatter, which
    /// may also share the marker's line) are skipped.
    fn read_until(&mut self, marker: &str) -> Result<String, String> {
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .map_err(|e| format!("reading from the simulator: {e}"))?;
            if n == 0 {
                return Err("the simulator process exited".into());
            }
            if let Some(at) = line.find(marker) {
                return Ok(line[at..].to_string());
            }
        }
    }

    pub fn set_limits(&mut self, l: &RateLimitConfig) -> Result<(), String> {
        self.send(&format!("limits {}", serde_json::to_string(l).unwrap()))?;
        self.read_until(ACK).map(|_| ())
    }

    pub fn set_timings(&mut self, t: &Timings) -> Result<(), String> {
        self.send(&format!("timings {}", serde_json::to_string(t).unwrap()))?;
        self.read_until(ACK).map(|_| ())
    }

    pub async fn calls(&self) -> Vec<CallRecord> {
        let url = format!("{}/_sim/calls", self.base_url);
        match self.http.get(url).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => vec![],
        }
    }

    /// Requests served so far by the apps' own `/health` endpoints (direct probes, not Fly API).
    pub async fn health_hits(&self) -> u64 {
        let url = format!("{}/_sim/health_hits", self.base_url);
        match self.http.get(url).send().await {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["hits"].as_u64())
                .unwrap_or(0),
            Err(_) => 0,
        }
    }

    pub async fn clear_calls(&self) {
        let _ = self
            .http
            .delete(format!("{}/_sim/calls", self.base_url))
            .send()
            .await;
    }

    pub fn stop(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Only our own child, by its handle.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The child side: serve until stdin closes.
pub fn child_main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let Some(first) = rx.recv().await else { return };
        let cfg: SimConfig = serde_json::from_str(&first).expect("SimConfig JSON");
        let sim = Sim::start("127.0.0.1:0".parse().unwrap(), cfg)
            .await
            .expect("simulator binds loopback");
        println!("{URL_PREFIX}{}", sim.base_url());
        while let Some(line) = rx.recv().await {
            let (cmd, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match cmd {
                "limits" => sim.set_rate_limits(serde_json::from_str(arg).expect("limits JSON")),
                "timings" => sim.set_timings(serde_json::from_str(arg).expect("timings JSON")),
                _ => {}
            }
            println!("{ACK}");
        }
        sim.shutdown().await;
    });
}
