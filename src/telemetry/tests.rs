use std::sync::{Arc, Mutex};

use super::*;

/// An in-memory `MakeWriter`.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Buf {
    type Writer = Buf;
    fn make_writer(&'a self) -> Buf {
        self.clone()
    }
}

impl Buf {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn parse(line: &str) -> Map<String, Value> {
    assert!(line.starts_with('{'), "{line:?}");
    assert!(!line.contains('\x1b'), "ANSI in {line:?}");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn json_lines_flatten_span_and_event_fields() {
    let buf = Buf::default();
    tracing::subscriber::with_default(json_subscriber(buf.clone()), || {
        let pass = tracing::info_span!("pass", reconcile_id = 42u64);
        let _p = pass.enter();
        let user = tracing::info_span!("user", user_id = "u-1", app = "vyx-user-abcdefgh");
        let _u = user.enter();
        tracing::info!(
            action = "provision",
            attempt = 2,
            ok = true,
            "starting\nstep"
        );
    });
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let obj = parse(&lines[0]);
    assert_eq!(obj["level"], "INFO");
    assert_eq!(obj["message"], "starting\nstep");
    assert_eq!(obj["reconcile_id"], 42);
    assert_eq!(obj["user_id"], "u-1");
    assert_eq!(obj["app"], "vyx-user-abcdefgh");
    assert_eq!(obj["action"], "provision");
    assert_eq!(obj["attempt"], 2);
    assert_eq!(obj["ok"], true);
    assert_eq!(obj["span"], "user");
    assert_eq!(obj["target"], module_path!());
    assert!(obj["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn fields_recorded_later_and_collisions() {
    let buf = Buf::default();
    tracing::subscriber::with_default(json_subscriber(buf.clone()), || {
        let span = tracing::info_span!("pass", reconcile_id = tracing::field::Empty);
        span.record("reconcile_id", 7);
        let _g = span.enter();
        tracing::warn!(level = "mine", target_app = "x", "collide");
    });
    let obj = parse(&buf.lines()[0]);
    assert_eq!(obj["reconcile_id"], 7);
    assert_eq!(obj["level"], "WARN");
    assert_eq!(obj["level_"], "mine");
    assert_eq!(obj["target_app"], "x");
}

#[test]
fn secrets_and_errors_stay_on_one_line() {
    let buf = Buf::default();
    let secret = crate::secret::Secret::new("fm2_TOPSECRET");
    let err = std::io::Error::other("boom\nsecond line");
    tracing::subscriber::with_default(json_subscriber(buf.clone()), || {
        tracing::error!(token = %secret, dbg = ?secret, error = &err as &dyn std::error::Error, "failed");
    });
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(!lines[0].contains("TOPSECRET"), "{}", lines[0]);
    let obj = parse(&lines[0]);
    assert_eq!(obj["token"], "[redacted]");
    assert_eq!(obj["error"], "boom\nsecond line");
}

#[test]
fn panics_become_one_json_line() {
    install_panic_hook();
    let buf = Buf::default();
    let sub = json_subscriber(buf.clone());
    let dispatch = tracing::Dispatch::new(sub);
    let handle = std::thread::spawn(move || {
        let _d = tracing::dispatcher::set_default(&dispatch);
        let span = tracing::info_span!("pass", reconcile_id = 9);
        let _g = span.enter();
        panic!("invariant broken:\nline two");
    });
    assert!(handle.join().is_err());
    let lines = buf.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let obj = parse(&lines[0]);
    assert_eq!(obj["level"], "ERROR");
    assert_eq!(obj["target"], "panic");
    assert_eq!(obj["panic_message"], "invariant broken:\nline two");
    assert!(obj["panic_location"].as_str().unwrap().contains(file!()));
    assert_eq!(obj["reconcile_id"], 9);
}

/// Run by [`real_stdout_is_json_lines`] in a child process, where installing the global
/// subscriber cannot disturb other tests.
#[test]
#[ignore = "child half of real_stdout_is_json_lines"]
fn json_stdout_child() {
    assert_eq!(std::env::var("VYX_TELEMETRY_CHILD").as_deref(), Ok("1"));
    try_init(LogFormat::Json).expect("first init installs");
    assert!(matches!(
        try_init(LogFormat::Pretty),
        Err(TelemetryError::AlreadyInstalled)
    ));
    init(LogFormat::Json); // and the infallible form is quiet about it
    let span = tracing::info_span!("pass", reconcile_id = 5);
    let _g = span.enter();
    tracing::info!(n = 1, "hello from child");
    tracing::debug!("HIDDEN_DEBUG_LINE");
    tracing::info!(target: "sqlx", "HIDDEN_SQLX_INFO");
    let joined = std::thread::spawn(|| panic!("child panic\nsecond line")).join();
    assert!(joined.is_err());
}

#[test]
fn real_stdout_is_json_lines() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "telemetry::tests::json_stdout_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "--quiet",
        ])
        .env("VYX_TELEMETRY_CHILD", "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The test harness prints its own lines; every line that is ours is a whole JSON object.
    let ours: Vec<Map<String, Value>> = stdout
        .lines()
        .filter(|l| l.contains("\"level\""))
        .map(parse)
        .collect();
    assert_eq!(ours.len(), 2, "{stdout}");
    assert_eq!(ours[0]["message"], "hello from child");
    assert_eq!(ours[0]["reconcile_id"], 5);
    assert_eq!(ours[1]["target"], "panic");
    assert_eq!(ours[1]["panic_message"], "child panic\nsecond line");
    assert!(!stdout.contains("HIDDEN_"), "{stdout}");
    // The standard multi-line panic report was replaced, not added to.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked at"), "{stderr}");
}
