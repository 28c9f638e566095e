//! Build-level hardening that no unit test of a module shows: the block
//! cipher the envelope's AES-256-GCM uses natively wipes its key schedule
//! when dropped (the `zeroize` feature of `aes`; `aes-gcm`'s own `zeroize`
//! feature wipes the GHASH key it derives). Fails to compile without them.
//! The cipher of the Wasm build (`envelope::vector_aes`) has the same check
//! among its own tests, which also run inside Wasmtime.

fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>() {}

#[test]
fn the_field_cipher_wipes_its_key_schedule_on_drop() {
    wipes_on_drop::<aes::Aes256>();
}
