//! exporter-toolkit's `tls_server_config` as a rustls server configuration,
//! with its key names and Go's spellings of versions, suites and curves
//! (exporter-toolkit's web/tls_config.go, ConfigToTLSConfig).
//!
//! Where rustls cannot do what Go's crypto/tls does, the config is refused
//! with what to change, never quietly weakened: TLS 1.0 and 1.1 do not exist
//! here (a `min_version` below TLS12 means TLS12), nor do the CBC and RSA key
//! exchange suites or the P-521 curve. Client certificates are verified
//! against the CAs of `client_ca_file` (or `client_ca`), which the verifying
//! client auth types need (Go would fall back to the system's roots).

use std::sync::Arc;

use rustls::crypto::{ring, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SupportedCipherSuite, SupportedProtocolVersion};

use super::web_config::TlsServerConfig;

/// Go's names of TLS versions, oldest first.
const VERSIONS: [&str; 4] = ["TLS10", "TLS11", "TLS12", "TLS13"];

/// The rustls configuration of `config` (TLS enabled, paths absolute); the
/// error is one line naming the key at fault.
pub fn server_config(config: &TlsServerConfig) -> Result<rustls::ServerConfig, String> {
    let certificates = certificates(config)?;
    let key = private_key(config)?;
    let mut provider = ring::default_provider();
    provider.cipher_suites = cipher_suites(&provider, &config.cipher_suites)?;
    provider.kx_groups = curves(&provider, &config.curve_preferences)?;
    let provider = Arc::new(provider);
    let versions = versions(config.min_version.as_deref(), config.max_version.as_deref())?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|err| format!("tls_server_config: {err}"))?;
    let builder = match client_verifier(config, provider)? {
        Some(verifier) => builder.with_client_cert_verifier(verifier),
        None => builder.with_no_client_auth(),
    };
    let mut server = builder.with_single_cert(certificates, key).map_err(|err| {
        format!("tls_server_config: the key is not the certificate's private key: {err}")
    })?;
    // Go's prefer_server_cipher_suites, true unless said otherwise.
    server.ignore_client_order = config.prefer_server_cipher_suites.unwrap_or(true);
    Ok(server)
}

/// PEM text from the file `path` (preferred, as exporter-toolkit does) or
/// inline, for the key `file_key` or `inline_key`.
fn pem(path: &str, inline: &str, file_key: &str, inline_key: &str) -> Result<Vec<u8>, String> {
    if !path.is_empty() {
        return std::fs::read(path)
            .map_err(|err| format!("tls_server_config.{file_key}: cannot read {path}: {err}"));
    }
    if !inline.is_empty() {
        return Ok(inline.as_bytes().to_vec());
    }
    Err(format!(
        "tls_server_config: missing one of {inline_key} or {file_key} (the server's \
         certificate and key, PEM, are needed for TLS)"
    ))
}

fn certificates(config: &TlsServerConfig) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = pem(&config.cert_file, &config.cert, "cert_file", "cert")?;
    let source = describe(&config.cert_file, "cert_file", "cert");
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("{source}: {err}"))?;
    if certificates.is_empty() {
        return Err(format!("{source}: no PEM certificate in it"));
    }
    Ok(certificates)
}

fn private_key(config: &TlsServerConfig) -> Result<PrivateKeyDer<'static>, String> {
    let pem = pem(&config.key_file, &config.key, "key_file", "key")?;
    let source = describe(&config.key_file, "key_file", "key");
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        format!(
            "{source}: no private key read ({err}): give a PEM key, PKCS#8, PKCS#1 or SEC1, \
             not encrypted"
        )
    })
}

/// Where a PEM text came from, for messages.
fn describe(path: &str, file_key: &str, inline_key: &str) -> String {
    match path.is_empty() {
        true => format!("tls_server_config.{inline_key}"),
        false => format!("tls_server_config.{file_key} {path}"),
    }
}

