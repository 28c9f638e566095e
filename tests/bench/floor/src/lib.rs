//! The floor of a delivery: the I/O the component cannot do without, and
//! nothing else, for `tests/bench/delivery_ab.py`,
//! `tests/bench/host_instructions.py` and `scripts/bench --floor` to
//! measure beside the component.
//!
//! Per `POST` it reads the whole body, reads one key-value entry (an access
//! token and the key's state, fetched once on a miss, as the component
//! caches them), sends one `wrapkey` of 32 random bytes to the HSM and
//! writes a document per event to Cosmos DB, each holding its event
//! as it came and the wrapped key: one signed upsert for a single event, a
//! transactional batch of upserts for several (as the component writes
//! them; up to 100 a request, Cosmos DB's limit). It answers 200 with the
//! number of events. No sealing, no parsing (the events are found by a
//! scan of the body's top-level array), no configuration beyond the
//! variables it needs, no log line: what the runtime process spends on
//! this is what a delivery costs it whatever the component computes
//! (inbound HTTP, an instance, one key-value read, the outbound HTTPS
//! exchanges, and Cosmos DB's and the signature check's work for the same
//! number of documents). It is an optimistic bound: its documents hold the
//! events unsealed (so they are smaller than the component's) and it
//! checks no ingest key. Every wait is a blocking host call, the fewest
//! calls across the component boundary an exchange can take. With
//! `hsm_local_wrap = true` it wraps the 32 bytes with the key's public part
//! instead, with the component's own RSA-OAEP-256 code
//! (`cmk_core::hsm::wrap_locally_kept`), as every local-wrap delivery must,
//! with the modulus's constant kept in its entry as the component keeps it
//! with the key's state.
//!
//! It reads the component's variables (spin.toml) and is served in its
//! place (`--wasm`); stage two, client-secret identity, master-key Cosmos
//! DB. Not a product: it seals nothing. A GET answers 200 and does nothing,
//! so that `scripts/bench` can serve it as the component way (`CMK_APP_WASM`).
//!
//! Built with `--features bound` it is the bound instead (`src/bound.rs`,
//! `scripts/bench --bound`): the same I/O plus the work every delivery of
//! the product must do whatever its code, without JSON trees.

#[cfg(not(feature = "bound"))]
use cmk_core::cosmos::MasterKey;
use cmk_core::cosmos::{self, BatchOperation, ContainerLink, CosmosRequest, Credential, Endpoint};
use cmk_core::entra::{self, Provider, Secret, MANAGED_HSM_SCOPE};
use cmk_core::hsm::{self, KeyRef};
use cmk_core::time::UnixTime;
use spin_sdk::http::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::http0_2_0::outgoing_handler;
use wasi::io::streams::{InputStream, StreamError};

#[cfg(feature = "bound")]
mod bound;

/// The key-value entry: `token \n key state (JSON) \n the modulus's
/// constant (JSON; empty without local wrap)`.
const ENTRY: &str = "bench-floor/v3";

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    // A GET (the bench's `/healthz`) does nothing: the bench serves the
    // floor in the component's place (`CMK_APP_WASM`) and checks it first.
    let delivery = match req.method() {
        Method::Get => Ok(0),
        _ => deliver(req),
    };
    let (status, body) = match delivery {
        Ok(events) => (200, format!("{{\"accepted\":{events}}}").into_bytes()),
        Err(e) => (502, e.into_bytes()),
    };
    let headers = Fields::from_list(&[("content-type".to_owned(), b"application/json".to_vec())])
        .expect("valid header");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("valid status");
    let body_out = resp.body().expect("a new response's body");
    out.set(resp);
    let stream = body_out.write().expect("a new body's stream");
    let _ = stream.blocking_write_and_flush(&body);
    drop(stream);
    let _ = OutgoingBody::finish(body_out, None);
}

fn var(name: &str) -> Result<String, String> {
    spin_sdk::variables::get(name).map_err(|e| format!("variable {name}: {e}"))
}

/// What a delivery's exchanges need from the settings.
struct Settings {
    vault: Endpoint,
    local_wrap: bool,
    account: Endpoint,
    credential: Credential,
    container: ContainerLink,
}

#[cfg(not(feature = "bound"))]
impl Settings {
    /// The six variables the floor reads.
    fn read() -> Result<Self, String> {
        Ok(Self {
            vault: Endpoint::parse(&var("hsm_endpoint")?).map_err(|e| e.to_string())?,
            local_wrap: var("hsm_local_wrap")? == "true",
            account: Endpoint::parse(&var("cosmos_endpoint")?).map_err(|e| e.to_string())?,
            credential: Credential::MasterKey(
                MasterKey::from_base64(&var("cosmos_key")?).map_err(|e| e.to_string())?,
            ),
            container: ContainerLink::new(var("cosmos_database")?, var("cosmos_container")?),
        })
    }
}

