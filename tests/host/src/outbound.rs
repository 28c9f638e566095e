//! Outbound HTTP as Spin sends it (`crates/factor-outbound-http/src/wasi.rs`,
//! `RequestSender`): `allowed_outbound_hosts` is checked first and a denied
//! request fails with `HttpRequestDenied`; the `host` header is removed (hyper
//! sets it from the URI); requests go through one pooled
//! `hyper_util::client::legacy::Client` shared by every instance, so
//! keep-alive connections are reused across requests and instances (Spin
//! >= 3.4, `HttpClients`). TLS trusts the web PKI roots plus extra CA files,
//! as Spin's runtime-config `[[client_tls]] ca_roots_file`
//! (`crates/factor-outbound-networking/src/tls.rs`).

use crate::allowed::AllowedHosts;
use anyhow::{Context, Result};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::error::Error as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// Spin's default for connect, first-byte and between-bytes timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

type Connector = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

#[derive(Clone)]
pub struct Outbound {
    client: Client<Connector, WasiBody>,
    allowed: Arc<AllowedHosts>,
}

impl Outbound {
    pub fn new(allowed: AllowedHosts, ca_files: &[PathBuf]) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for file in ca_files {
            let pem = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.with_context(|| format!("parsing {}", file.display()))?)
                    .with_context(|| format!("adding a root from {}", file.display()))?;
                n += 1;
            }
            anyhow::ensure!(n > 0, "{}: no certificate in it", file.display());
        }
        // ring: no C toolchain beyond the one the bundled SQLite needs.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        Ok(Self {
            client,
            allowed: Arc::new(allowed),
        })
    }

    /// The per-instance hooks (cheap: clones two `Arc`s).
    pub fn hooks(&self) -> Hooks {
        Hooks(self.clone())
    }
}

pub struct Hooks(Outbound);

/// Maps a client error to the wasi:http error code, as Spin's
/// `hyper_legacy_request_error` and connector do.
fn client_error(err: hyper_util::client::legacy::Error) -> Error {
    if err.is_connect() {
        let mut source = err.source();
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                if io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>())
                {
                    return Error::TlsCertificateError;
                }
                if io.kind() == std::io::ErrorKind::TimedOut {
                    return Error::ConnectionTimeout;
                }
            }
            if s.is::<rustls::Error>() {
                return Error::TlsCertificateError;
            }
            source = s.source();
        }
        return Error::ConnectionRefused;
    }
    eprintln!("cmk-test-host: outbound request failed: {err:?}");
    Error::HttpProtocolError
}

impl WasiHttpHooks for Hooks {
    fn send_request(
        &mut self,
        mut request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        hyper::Response<WasiBody>,
                        Box<dyn Future<Output = Result<(), Error>> + Send>,
                    ),
                    Error,
                >,
            > + Send,
    > {
        _ = fut;
        let out = self.0.clone();
        Box::new(async move {
            if !out.allowed.allows_uri(request.uri()) {
                eprintln!(
                    "cmk-test-host: outbound request to {}://{} denied: not in allowed_outbound_hosts",
                    request.uri().scheme_str().unwrap_or(""),
                    request.uri().authority().map(|a| a.as_str()).unwrap_or("")
                );
                return Err(Error::HttpRequestDenied);
            }
            request.headers_mut().remove(hyper::header::HOST);
            let first_byte = options
                .and_then(|o| o.first_byte_timeout)
                .unwrap_or(DEFAULT_TIMEOUT);
            let resp = tokio::time::timeout(first_byte, out.client.request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?
                .map_err(client_error)?;
            let resp = resp.map(|body| body.map_err(Error::Hyper).boxed_unsync());
            Ok((
                resp,
                Box::new(async { Ok(()) }) as Box<dyn Future<Output = Result<(), Error>> + Send>,
            ))
        })
    }
}
