//! Outbound HTTP as Spin sends it (`crates/factor-outbound-http/src/wasi.rs`,
//! `RequestSender`): `allowed_outbound_hosts` is checked first and a denied
//! request fails with `HttpRequestDenied`; the `host` header is removed (hyper
//! sets it from the URI); requests go through one pooled
//! `hyper_util::client::legacy::Client` shared by every instance, so
//! keep-alive connections are reused across requests and instances (Spin
//! >= 3.4, `HttpClients`). TLS trusts the web PKI roots plus extra CA files,
//! as Spin's runtime-config `[[client_tls]] ca_roots_file`
//! (`crates/factor-outbound-networking/src/tls.rs`). Connect and TLS
//! failures reach the guest as the error codes Spin's connector gives them
//! (`client_error`).

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

/// Maps a client error to the wasi:http error code the guest sees, as
/// Spin's connector does (`crates/factor-outbound-http/src/wasi.rs` in
/// spinframework/spin, `ConnectOptions::connect_tcp` / `connect_tls`, and
/// `hyper_legacy_request_error` for the rest): a failed name lookup is
/// `DnsError` ("address not available"), a TCP connect past its timeout
/// `ConnectionTimeout`, `AddrNotAvailable` a `DnsError` too, any other
/// connect failure `ConnectionRefused`; a host name that is no valid TLS
/// server name is `DnsError` ("invalid dns name"); any failed TLS handshake
/// (untrusted certificate, protocol error, connection closed mid-handshake)
/// is `TlsProtocolError`; everything else `HttpProtocolError`.
fn client_error(err: hyper_util::client::legacy::Error) -> Error {
    if err.is_connect() {
        if let Some(cause) = err.source() {
            return connect_error(cause);
        }
    }
    eprintln!("cmk-test-host: outbound request failed: {err:?}");
    Error::HttpProtocolError
}

fn dns_error(rcode: &str) -> Error {
    Error::DnsError {
        rcode: Some(rcode.to_string()),
        info_code: Some(0),
    }
}

/// `cause`: the connector's error. hyper-rustls 0.27 (`connector.rs`)
/// returns a failed handshake as `io::Error::other(<tokio-rustls's
/// io::Error>)`, an unusable server name as the `InvalidDnsNameError`, and
/// the TCP connector's error as it is: hyper-util's `ConnectError` (not
/// exported; its `Display` is its message, "dns error" for a failed
/// lookup), whose source is the `io::Error`.
fn connect_error(cause: &(dyn std::error::Error + 'static)) -> Error {
    if let Some(io) = cause.downcast_ref::<std::io::Error>() {
        if io
            .get_ref()
            .is_some_and(|inner| inner.is::<std::io::Error>())
        {
            eprintln!("cmk-test-host: outbound TLS handshake failed: {io}");
            return Error::TlsProtocolError;
        }
    }
    if cause.is::<rustls::pki_types::InvalidDnsNameError>() {
        return dns_error("invalid dns name");
    }
    if cause.to_string() == "dns error" {
        return dns_error("address not available");
    }
    let mut source = Some(cause);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return Error::ConnectionTimeout,
                std::io::ErrorKind::AddrNotAvailable => return dns_error("address not available"),
                _ => {}
            }
        }
        source = s.source();
    }
    Error::ConnectionRefused
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(url: &str) -> Error {
        let out = Outbound::new(AllowedHosts::default(), &[]).unwrap();
        let body = http_body_util::Empty::<bytes::Bytes>::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let req = hyper::Request::get(url).body(body).unwrap();
        client_error(out.client.request(req).await.unwrap_err())
    }

    #[tokio::test]
    async fn connect_failures_map_as_spin_maps_them() {
        // Nothing listens on the port.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert!(matches!(
            send(&format!("http://127.0.0.1:{port}/")).await,
            Error::ConnectionRefused
        ));
        // A name no resolver knows (RFC 6761 reserves .invalid).
        assert!(matches!(
            send("https://cmk-test-host.invalid/").await,
            Error::DnsError { rcode, .. } if rcode.as_deref() == Some("address not available")
        ));
    }

    #[tokio::test]
    async fn any_failed_tls_handshake_is_a_tls_protocol_error() {
        // A peer that answers the ClientHello with plain text, and one that
        // closes the connection: both fail the handshake.
        for reply in [&b"HTTP/1.1 400 Bad Request\r\n\r\n"[..], &b""[..]] {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let server = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let (mut conn, _) = listener.accept().unwrap();
                let _ = conn.read(&mut [0; 512]);
                let _ = conn.write_all(reply);
            });
            assert!(matches!(
                send(&format!("https://127.0.0.1:{port}/")).await,
                Error::TlsProtocolError
            ));
            server.join().unwrap();
        }
    }
}
