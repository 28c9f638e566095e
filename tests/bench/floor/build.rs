//! The floor's linear memory laid out as the component's (the root
//! `build.rs`): 128 KiB of stack instead of Rust's default 1 MiB. Spin's
//! pooled slots are reset as far as an instance's memory reached, on every
//! request, so a floor with the default stack would charge the runtime for
//! a megabyte the component does not use.

/// The component's shadow-stack size in bytes (root `build.rs`).
const STACK_SIZE: u32 = 128 * 1024;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size={STACK_SIZE}");
    }
}