/// The verifier of client certificates `client_auth_type` asks for, if any.
fn client_verifier(
    config: &TlsServerConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, String> {
    let Some(optional) = client_auth(config)? else {
        return Ok(None);
    };
    let pem = pem(
        &config.client_ca_file,
        &config.client_ca,
        "client_ca_file",
        "client_ca",
    )?;
    let source = describe(&config.client_ca_file, "client_ca_file", "client_ca");
    let mut roots = RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate.map_err(|err| format!("{source}: {err}"))?;
        roots
            .add(certificate)
            .map_err(|err| format!("{source}: {err}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{source}: no PEM certificate in it"));
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = match optional {
        true => builder.allow_unauthenticated(),
        false => builder,
    };
    builder
        .build()
        .map(Some)
        .map_err(|err| format!("{source}: {err}"))
}

/// Whether `client_auth_type` asks for client certificates: None if not,
/// else whether they are optional; an error for what bpfsnap does not do
/// and for certificates asked for without the CAs to verify them.
fn client_auth(config: &TlsServerConfig) -> Result<Option<bool>, String> {
    let has_ca = !config.client_ca_file.is_empty() || !config.client_ca.is_empty();
    let auth_type = config.client_auth_type.as_str();
    let optional = match auth_type {
        // exporter-toolkit's own check: CAs that nothing would use.
        "" | "NoClientCert" if has_ca => {
            return Err(
                "tls_server_config: client CA's have been configured without a Client \
                 Auth Policy: set client_auth_type: RequireAndVerifyClientCert"
                    .into(),
            )
        }
        "" | "NoClientCert" => return Ok(None),
        "RequireAndVerifyClientCert" => false,
        "VerifyClientCertIfGiven" => true,
        "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert" => {
            return Err(format!(
                "tls_server_config.client_auth_type: {auth_type} is not supported by bpfsnap \
                 serve: it takes client certificates nobody verified; use \
                 RequireAndVerifyClientCert with client_ca_file"
            ));
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: invalid ClientAuth: {other:?}: use \
                 NoClientCert, RequireAndVerifyClientCert or VerifyClientCertIfGiven"
            ));
        }
    };
    if !has_ca {
        return Err(format!(
            "tls_server_config.client_auth_type: {auth_type} needs client_ca_file (or \
             client_ca): the CA certificates that sign the clients' certificates"
        ));
    }
    Ok(Some(optional))
}

/// The protocol versions from `min` to `max` (Go's names; TLS12 and TLS13
/// by default) that rustls speaks.
fn versions(
    min: Option<&str>,
    max: Option<&str>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let index = |key: &str, name: &str| {
        VERSIONS.iter().position(|v| *v == name).ok_or_else(|| {
            format!(
                "tls_server_config.{key}: unknown TLS version: {name:?}: use one of {}",
                VERSIONS.join(", ")
            )
        })
    };
    let (min_name, max_name) = (min.unwrap_or("TLS12"), max.unwrap_or("TLS13"));
    let (low, high) = (
        index("min_version", min_name)?,
        index("max_version", max_name)?,
    );
    if high < 2 {
        return Err(format!(
            "tls_server_config.max_version: {max_name}: bpfsnap serve speaks TLS 1.2 and 1.3 \
             only: use TLS12 or TLS13"
        ));
    }
    if low > high {
        return Err(format!(
            "tls_server_config: min_version {min_name} is above max_version {max_name}"
        ));
    }
    let versions: Vec<&'static SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(at, _)| (low..=high).contains(at))
            .map(|(_, version)| version)
            .collect();
    Ok(versions)
}

