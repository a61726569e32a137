# syntax=docker/dockerfile:1
#
# vyx-fleet for Fly.io (linux/amd64). Build: `fly deploy` (remote builder) or
#   docker build -t vyx-fleet .
#
# ONE Debian release in every stage: Debian 12 "bookworm" (glibc 2.36). The unpinned
# `latest-rust-1` / `rust:1` tags moved to trixie (glibc 2.41); a binary built there fails at
# start-up on a bookworm runtime with "GLIBC_2.3x not found" although the build succeeds
# (DEPLOYING.md §5). If you move to trixie, move both: `latest-rust-1.95-trixie` with
# `distroless/cc-debian13`.
#
# Same Rust version in every cargo-chef stage (they all derive from `chef`).

FROM lukemathwalker/cargo-chef:latest-rust-1.95-bookworm AS chef
WORKDIR /app

# Compute the dependency recipe from the manifests only.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
# No query!() macros need a live database at build time; never try to reach one.
ENV SQLX_OFFLINE=true
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is cached until Cargo.toml/Cargo.lock change. TLS is rustls
# (aws-lc-rs, compiled from C here with the image's gcc), so no libssl-dev is needed; jemalloc (the
# global allocator, tikv-jemalloc-sys) is compiled from C too, with the image's gcc and make.
RUN cargo chef cook --release --locked --recipe-path recipe.json
# Sources and migrations (embedded into the binary by sqlx::migrate!()).
COPY . .
RUN cargo build --release --locked --bin vyx-fleet

# Runtime: glibc, libgcc, CA certificates (reqwest's rustls-platform-verifier reads the system trust
# store), tzdata; no shell, no package manager. `:nonroot` runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
WORKDIR /app
COPY --from=builder /app/target/release/vyx-fleet /app/vyx-fleet
USER 65532:65532
# Documentation only (flyctl never reads EXPOSE): /healthz, /readyz, /metrics.
EXPOSE 9090
# Vector form: the binary is PID 1's child directly, so Fly's kill_signal (SIGTERM) reaches it, not
# a shell. fly.toml [processes] and release_command replace only CMD, so they stay subcommands.
ENTRYPOINT ["/app/vyx-fleet"]
CMD ["run"]