/// Delivers the body's events, a document each; their number.
fn deliver(req: IncomingRequest) -> Result<usize, String> {
    let length = req
        .headers()
        .get("content-length")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
    #[cfg(feature = "bound")]
    let (started, config) = {
        let started = wasi::clocks::monotonic_clock::now();
        let config = bound::config()?;
        let key = req.headers().get(cmk_core::access::INGEST_KEY_HEADER);
        let key = key.first().and_then(|k| std::str::from_utf8(k).ok());
        bound::check_sender(&config, key)?;
        (started, config)
    };
    // The bound takes what the exchanges need from the configuration it
    // has read; the floor reads only those variables.
    #[cfg(feature = "bound")]
    let settings = bound::settings(&config)?;
    #[cfg(not(feature = "bound"))]
    let settings = Settings::read()?;
    let vault = &settings.vault;
    let body = req.consume().map_err(|()| "no body")?;
    let body = read_to_end(&body.stream().map_err(|()| "no body stream")?, length)?;
    let events = elements(&body);

    let store = Store::open_default().map_err(|e| e.to_string())?;
    let entry = match store.get(ENTRY).map_err(|e| e.to_string())? {
        Some(entry) => String::from_utf8(entry).map_err(|_| "entry is not text")?,
        None => {
            let entry = fetch_entry(vault)?;
            store
                .set(ENTRY, entry.as_bytes())
                .map_err(|e| e.to_string())?;
            entry
        }
    };
    let (token, rest) = entry.split_once('\n').ok_or("entry without a key state")?;
    let (state, constant) = rest
        .split_once('\n')
        .ok_or("entry without a constant line")?;
    let info: hsm::KeyInfo = serde_json::from_str(state).map_err(|e| e.to_string())?;

    let mut dek = wasi::random::random::get_random_bytes(32);
    let wrapped = if settings.local_wrap {
        let seed: [u8; 32] = wasi::random::random::get_random_bytes(32)
            .try_into()
            .expect("32 bytes asked for");
        let kept: hsm::ModulusConstant =
            serde_json::from_str(constant).map_err(|e| e.to_string())?;
        hsm::wrap_locally_kept(&info, vault, &dek, &seed, Some(&kept))
            .map(|(wrapped, _)| wrapped)
            .map_err(|e| e.to_string())
    } else {
        let key = KeyRef::from_kid(&info.kid, vault).map_err(|e| e.to_string())?;
        hsm::wrap_request(vault, &key, &dek, token)
            .map_err(|e| e.to_string())
            .and_then(|wrap| hsm::parse_crypt(&exchange(wrap)?).map_err(|e| e.to_string()))
    };
    #[cfg(feature = "bound")]
    let key = cmk_core::envelope::Dek::from_bytes(&dek).map_err(|e| e.to_string())?;
    dek.fill(0);
    let wrapped = wrapped?;
    #[cfg(feature = "bound")]
    let docs = bound::documents(&events, &key, &wrapped.kid, &wrapped.value, "bench-floor")?;
    #[cfg(not(feature = "bound"))]
    let docs = plain_documents(&events, &wrapped);

    let container = &settings.container;
    let cosmos = CosmosRequest::new(&settings.account, &settings.credential, UnixTime::now());
    for chunk in docs.chunks(100) {
        if let [one] = chunk {
            let write = cosmos.upsert_document(container, "bench-floor", one.clone());
            let answer = exchange(write.map_err(|e| e.to_string())?)?;
            if !matches!(answer.status().as_u16(), 200 | 201) {
                return Err(format!("Cosmos DB answered {}", answer.status()));
            }
        } else {
            let docs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            let write = cosmos.batch(container, "bench-floor", &docs, BatchOperation::Upsert);
            let answer = exchange(write.map_err(|e| e.to_string())?)?;
            // Every operation's own status, as the component reads it: a
            // batch can answer 200 with failed operations in it.
            cosmos::parse_batch(&answer, chunk.len()).map_err(|e| e.to_string())?;
        }
    }
    #[cfg(feature = "bound")]
    {
        let micros = (wasi::clocks::monotonic_clock::now() - started) / 1000;
        bound::log_line(events.len(), micros);
    }
    Ok(events.len())
}

/// The floor's documents: each event as it came, with the wrapped key.
#[cfg(not(feature = "bound"))]
fn plain_documents(events: &[&[u8]], wrapped: &hsm::CryptResult) -> Vec<Vec<u8>> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let head = format!(
        "\",\"pk\":\"bench-floor\",\"kid\":\"{}\",\"wrapped\":\"{}\",\"event\":",
        wrapped.kid,
        URL_SAFE_NO_PAD.encode(&wrapped.value)
    );
    let ids = wasi::random::random::get_random_bytes(16 * events.len() as u64);
    events
        .iter()
        .zip(ids.chunks(16))
        .map(|(event, id)| {
            let mut doc = Vec::with_capacity(8 + 32 + head.len() + event.len() + 1);
            doc.extend_from_slice(b"{\"id\":\"");
            for b in id {
                doc.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            doc.extend_from_slice(head.as_bytes());
            doc.extend_from_slice(event);
            doc.push(b'}');
            doc
        })
        .collect()
}

