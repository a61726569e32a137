use std::collections::BTreeMap;
use vyx_fleet::reconcile::{Observation, ObservedApp, ObservedMachine};
fn rss() -> f64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1e6
}
fn main() {
    let r0 = rss();
    let mut apps = BTreeMap::new();
    for i in 0..100_000u32 {
        let name = format!("vyx-user-{:08x}", i);
        let m = ObservedMachine {
            id: format!("{:014x}", i as u64 * 7919),
            state: "started".into(),
            region: "sin".into(),
            image: "registry.fly.io/vyx-screener:v1".into(),
            cpus: Some(1),
            memory_mb: Some(512),
            cpu_kind: Some("shared".into()),
            user_id: Some(uuid::Uuid::new_v4()),
            op: Some(uuid::Uuid::new_v4().simple().to_string()),
            version: Some(format!("01J{:023}", i)),
            updated_at: Some(chrono::Utc::now()),
        };
        apps.insert(
            name.clone(),
            ObservedApp {
                name,
                machines: vec![m],
            },
        );
    }
    let obs = Observation {
        apps,
        error_regions: Default::default(),
    };
    let r1 = rss();
    println!(
        "observation 100k: {:.1} MB (size_of machine {})",
        r1 - r0,
        std::mem::size_of::<ObservedMachine>()
    );
    std::hint::black_box(&obs);
}