/// The provider's suites with its TLS 1.2 ones narrowed to `names` (Go's
/// names, in that order); TLS 1.3's are all kept, as Go keeps them (they are
/// not configurable there either).
fn cipher_suites(
    provider: &CryptoProvider,
    names: &[String],
) -> Result<Vec<SupportedCipherSuite>, String> {
    if names.is_empty() {
        return Ok(provider.cipher_suites.clone());
    }
    let tls13 = |suite: &SupportedCipherSuite| matches!(suite, SupportedCipherSuite::Tls13(_));
    let mut chosen: Vec<SupportedCipherSuite> = provider
        .cipher_suites
        .iter()
        .copied()
        .filter(tls13)
        .collect();
    for name in names {
        // Go spells TLS 1.3's suites TLS_AES_128_GCM_SHA256, rustls TLS13_...
        let rustls_name = name.replacen("TLS_", "TLS13_", 1);
        let found = provider.cipher_suites.iter().find(|suite| {
            let suite_name = suite.suite().as_str();
            suite_name == Some(name.as_str()) || (tls13(suite) && suite_name == Some(&rustls_name))
        });
        match found {
            Some(suite) if tls13(suite) => {}
            Some(suite) => chosen.push(*suite),
            None => {
                let offered: Vec<&str> = provider
                    .cipher_suites
                    .iter()
                    .filter(|suite| !tls13(suite))
                    .filter_map(|suite| suite.suite().as_str())
                    .collect();
                return Err(format!(
                    "tls_server_config.cipher_suites: {name:?} is not one bpfsnap serve \
                     offers: choose from {}",
                    offered.join(", ")
                ));
            }
        }
    }
    Ok(chosen)
}

