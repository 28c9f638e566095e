//! From the answers of the write units to the delivery's answer: per-unit
//! outcomes for the log, and the response the sender sees.

use super::plan::{WriteUnit, Writes};
use http::{Response, StatusCode};
use serde_json::json;

use crate::api::{json_response, ApiError};
use crate::cosmos::{parse_batch, parse_write, CosmosError, Metrics};

/// The outcome of one unit's request, as sent back by the I/O layer.
pub type WriteResult = Result<Response<Vec<u8>>, CosmosError>;

/// What one unit achieved, for logs.
#[derive(Debug)]
pub struct UnitOutcome {
    /// Documents in the unit.
    pub documents: usize,
    /// Whether it was a transactional batch.
    pub batch: bool,
    /// Charge and activity id, or the failure.
    pub result: Result<Metrics, CosmosError>,
}

/// What one unit wrote: a status per document (201 created, 200 replaced
/// or already there), in the unit's order, and the charge.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitWritten {
    /// One status per document of the unit.
    pub statuses: Vec<u16>,
    /// Charge (summed over every request of the unit) and activity id.
    pub metrics: Metrics,
}

/// Parses one unit's answer.
pub fn unit_outcome(unit: &WriteUnit, result: WriteResult) -> Result<UnitWritten, CosmosError> {
    let resp = result?;
    if unit.batch {
        let o = parse_batch(&resp, unit.documents.len())?;
        Ok(UnitWritten {
            statuses: o.results.iter().map(|r| r.status).collect(),
            metrics: o.metrics,
        })
    } else {
        let o = parse_write(&resp)?;
        Ok(UnitWritten {
            statuses: vec![o.status],
            metrics: o.metrics,
        })
    }
}

/// Whether a create-only unit failed because a document already exists:
/// 409, or a batch whose failing operation was 409 (nothing of it applied).
pub fn is_conflict(e: &CosmosError) -> bool {
    matches!(
        e,
        CosmosError::Conflict(_) | CosmosError::BatchOperationFailed { status: 409, .. }
    )
}

/// The status a document gets in the answer when its id holds another
/// event (create mode).
pub const CONFLICT: u16 = 409;

/// Parses each unit's answer and decides the response ([`respond`]).
pub fn summarize(
    writes: &Writes,
    results: Vec<WriteResult>,
) -> (Response<Vec<u8>>, Vec<UnitOutcome>) {
    let outcomes = writes
        .units
        .iter()
        .zip(results)
        .map(|(u, r)| unit_outcome(u, r))
        .collect();
    respond(writes, outcomes)
}

/// Decides the response from each unit's outcome. All written → 200 with
/// every document id and status; otherwise the most retryable failure, so
/// the sender redelivers the whole delivery (writes are idempotent).
pub fn respond(
    writes: &Writes,
    results: Vec<Result<UnitWritten, CosmosError>>,
) -> (Response<Vec<u8>>, Vec<UnitOutcome>) {
    let mut statuses: Vec<Option<u16>> = vec![None; writes.documents.len()];
    let mut outcomes = Vec::with_capacity(writes.units.len());
    for (unit, result) in writes.units.iter().zip(results) {
        let result = result.map(|w| {
            for (&i, s) in unit.documents.iter().zip(&w.statuses) {
                statuses[i] = Some(*s);
            }
            w.metrics
        });
        outcomes.push(UnitOutcome {
            documents: unit.documents.len(),
            batch: unit.batch,
            result,
        });
    }
    let failure = outcomes
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .max_by_key(|e| e.is_transient());
    // Create mode: a document whose id holds another event is reported as
    // a conflict (status 409) beside the others. Only a delivery of which
    // no event could be stored fails as a whole, so a redelivery of a mixed
    // one converges on the same 200 instead of failing forever.
    let conflicts = statuses.iter().filter(|s| **s == Some(CONFLICT)).count();
    let all_conflict = failure.is_none() && conflicts > 0 && conflicts == writes.documents.len();
    let response = match failure {
        Some(e) => ApiError::from(e).to_response(),
        None if all_conflict => {
            let first = &writes.documents[0];
            let mut e = ApiError::from(&CosmosError::ExistsWithOtherContent {
                id: first.id.clone(),
            });
            if conflicts > 1 {
                e.message = format!(
                    "every event of the delivery ({conflicts}) conflicts with a stored document holding another event; nothing was changed"
                );
            }
            e.to_response()
        }
        None => {
            let charge: f64 = outcomes
                .iter()
                .flat_map(|o| o.result.as_ref().ok())
                .map(|m| m.request_charge)
                .sum();
            let documents: Vec<_> = writes
                .documents
                .iter()
                .zip(&statuses)
                .map(|(d, s)| {
                    let mut entry =
                        json!({"id": d.id, "partitionKey": d.partition_key, "status": s});
                    if *s == Some(CONFLICT) {
                        entry["code"] = json!("DocumentConflict");
                    }
                    if let Some(fields) = d.body[crate::envelope::HEADER]["fields"].as_array() {
                        entry["sealedFields"] = json!(fields.len());
                    }
                    entry
                })
                .collect();
            // The members json! would give, without json! copying every
            // entry of `documents` through serde's serializer.
            let mut body = serde_json::Map::new();
            body.insert("accepted".into(), json!(writes.documents.len() - conflicts));
            body.insert("conflicts".into(), json!(conflicts));
            body.insert("documents".into(), serde_json::Value::Array(documents));
            body.insert("requests".into(), json!(writes.units.len()));
            body.insert("requestCharge".into(), json!(charge));
            json_response(StatusCode::OK, &serde_json::Value::Object(body))
        }
    };
    (response, outcomes)
}
