//! Sealing a delivery's documents' protected fields under its data key,
//! then planning their writes once, with the sealed documents.

use super::plan::{plan_writes, Writes};
use super::protect::protected_pointers;
use http::StatusCode;

use crate::api::ApiError;
use crate::config::Config;
use crate::cosmos::Credential;
use crate::document::Document;
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

/// How one key group of a delivery is sealed.
#[derive(Debug, Clone, Copy)]
pub enum GroupKey<'a> {
    /// Protected fields sealed under the group's data key.
    Data(DeliveryKey<'a>),
    /// Nothing of the group is protected: a header naming `kid` (the key
    /// version in use), no data key (none was made or wrapped).
    Nothing {
        /// The key version in use.
        kid: &'a str,
    },
}

fn seal_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "SealFailed",
        e.to_string(),
    )
}

/// Stage two with key scopes: each group's documents (indexes into the
/// delivery, every document in exactly one group) sealed under the group's
/// key, then the signed writes planned once over the whole delivery
/// (documents sharing a partition key still go in one transactional batch,
/// whatever their key). `plans` holds each document's pointers to seal
/// ([`protected_pointers`], computed once by the caller). `nonce` yields a
/// fresh random nonce per sealed value.
#[allow(clippy::too_many_arguments)]
pub fn seal_groups(
    mut documents: Vec<Document>,
    plans: Vec<Vec<String>>,
    groups: &[(&[usize], GroupKey<'_>)],
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    if plans.len() != documents.len() {
        return Err(seal_failed("one list of protected pointers per document"));
    }
    let mut key_of: Vec<Option<(usize, &GroupKey<'_>)>> = vec![None; documents.len()];
    for (g, (members, key)) in groups.iter().enumerate() {
        for &i in *members {
            match key_of.get_mut(i) {
                Some(slot @ None) => *slot = Some((g, key)),
                _ => {
                    return Err(seal_failed(format!(
                        "document {i} is not in exactly one key group"
                    )))
                }
            }
        }
    }
    // Each group's data key made ready once (key schedule, wrapped key's
    // text), not once per document.
    let sealers: Vec<Option<crate::envelope::Sealer<'_>>> = groups
        .iter()
        .map(|(_, key)| match key {
            GroupKey::Data(k) => Some(crate::envelope::Sealer::new(k.dek, k.kid, k.wrapped_dek)),
            GroupKey::Nothing { .. } => None,
        })
        .collect();
    for ((d, pointers), key) in documents.iter_mut().zip(plans).zip(key_of) {
        match key {
            Some((g, GroupKey::Data(_))) => {
                sealers[g]
                    .as_ref()
                    .expect("a sealer per data key")
                    .seal(&mut d.body, &pointers, &mut *nonce)
                    .map_err(seal_failed)?;
            }
            Some((_, GroupKey::Nothing { kid })) => {
                if !pointers.is_empty() {
                    return Err(seal_failed("a group with protected fields has no data key"));
                }
                crate::envelope::seal_nothing(&mut d.body, kid).map_err(seal_failed)?;
            }
            None => return Err(seal_failed("a document is in no key group")),
        }
    }
    plan_writes(documents, config, credential, now)
}

/// Stage two: seals each document's protected fields with the delivery's one
/// data key (wrapped once, as `wrapped_dek` by `kid`), then plans the signed
/// writes. `nonce` yields a fresh random nonce per sealed value.
pub fn seal(
    documents: Vec<Document>,
    protected: &crate::config::ProtectedFields,
    key: &DeliveryKey<'_>,
    nonce: &mut dyn FnMut() -> [u8; 12],
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    let plans = protected_pointers(&documents, protected).map_err(|u| ApiError::from(&u))?;
    let all: Vec<usize> = (0..documents.len()).collect();
    seal_groups(
        documents,
        plans,
        &[(&all, GroupKey::Data(*key))],
        nonce,
        config,
        credential,
        now,
    )
}

/// Stage two, for a delivery in which the configuration protects nothing
/// (see [`protected_pointers`]): each document gets a header that seals no
/// field and names `kid`, the key version in use, without a data key, so
/// no key is made or wrapped.
pub fn seal_none(
    mut documents: Vec<Document>,
    kid: &str,
    config: &Config,
    credential: &Credential,
    now: UnixTime,
) -> Result<Writes, ApiError> {
    for d in &mut documents {
        crate::envelope::seal_nothing(&mut d.body, kid).map_err(seal_failed)?;
    }
    plan_writes(documents, config, credential, now)
}