/// Go's curve names → the provider's key exchange groups, in that order.
fn curves(
    provider: &CryptoProvider,
    names: &[String],
) -> Result<Vec<&'static dyn SupportedKxGroup>, String> {
    if names.is_empty() {
        return Ok(provider.kx_groups.clone());
    }
    let mut chosen = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "X25519" => ring::kx_group::X25519,
            "CurveP256" => ring::kx_group::SECP256R1,
            "CurveP384" => ring::kx_group::SECP384R1,
            "CurveP521" => {
                return Err(
                    "tls_server_config.curve_preferences: CurveP521 is not supported \
                            by bpfsnap serve: use X25519, CurveP256 or CurveP384"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "tls_server_config.curve_preferences: unknown curve: {other:?}: use \
                     X25519, CurveP256 or CurveP384"
                ));
            }
        };
        chosen.push(group);
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_by_their_go_names() {
        let names = |min, max| {
            versions(min, max).map(|versions| {
                versions
                    .iter()
                    .map(|v| format!("{:?}", v.version))
                    .collect::<Vec<_>>()
                    .join(",")
            })
        };
        for (min, max, expected) in [
            (None, None, Ok("TLSv1_2,TLSv1_3")),
            (Some("TLS13"), None, Ok("TLSv1_3")),
            (None, Some("TLS12"), Ok("TLSv1_2")),
            // Older than rustls goes: from TLS 1.2.
            (Some("TLS10"), None, Ok("TLSv1_2,TLSv1_3")),
            (Some("TLS12"), Some("TLS12"), Ok("TLSv1_2")),
            (None, Some("TLS11"), Err("speaks TLS 1.2 and 1.3 only")),
            (
                Some("TLS13"),
                Some("TLS12"),
                Err("min_version TLS13 is above max_version TLS12"),
            ),
            (
                Some("TLS1.3"),
                None,
                Err("min_version: unknown TLS version: \"TLS1.3\""),
            ),
            (None, Some("SSL3"), Err("max_version: unknown TLS version")),
        ] {
            match (names(min, max), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{min:?}..{max:?}"),
                (Err(err), Err(says)) => assert!(err.contains(says), "{min:?}..{max:?}: {err}"),
                (got, want) => panic!("{min:?}..{max:?}: {got:?}, not {want:?}"),
            }
        }
    }

    /// The names of the cipher suites [`cipher_suites`] picks for these Go
    /// names, or its error.
    fn suite_names(provider: &CryptoProvider, names: &[&str]) -> Result<Vec<&'static str>, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        cipher_suites(provider, &names).map(|suites| {
            suites
                .iter()
                .filter_map(|s| s.suite().as_str())
                .collect::<Vec<_>>()
        })
    }

    /// The names of the key exchange groups [`curves`] picks for these Go
    /// names, or its error.
    fn group_names(provider: &CryptoProvider, names: &[&str]) -> Result<Vec<String>, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        curves(provider, &names).map(|groups| {
            groups
                .iter()
                .map(|g| format!("{:?}", g.name()))
                .collect::<Vec<_>>()
        })
    }

    #[test]
    fn cipher_suites_and_curves_by_their_go_names() {
        let provider = ring::default_provider();
        let suites = |names: &[&str]| suite_names(&provider, names);
        assert_eq!(suites(&[]).unwrap().len(), provider.cipher_suites.len());
        let chosen = suites(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            "TLS_AES_128_GCM_SHA256",
        ])
        .unwrap();
        // TLS 1.3's all kept, then the TLS 1.2 ones named, in their order.
        let tls12: Vec<&str> = chosen
            .iter()
            .copied()
            .filter(|name| !name.starts_with("TLS13_"))
            .collect();
        assert_eq!(
            tls12,
            [
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(chosen.len(), 5, "{chosen:?}");
        for name in ["TLS_RSA_WITH_AES_128_CBC_SHA", "TLS_NO_SUCH_SUITE"] {
            let err = suites(&[name]).unwrap_err();
            assert!(
                err.contains(&format!(
                    "{name:?} is not one bpfsnap serve offers: choose from"
                )) && err.contains("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
                "{err}"
            );
        }

        let groups = |names: &[&str]| group_names(&provider, names);
        assert_eq!(
            groups(&["CurveP384", "X25519"]).unwrap(),
            ["secp384r1", "X25519"]
        );
        assert_eq!(groups(&[]).unwrap().len(), provider.kx_groups.len());
        assert!(groups(&["CurveP521"])
            .unwrap_err()
            .contains("CurveP521 is not supported"));
        assert!(groups(&["P256"])
            .unwrap_err()
            .contains("unknown curve: \"P256\""));
    }

    #[test]
    fn client_auth_types_by_their_go_names() {
        let provider = Arc::new(ring::default_provider());
        for (auth_type, ca, says) in [
            ("RequireAndVerifyClientCert", false, "needs client_ca_file"),
            ("VerifyClientCertIfGiven", false, "needs client_ca_file"),
            (
                "RequireAnyClientCert",
                true,
                "not supported by bpfsnap serve",
            ),
            ("RequireClientCert", true, "not supported by bpfsnap serve"),
            ("RequestClientCert", false, "not supported by bpfsnap serve"),
            ("requireandverifyclientcert", true, "invalid ClientAuth"),
            (
                "",
                true,
                "client CA's have been configured without a Client Auth Policy",
            ),
            ("NoClientCert", true, "without a Client Auth Policy"),
            (
                "RequireAndVerifyClientCert",
                true,
                "tls_server_config.client_ca_file: cannot read /no/such/ca.pem",
            ),
        ] {
            let config = TlsServerConfig {
                client_auth_type: auth_type.into(),
                client_ca_file: if ca {
                    "/no/such/ca.pem".into()
                } else {
                    String::new()
                },
                ..TlsServerConfig::default()
            };
            let err = match client_verifier(&config, provider.clone()) {
                Ok(_) => panic!("{auth_type:?} accepted"),
                Err(err) => err,
            };
            assert!(err.contains(says), "{auth_type:?}: {err}");
        }
        for auth_type in ["", "NoClientCert"] {
            let config = TlsServerConfig {
                client_auth_type: auth_type.into(),
                ..TlsServerConfig::default()
            };
            assert!(matches!(
                client_verifier(&config, provider.clone()),
                Ok(None)
            ));
        }
    }
}
