//! Sealing a planned delivery's protected fields under its data key, and
//! planning its writes again with the sealed documents.

use super::plan::{write_units, Writes};
use super::protect::protected_pointers;
use http::StatusCode;

use crate::api::ApiError;
use crate::config::Config;
use crate::cosmos::Credential;
use crate::time::UnixTime;

/// A delivery's data key, and the same key wrapped by a KEK version.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    /// The data key.
    pub dek: &'a crate::envelope::Dek,
    /// The exact KEK version that wrapped it.
    pub kid: &'a str,
    /// The wrapped data key.
    pub wrapped_dek: &'a [u8],
}

/// Stage two: seals each document's protected fields with the delivery's one
/// data key (wrapped once, as `wrapped_dek` by `kid`), then rebuilds the
/// signed writes. `nonce` yields a fresh random nonce per sealed value.
pub fn seal(
    writes: Writes,
    protected: &crate::config::ProtectedFields,
    key: &DeliveryKey<'_>,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let DeliveryKey {
        dek,
        kid,
        wrapped_dek,
    } = *key;
    let mut documents = writes.documents;
    let plans = protected_pointers(&documents, protected).map_err(|u| ApiError::from(&u))?;
    for (d, pointers) in documents.iter_mut().zip(plans) {
        crate::envelope::seal(&mut d.body, &pointers, dek, kid, wrapped_dek, &mut *nonce).map_err(
            |e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "SealFailed",
                    e.to_string(),
                )
            },
        )?;
    }
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
}

/// Stage two, for a delivery in which the configuration protects nothing
/// (see [`protected_pointers`]): each document gets a header that seals no
/// field and names `kid`, the key version in use, without a data key, so
/// no key is made or wrapped.
pub fn seal_none(
    writes: Writes,
    kid: &str,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let mut documents = writes.documents;
    for d in &mut documents {
        crate::envelope::seal_nothing(&mut d.body, kid).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "SealFailed",
                e.to_string(),
            )
        })?;
    }
    let units = write_units(&documents, config, credential, now).map_err(|e| ApiError::from(&e))?;
    Ok(Writes { documents, units })
}