/// The elements of a top-level JSON array, or the whole body as one: a
/// scan for the array's commas outside strings and nested values, with
/// no parsing (the component's parser checks far more).
fn elements(body: &[u8]) -> Vec<&[u8]> {
    let trimmed = body.trim_ascii();
    let Some(inner) = trimmed
        .strip_prefix(b"[")
        .and_then(|t| t.strip_suffix(b"]"))
    else {
        return vec![trimmed];
    };
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for (i, &b) in inner.iter().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => depth += 1,
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' if depth == 0 => {
                out.push(inner[start..i].trim_ascii());
                start = i + 1;
            }
            _ => {}
        }
    }
    let last = inner[start..].trim_ascii();
    if !last.is_empty() || !out.is_empty() {
        out.push(last);
    }
    out
}

/// A token for the HSM and the key's current state, on a miss.
fn fetch_entry(vault: &Endpoint) -> Result<String, String> {
    let provider = Provider::ClientSecret {
        authority: var("azure_authority_host")?,
        tenant: var("azure_tenant_id")?,
        client_id: var("azure_client_id")?,
        secret: Secret::new(var("azure_client_secret")?),
    };
    let req =
        entra::token_request(&provider, MANAGED_HSM_SCOPE, None).map_err(|e| e.to_string())?;
    let token =
        entra::parse_token_response(&exchange(req)?, UnixTime::now()).map_err(|e| e.to_string())?;
    let latest = KeyRef {
        name: var("hsm_key_name")?,
        version: None,
    };
    let get = hsm::get_key_request(vault, &latest, &token.token);
    let info = hsm::parse_key(&exchange(get)?).map_err(|e| e.to_string())?;
    let state = serde_json::to_string(&info).map_err(|e| e.to_string())?;
    let constant = if var("hsm_local_wrap")? == "true" {
        let c = hsm::ModulusConstant::of(&info).map_err(|e| e.to_string())?;
        serde_json::to_string(&c).map_err(|e| e.to_string())?
    } else {
        String::new()
    };
    Ok(format!("{}\n{state}\n{constant}", token.token))
}
/// Reads a body to its end (or to its declared length), waiting in the host.
fn read_to_end(stream: &InputStream, length: Option<usize>) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(length.unwrap_or(0));
    loop {
        let want = match length {
            Some(n) if body.len() >= n => break,
            Some(n) => n - body.len(),
            None => 65_536,
        };
        match stream.blocking_read(want as u64) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(format!("body: {e}")),
        }
    }
    Ok(body)
}

/// Sends a request and reads its whole answer, each wait a blocking call.
fn exchange(req: http::Request<Vec<u8>>) -> Result<http::Response<Vec<u8>>, String> {
    let headers: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_owned()))
        .collect();
    let out = OutgoingRequest::new(Fields::from_list(&headers).map_err(|e| format!("{e:?}"))?);
    out.set_method(&req.method().clone().into())
        .map_err(|()| "method refused")?;
    out.set_path_with_query(req.uri().path_and_query().map(|p| p.as_str()))
        .map_err(|()| "path refused")?;
    out.set_scheme(Some(&Scheme::Https))
        .map_err(|()| "scheme refused")?;
    out.set_authority(req.uri().authority().map(|a| a.as_str()))
        .map_err(|()| "authority refused")?;
    let body = out.body().expect("a new request's body");
    let future = outgoing_handler::handle(out, None).map_err(|e| e.to_string())?;
    if !req.body().is_empty() {
        let stream = body.write().expect("a new body's stream");
        for part in req.body().chunks(4096) {
            stream
                .blocking_write_and_flush(part)
                .map_err(|e| e.to_string())?;
        }
    }
    OutgoingBody::finish(body, None).map_err(|e| e.to_string())?;
    future.subscribe().block();
    let resp = future
        .get()
        .ok_or("no answer")?
        .map_err(|()| "answer taken")?
        .map_err(|e| e.to_string())?;
    let length = resp
        .headers()
        .get("content-length")
        .first()
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
    let mut answer = http::Response::builder().status(resp.status());
    for (n, v) in resp.headers().entries() {
        answer = answer.header(n, v);
    }
    let incoming = resp.consume().map_err(|()| "no answer body")?;
    let bytes = read_to_end(&incoming.stream().map_err(|()| "no answer stream")?, length)?;
    answer.body(bytes).map_err(|e| e.to_string())
}
