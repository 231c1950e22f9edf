//! banger's cross-service tests live in `tests/`; they run the real binaries (build them first
//! with `cargo build --workspace --bins`) against a real nats-server started per test.
