//! The token proxy's request-head parser and its decision on the parsed
//! request (identity header, api-version, resource, identity) with a fixed
//! configuration: every head is refused or answered, never a panic, and a
//! token is only ever handed out to a request that carried the identity
//! header and asked for a configured resource.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use token_proxy::{decide, parse_head, Config, Decision};

const IDENTITY: &str = "identity-header-0123456789";

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        Config::from_env(|name| {
            Some(match name {
                "IDENTITY_HEADER" => IDENTITY.into(),
                "AZURE_TENANT_ID" => "tenant".into(),
                "AZURE_CLIENT_ID" => "client".into(),
                "AZURE_FEDERATED_TOKEN_FILE" => "/var/run/token".into(),
                "TOKEN_PROXY_RESOURCES" => {
                    "https://managedhsm.azure.net,https://cosmos.azure.com".into()
                }
                _ => return None,
            })
        })
        .expect("the fixed configuration loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(head) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(req) = parse_head(head) else {
        return;
    };
    if let Decision::Token { resource } = decide(&req, config()) {
        assert!(config().resources.contains(&resource));
        assert!(req
            .headers
            .iter()
            .any(|(k, v)| k == "x-identity-header" && v == IDENTITY));
        assert_eq!(req.method, "GET");
    }
});
