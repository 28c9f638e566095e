//! The component's linear-memory layout.
//!
//! Rust gives a wasm32 program a 1 MiB shadow stack at the bottom of linear
//! memory (`--stack-first`: an overflow traps instead of overwriting data).
//! Every request runs in a fresh instance, and Spin's pooling allocator
//! zeroes each slot's used linear memory (up to 2 MiB) when the instance
//! ends, so that megabyte is paid for on every request even though a
//! request uses a few kilobytes of it: 128 KiB of stack brings a small
//! delivery's memory from 1,179,648 to 262,144 bytes (327,680 since the
//! small-allocation region of heap/src/lib.rs) and a `/healthz`
//! request's runtime CPU by about a third (docs/benchmarks.md, "Run of
//! 2026-12-06 (afternoon): 128 KiB of stack"). The deepest inputs the
//! component accepts (deliveries and queue messages at
//! `max_nesting_depth`'s maximum; stored documents, peer answers and sender
//! tokens at `serde_json`'s 127 levels) need between 40 and 48 KiB:
//! tests/integration/test_stack_depth.py holds the shipped build to them
//! and to this layout; a build with `CMK_STACK_SIZE=40960`
//! fails five of its depth cases, one with 49152 passes them all (2026-12-06;
//! its layout check fails on any size but this one, by design).

/// The component's shadow-stack size in bytes.
const STACK_SIZE: u32 = 128 * 1024;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        let size = std::env::var("CMK_STACK_SIZE").map_or(STACK_SIZE, |v| {
            println!(
                "cargo:warning=CMK_STACK_SIZE={v}: this build's stack is not the shipped {STACK_SIZE} bytes"
            );
            v.parse().expect("CMK_STACK_SIZE is a number of bytes")
        });
        println!("cargo:rerun-if-env-changed=CMK_STACK_SIZE");
        println!("cargo:rustc-link-arg-cdylib=-zstack-size={size}");
    }
}
