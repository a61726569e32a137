//! Rebuilds the crate when `migrations/` changes.
//!
//! `sqlx::migrate!()` embeds the migrations at compile time, and on stable Rust the compiler is not told
//! to watch the directory: a new migration file would not trigger a rebuild, and the binary and the
//! tests would keep applying the old list. This is the build script sqlx's documentation recommends.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
