//! Instance allocation as `spin up` chooses it (spinframework/spin,
//! `crates/core/src/lib.rs`, `impl Default for Config` and
//! `use_pooling_allocator_by_default`): Wasmtime's pooling allocator when
//! the machine can reserve 42 bits of virtual address space (probed with a
//! 64-bit memory of that maximum), else the on-demand allocator;
//! `SPIN_WASMTIME_POOLING=1`/`0` decides without the probe. The pool's
//! sizes are Spin's defaults, derived from `SPIN_MAX_INSTANCE_COUNT`
//! (1000), each with Spin's environment override.
//!
//! A pooled slot is reset when its instance ends (linear memory zeroed,
//! `memset` for the first `linear_memory_keep_resident` bytes and `madvise`
//! past them), so every request still starts from fresh memory.

use anyhow::{bail, Context, Result};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

const MB: u64 = 1 << 20;
const GB: usize = 1 << 30;

/// The allocator in use, named in the host's start line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

impl Allocator {
    pub fn describe(self) -> &'static str {
        match self {
            Allocator::Pooling => "pooling instance allocator",
            Allocator::OnDemand => "on-demand instance allocator",
        }
    }
}

/// Sets `config`'s allocation strategy as Spin's engine does; `env` reads
/// the environment (a closure so tests can pass their own).
pub fn configure(config: &mut Config, env: &dyn Fn(&str) -> Option<String>) -> Result<Allocator> {
    if !use_pooling(env)? {
        config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        return Ok(Allocator::OnDemand);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool(env)?));
    Ok(Allocator::Pooling)
}

/// Spin's pool: sizes and environment overrides as in `impl Default for
/// Config`.
fn pool(env: &dyn Fn(&str) -> Option<String>) -> Result<PoolingAllocationConfig> {
    let var = |name: &str, default: u64| -> Result<u64> {
        match env(name) {
            Some(v) => v
                .parse()
                .with_context(|| format!("failed to parse env var `{name}={v}`")),
            None => Ok(default),
        }
    };
    let n32 = |name: &str, default: u64| -> Result<u32> {
        u32::try_from(var(name, default)?).with_context(|| format!("{name} is too large"))
    };
    let max_instances = var("SPIN_MAX_INSTANCE_COUNT", 1_000)?;
    let mut p = PoolingAllocationConfig::default();
    p.total_component_instances(n32("SPIN_WASMTIME_INSTANCE_COUNT", max_instances)?)
        .total_memories(n32("SPIN_WASMTIME_TOTAL_MEMORIES", max_instances)?)
        .total_tables(n32("SPIN_WASMTIME_TOTAL_TABLES", 2 * max_instances)?)
        .total_stacks(n32("SPIN_WASMTIME_TOTAL_STACKS", max_instances)?)
        .total_core_instances(n32(
            "SPIN_WASMTIME_TOTAL_CORE_INSTANCES",
            4 * max_instances,
        )?)
        .table_elements(var("SPIN_WASMTIME_INSTANCE_TABLE_ELEMENTS", 100_000)? as usize)
        .max_component_instance_size(var("SPIN_WASMTIME_INSTANCE_SIZE", 10 * MB)? as usize)
        .max_core_instance_size(var("SPIN_WASMTIME_CORE_INSTANCE_SIZE", 10 * MB)? as usize)
        .max_core_instances_per_component(n32("SPIN_WASMTIME_CORE_INSTANCE_COUNT", 200)?)
        .max_tables_per_component(n32("SPIN_WASMTIME_INSTANCE_TABLES", 64)?)
        .max_memories_per_component(n32("SPIN_WASMTIME_INSTANCE_MEMORIES", 32)?)
        .max_tables_per_module(n32("SPIN_WASMTIME_MAX_TABLES_PER_MODULE", 2)?)
        .max_memories_per_module(n32("SPIN_WASMTIME_MAX_MEMORIES_PER_MODULE", 2)?)
        .max_memory_size(4 * GB)
        .linear_memory_keep_resident(
            var("SPIN_WASMTIME_LINEAR_MEMORY_KEEP_RESIDENT", 2 * MB)? as usize
        )
        .table_keep_resident(var("SPIN_WASMTIME_TABLE_KEEP_RESIDENT", MB / 2)? as usize);
    Ok(p)
}

/// `SPIN_WASMTIME_POOLING=1`/`0` decides; any other value stops the start
/// (Spin panics on it); unset, the 42-bit probe decides.
fn use_pooling(env: &dyn Fn(&str) -> Option<String>) -> Result<bool> {
    match env("SPIN_WASMTIME_POOLING").as_deref() {
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(other) => bail!("SPIN_WASMTIME_POOLING={other} not supported, only 1/0 supported"),
        None => Ok(probe()),
    }
}

