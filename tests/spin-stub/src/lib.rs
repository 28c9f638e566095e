//! A test-only stand-in for the two Spin host interfaces the app imports, so
//! the unmodified app runs under Wasmtime (which has no Spin imports) once this
//! component is plugged into a copy of it.
//!
//! - `fermyon:spin/variables`: a variable `name` is read from the environment
//!   variable `SPIN_VARIABLE_<NAME>`, as Spin's environment provider does.
//!   Names are checked with Spin's rules.
//! - `fermyon:spin/key-value`: the `default` store keeps each key in a file
//!   under the preopened directory `/kv` (hex-encoded key as file name,
//!   written by rename), so values survive across requests like Spin's store.
//!   Other store labels answer `no-such-store`, as in a Spin app that was
//!   granted only `default`.

#![allow(missing_docs)]

wit_bindgen::generate!({ world: "stub", path: "wit", generate_all });

use exports::fermyon::spin::key_value::{self, Error as KvError, GuestStore};
use exports::fermyon::spin::variables::{self, Error as VarError};
use std::path::PathBuf;

const KV_ROOT: &str = "/kv";

struct Stub;

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.contains("__")
        && !name.ends_with('_')
}

impl variables::Guest for Stub {
    fn get(name: String) -> Result<String, VarError> {
        if !valid_name(&name) {
            return Err(VarError::InvalidName(name));
        }
        std::env::var(format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase()))
            .map_err(|_| VarError::Undefined(format!("no variable for \"{name}\"")))
    }
}

struct FileStore {
    dir: PathBuf,
}

fn other(e: std::io::Error) -> KvError {
    KvError::Other(e.to_string())
}

impl FileStore {
    fn path(&self, key: &str) -> PathBuf {
        let mut hex = String::with_capacity(key.len() * 2);
        for b in key.bytes() {
            hex.push_str(&format!("{b:02x}"));
        }
        self.dir.join(hex)
    }
}

fn unhex(name: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| {
            name.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    bytes.and_then(|b| String::from_utf8(b).ok())
}

impl GuestStore for FileStore {
    fn open(label: String) -> Result<key_value::Store, KvError> {
        if label != "default" {
            return Err(KvError::NoSuchStore);
        }
        let dir = PathBuf::from(KV_ROOT).join(&label);
        std::fs::create_dir_all(&dir).map_err(other)?;
        Ok(key_value::Store::new(FileStore { dir }))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        match std::fs::read(self.path(&key)) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(other(e)),
        }
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let path = self.path(&key);
        // A unique temporary name (WASI has no process id), then an atomic rename.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = path.with_extension(format!("tmp{nanos}"));
        std::fs::write(&tmp, value).map_err(other)?;
        std::fs::rename(&tmp, &path).map_err(other)
    }

    fn delete(&self, key: String) -> Result<(), KvError> {
        match std::fs::remove_file(self.path(&key)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(other(e)),
            _ => Ok(()),
        }
    }

    fn exists(&self, key: String) -> Result<bool, KvError> {
        Ok(self.path(&key).exists())
    }

    fn get_keys(&self) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(other)? {
            let name = entry.map_err(other)?.file_name();
            if let Some(k) = name.to_str().filter(|n| !n.contains('.')).and_then(unhex) {
                keys.push(k);
            }
        }
        Ok(keys)
    }
}

impl key_value::Guest for Stub {
    type Store = FileStore;
}

export!(Stub);
