//! The `default` key-value store, persisted in SQLite with the schema and
//! statements of Spin's `crates/key-value-spin/src/store.rs` (one table
//! `spin_key_value (store, key, value)`, upsert on set), so a database file
//! written by this host reads the same under `spin up`.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct Sqlite(Arc<Mutex<Connection>>);

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        // Several requests write at once; wait for the lock instead of failing.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS spin_key_value (
                store TEXT NOT NULL,
                key   TEXT NOT NULL,
                value BLOB NOT NULL,
                PRIMARY KEY (store, key)
            )",
            [],
        )?;
        Ok(Self(Arc::new(Mutex::new(conn))))
    }

    /// Runs `f` on the connection. SQLite blocks (on the disk and on the
    /// lock other requests hold), so the call leaves the async executor's
    /// worker with `block_in_place`, as Spin's store does around every
    /// statement (`crates/key-value-spin/src/store.rs`): other requests'
    /// tasks move to another worker meanwhile. Outside a runtime (the unit
    /// tests) it simply runs `f`.
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
        tokio::task::block_in_place(|| {
            let conn = self
                .0
                .lock()
                .map_err(|_| "key-value store lock poisoned".to_string())?;
            f(&conn).map_err(|e| e.to_string())
        })
    }

    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.with(|c| {
            c.prepare_cached("SELECT value FROM spin_key_value WHERE store=$1 AND key=$2")?
                .query_row(params![store, key], |row| row.get::<_, Vec<u8>>(0))
                .optional()
        })
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), String> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO spin_key_value (store, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT(store, key) DO UPDATE SET value=$3",
            )?
            .execute(params![store, key, value])
            .map(drop)
        })
    }

    pub fn delete(&self, store: &str, key: &str) -> Result<(), String> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM spin_key_value WHERE store=$1 AND key=$2")?
                .execute(params![store, key])
                .map(drop)
        })
    }

    pub fn keys(&self, store: &str) -> Result<Vec<String>, String> {
        self.with(|c| {
            c.prepare_cached("SELECT key FROM spin_key_value WHERE store=$1")?
                .query_map(params![store], |row| row.get::<_, String>(0))?
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_across_connections_and_separates_stores() {
        let dir = std::env::temp_dir().join(format!("cmk-host-kv-{}", std::process::id()));
        let path = dir.join("kv.db");
        let db = Sqlite::open(&path).unwrap();
        db.set("default", "a", b"1").unwrap();
        db.set("default", "a", b"2").unwrap();
        db.set("other", "a", b"x").unwrap();
        drop(db);
        let db = Sqlite::open(&path).unwrap();
        assert_eq!(db.get("default", "a").unwrap(), Some(b"2".to_vec()));
        assert_eq!(db.keys("default").unwrap(), vec!["a".to_string()]);
        db.delete("default", "a").unwrap();
        assert_eq!(db.get("default", "a").unwrap(), None);
        assert_eq!(db.get("other", "a").unwrap(), Some(b"x".to_vec()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