/// Spin's probe: Spin's pool reserves about 42 bits of address space
/// (1000 memories of 4 GiB plus guard regions); a machine that cannot
/// create a 64-bit memory with that much reserved runs on demand.
fn probe() -> bool {
    const BITS_TO_TEST: u32 = 42;
    let mut config = Config::new();
    config.wasm_memory64(true);
    config.memory_reservation(1 << BITS_TO_TEST);
    let Ok(engine) = wasmtime::Engine::new(&config) else {
        return false;
    };
    let mut store = wasmtime::Store::new(&engine, ());
    // The maximum is in 64 KiB pages.
    let ty = wasmtime::MemoryType::new64(0, Some(1 << (BITS_TO_TEST - 16)));
    wasmtime::Memory::new(&mut store, ty).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_environment_decides_before_the_probe() {
        let mut c = Config::new();
        let on = configure(&mut c, &env_of(&[("SPIN_WASMTIME_POOLING", "1")])).unwrap();
        assert_eq!(on, Allocator::Pooling);
        let off = configure(&mut c, &env_of(&[("SPIN_WASMTIME_POOLING", "0")])).unwrap();
        assert_eq!(off, Allocator::OnDemand);
        for bad in ["yes", "", "true"] {
            assert!(configure(&mut c, &env_of(&[("SPIN_WASMTIME_POOLING", bad)])).is_err());
        }
        let bad_size = env_of(&[
            ("SPIN_WASMTIME_POOLING", "1"),
            ("SPIN_MAX_INSTANCE_COUNT", "many"),
        ]);
        assert!(configure(&mut c, &bad_size).is_err());
    }

    /// A core module with one memory page and `bump`, which adds 1 to the
    /// 32-bit word at address 0 and returns the new value (hand-assembled:
    /// the host has no text-format parser).
    const BUMP: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
        0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: [] -> [i32]
        0x03, 0x02, 0x01, 0x00, // function 0 has type 0
        0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page
        0x07, 0x08, 0x01, 0x04, b'b', b'u', b'm', b'p', 0x00, 0x00, // export "bump"
        0x0a, 0x16, 0x01, 0x14, 0x00, // code: one body, no locals
        0x41, 0x00, // i32.const 0
        0x41, 0x00, 0x28, 0x02, 0x00, // i32.const 0; i32.load
        0x41, 0x01, 0x6a, // i32.const 1; i32.add
        0x36, 0x02, 0x00, // i32.store
        0x41, 0x00, 0x28, 0x02, 0x00, // i32.const 0; i32.load
        0x0b, // end
    ];

    /// A pooled slot is reused by the next instance and starts zeroed: the
    /// counter a finished instance left at 1 is 0 again for the next one,
    /// so no state passes from one request's instance to the next. Checked
    /// on both of Wasmtime's reset paths: `madvise` alone (nothing kept
    /// resident) and `memset` of the resident part, with Spin's own
    /// `linear_memory_keep_resident` (2 MiB, more than the module's page)
    /// and `table_keep_resident` (512 KiB).
    #[test]
    fn a_reused_pool_slot_starts_from_fresh_memory() {
        for (memory, table) in [(0, 0), (2 << 20, 512 << 10)] {
            let mut config = Config::new();
            let mut p = PoolingAllocationConfig::default();
            // One slot, so the second instance must reuse the first's memory.
            p.total_memories(1)
                .total_core_instances(1)
                .total_tables(1)
                .linear_memory_keep_resident(memory)
                .table_keep_resident(table);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
            let engine = wasmtime::Engine::new(&config).unwrap();
            let module = wasmtime::Module::new(&engine, BUMP).unwrap();
            for _ in 0..3 {
                let mut store = wasmtime::Store::new(&engine, ());
                let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
                let bump = instance
                    .get_typed_func::<(), i32>(&mut store, "bump")
                    .unwrap();
                assert_eq!(bump.call(&mut store, ()).unwrap(), 1, "keep resident {memory}");
                assert_eq!(bump.call(&mut store, ()).unwrap(), 2, "keep resident {memory}");
            }
        }
    }

    /// Spin's full pool can be built on this machine when the probe says so.
    #[test]
    fn spins_pool_builds_where_the_probe_passes() {
        if !probe() {
            return;
        }
        let mut c = Config::new();
        configure(&mut c, &env_of(&[])).unwrap();
        wasmtime::Engine::new(&c).unwrap();
    }
}
