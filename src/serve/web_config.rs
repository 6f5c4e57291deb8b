//! `--web.config.file`: exporter-toolkit's web configuration, the file
//! node_exporter and ebpf_exporter take, read the way exporter-toolkit reads
//! it (web/tls_config.go): strictly (a key it does not know is an error),
//! relative paths from the file's directory, and again when it changes, so
//! that renewed certificates and changed passwords apply to the next
//! connection without a restart.
//!
//! - `tls_server_config` (see [`tls`]): TLS 1.2 and 1.3 with rustls,
//!   certificate and key from files or inline, client certificates verified
//!   against `client_ca_file` with `client_auth_type`
//!   `RequireAndVerifyClientCert` (or `VerifyClientCertIfGiven`), versions,
//!   cipher suites and curves by their Go names.
//! - `basic_auth_users`: user → bcrypt hash (see [`auth`]).
//! - `http_server_config.headers`: the headers exporter-toolkit allows,
//!   added to every response; `http2` is accepted (bpfsnap speaks HTTP/1.1).
//!
//! Refused, each with a message saying so: `rate_limit` (`--web.max-requests`
//! bounds scrapes in flight), `client_allowed_sans`, and the client auth
//! types that take a certificate nobody verified.
//!
//! [`tls`]: super::tls
//! [`auth`]: super::auth

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Deserializer};

use super::tls;
use crate::log::Log;
use crate::BadInput;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfigFile {
    #[serde(deserialize_with = "null_as_default")]
    pub tls_server_config: TlsServerConfig,
    #[serde(deserialize_with = "null_as_default")]
    pub http_server_config: HttpServerConfig,
    #[serde(deserialize_with = "null_as_default")]
    pub rate_limit: RateLimit,
    #[serde(deserialize_with = "unique_keys")]
    pub basic_auth_users: BTreeMap<String, String>,
}

/// exporter-toolkit's `tls_server_config`, its keys and their Go spellings.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    pub cert: String,
    pub key: String,
    pub client_ca: String,
    pub cert_file: String,
    pub key_file: String,
    pub client_auth_type: String,
    pub client_ca_file: String,
    pub cipher_suites: Vec<String>,
    pub curve_preferences: Vec<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub client_allowed_sans: Option<Vec<String>>,
}

impl TlsServerConfig {
    /// Whether TLS is asked for: any of its certificate, key or client keys
    /// set (exporter-toolkit's IsEnabled); versions or suites alone are not.
    pub fn enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.cert_file,
            &self.key_file,
            &self.client_auth_type,
            &self.client_ca_file,
        ]
        .iter()
        .any(|value| !value.is_empty())
    }

    /// The files it names, relative paths taken from `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        for path in [
            &mut self.cert_file,
            &mut self.key_file,
            &mut self.client_ca_file,
        ] {
            if !path.is_empty() && Path::new(path.as_str()).is_relative() {
                *path = dir.join(path.as_str()).to_string_lossy().into_owned();
            }
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        [&self.cert_file, &self.key_file, &self.client_ca_file]
            .into_iter()
            .filter(|path| !path.is_empty())
            .map(PathBuf::from)
            .collect()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    pub http2: Option<bool>,
    #[serde(deserialize_with = "unique_keys")]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimit {
    pub burst: Option<u64>,
    pub interval: Option<serde_yaml_ng::Value>,
}

/// A key written with no value (`tls_server_config:`) is its default, as
/// Go's YAML reader has it.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A mapping whose keys may each appear once (Go's strict reader refuses a
/// key set twice; serde's maps would keep the last); none (`key:`) is empty.
fn unique_keys<'de, D>(deserializer: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a mapping of strings to strings")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if entries.contains_key(&key) {
                    return Err(serde::de::Error::custom(format!("key {key:?} set twice")));
                }
                entries.insert(key, value);
            }
            Ok(entries)
        }
    }
    deserializer.deserialize_any(Unique)
}

/// The headers exporter-toolkit lets a web config set, with the values it
/// allows (none listed: any).
const SETTABLE_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A web config read and checked: what the server uses.
pub struct WebConfig {
    /// For every connection, when TLS is configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// user → bcrypt hash; empty: no authentication.
    pub users: BTreeMap<String, String>,
    /// Added to every response.
    pub headers: Vec<(String, String)>,
    /// The files it was read from (the config's own first), to see changes.
    files: Vec<PathBuf>,
}

impl WebConfig {
    /// Reads and checks the web config at `path`; the error is one line
    /// naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read web config {}: {err}", path.display()))?;
        WebConfig::parse(&text, path).map_err(|err| format!("web config {}: {err}", path.display()))
    }

    /// The config `text` of the file at `path`.
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, String> {
        // An empty file (or comments only) is a config with nothing set.
        let file: Option<WebConfigFile> = crate::spec::deserialize_yaml_strictly(text)?;
        let mut file = file.unwrap_or_default();
        refuse_unsupported(&file)?;
        let headers = check_headers(&file.http_server_config.headers)?;
        check_users(&file.basic_auth_users)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        file.tls_server_config.resolve_paths(dir);
        let tls = match file.tls_server_config.enabled() {
            true => Some(Arc::new(tls::server_config(&file.tls_server_config)?)),
            false => None,
        };
        let mut files = vec![path.to_path_buf()];
        files.extend(file.tls_server_config.files());
        Ok(WebConfig {
            tls,
            users: file.basic_auth_users,
            headers,
            files,
        })
    }
}

/// What exporter-toolkit has and bpfsnap does not do, said instead of
/// ignored: a config that asks for it would otherwise be less safe or less
/// limited than its author thinks.
fn refuse_unsupported(file: &WebConfigFile) -> Result<(), String> {
    if !file.rate_limit.interval.as_ref().is_none_or(zero_duration) {
        return Err(
            "rate_limit: not supported by bpfsnap serve: remove it (--web.max-requests \
                    bounds the scrapes in flight, and scrapes over it get 503)"
                .into(),
        );
    }
    if file.tls_server_config.client_allowed_sans.is_some() {
        return Err(
            "tls_server_config.client_allowed_sans: not supported by bpfsnap serve: \
                    remove it and give the clients certificates from a CA of their own \
                    (client_ca_file)"
                .into(),
        );
    }
    Ok(())
}

/// Whether a Go duration as YAML gives it (nanoseconds, or a string such as
/// "0s") is zero: a rate limit of interval 0 is off.
fn zero_duration(value: &serde_yaml_ng::Value) -> bool {
    match value {
        serde_yaml_ng::Value::Null => true,
        serde_yaml_ng::Value::Number(n) => n.as_f64() == Some(0.0),
        serde_yaml_ng::Value::String(text) => {
            let unit = text.trim_start_matches(['0', '.']);
            text.starts_with('0') && ["", "ns", "us", "µs", "ms", "s", "m", "h"].contains(&unit)
        }
        _ => false,
    }
}

/// The headers to add to every response, if exporter-toolkit allows them
/// (its validateHeaderConfig).
fn check_headers(headers: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    let mut checked = Vec::new();
    for (name, value) in headers {
        let Some((_, allowed)) = SETTABLE_HEADERS.iter().find(|(known, _)| known == name) else {
            let names: Vec<&str> = SETTABLE_HEADERS.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "http_server_config.headers: HTTP header {name:?} can not be configured: \
                 use one of {}",
                names.join(", ")
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers: invalid value for {name}: expected one of {}, \
                 but got {value:?}",
                allowed.join(", ")
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(format!(
                "http_server_config.headers: the value of {name} holds a control character"
            ));
        }
        checked.push((name.clone(), value.clone()));
    }
    Ok(checked)
}

/// Every password a bcrypt hash, as exporter-toolkit checks at start.
fn check_users(users: &BTreeMap<String, String>) -> Result<(), String> {
    for (user, hash) in users {
        let cost = hash
            .parse::<bcrypt::HashParts>()
            .map(|parts| parts.get_cost());
        if !matches!(cost, Ok(4..=31)) {
            return Err(format!(
                "basic_auth_users: the password of {user:?} is not a bcrypt hash: give \
                 the hash, as `htpasswd -nbBC 10 \"\" PASSWORD | tr -d ':\\n'` prints it"
            ));
        }
    }
    Ok(())
}

/// The web config file, read again when it or a file it names changes.
pub struct WebConfigSource {
    path: PathBuf,
    log: Log,
    current: Mutex<Current>,
}

struct Current {
    /// The files' identities when last read: a change is any difference.
    stamps: Vec<Option<Stamp>>,
    files: Vec<PathBuf>,
    /// The config, or why it cannot be used; whether TLS was on at start.
    config: Result<Arc<WebConfig>, String>,
    tls_at_start: bool,
}

/// What says that a file changed: replaced (device, inode), rewritten
/// (size, modification and change times).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp(
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

impl WebConfigSource {
    /// Reads the web config at `path`: an error in it is bad input.
    pub fn open(path: &Path, log: Log) -> Result<WebConfigSource> {
        let config = WebConfig::load(path).map_err(|err| BadInput::wrap(anyhow!(err)))?;
        let files = config.files.clone();
        Ok(WebConfigSource {
            path: path.to_path_buf(),
            log,
            current: Mutex::new(Current {
                stamps: files.iter().map(|file| stamp(file)).collect(),
                files,
                tls_at_start: config.tls.is_some(),
                config: Ok(Arc::new(config)),
            }),
        })
    }

    /// The config as it is now: read again if a file changed. A config that
    /// became invalid is refused until it is fixed (requests get 500, TLS
    /// handshakes fail), as exporter-toolkit does; why is logged once.
    pub fn current(&self) -> Result<Arc<WebConfig>, String> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let stamps: Vec<Option<Stamp>> = current.files.iter().map(|file| stamp(file)).collect();
        if stamps == current.stamps {
            return current.config.clone();
        }
        let reloaded = WebConfig::load(&self.path).and_then(|config| {
            match config.tls.is_some() == current.tls_at_start {
                true => Ok(config),
                false => Err(format!(
                    "web config {}: switching between TLS and plain HTTP needs a restart of \
                     bpfsnap serve",
                    self.path.display()
                )),
            }
        });
        match &reloaded {
            Ok(_) => self
                .log
                .info(&format!("web config {} read again", self.path.display())),
            Err(err) => self
                .log
                .error(&format!("{err}; refusing requests until it is fixed")),
        }
        // The identities seen before reading: a file changed since is read
        // again at the next call (so is a config naming other files, once).
        current.stamps = stamps;
        if let Ok(config) = &reloaded {
            current.files = config.files.clone();
        }
        current.config = reloaded.map(Arc::new);
        current.config.clone()
    }

    /// Reads the file and those it names again, now: once bpfsnap has
    /// dropped its capabilities, to find at start, not at the first renewal
    /// of a certificate, that it can no longer read them.
    pub fn check_readable(&self) -> Result<()> {
        WebConfig::load(&self.path).map(|_| ()).map_err(|err| {
            anyhow!(
                "{err} (once capabilities are dropped: bpfsnap reads it again when it \
                 changes, so the user it runs as must be able to read these files, or keep \
                 dac_read_search with --keep-caps)"
            )
        })
    }

    /// Whether it configured TLS at start (for good: see [`Self::current`]).
    pub fn tls(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tls_at_start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bcrypt hash of "secret" at the least cost.
    fn hash() -> String {
        bcrypt::hash("secret", 4).unwrap()
    }

    fn parse(text: &str) -> Result<WebConfig, String> {
        WebConfig::parse(text, Path::new("/etc/bpfsnap/web.yml"))
    }

    #[test]
    fn valid_configs_without_tls() {
        let hash = hash();
        for (text, users, headers) in [
            ("", 0, 0),
            ("# nothing yet\n", 0, 0),
            ("tls_server_config:\nbasic_auth_users:\n", 0, 0),
            (
                &format!("basic_auth_users:\n  alice: {hash}\n  bob: '{hash}'\n")[..],
                2,
                0,
            ),
            // Versions alone do not turn TLS on (exporter-toolkit's IsEnabled).
            ("tls_server_config:\n  min_version: TLS13\n", 0, 0),
            (
                "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
                 Strict-Transport-Security: max-age=31536000\n",
                0,
                2,
            ),
            ("rate_limit:\n  interval: 0s\n  burst: 10\n", 0, 0),
            ("rate_limit:\n  interval: 0\n", 0, 0),
        ] {
            let config = parse(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
            assert!(config.tls.is_none(), "{text:?}");
            assert_eq!(config.users.len(), users, "{text:?}");
            assert_eq!(config.headers.len(), headers, "{text:?}");
            assert_eq!(config.files, [PathBuf::from("/etc/bpfsnap/web.yml")]);
        }
    }

    #[test]
    fn every_mistake_is_one_line_naming_the_key() {
        let server = SERVER_MISTAKES
            .iter()
            .map(|(text, says)| (text.to_string(), *says));
        for (text, says) in key_and_user_mistakes().into_iter().chain(server) {
            let err = match parse(&text) {
                Ok(_) => panic!("{text:?} accepted"),
                Err(err) => err,
            };
            assert!(err.contains(says), "{text:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    /// Web configs with unknown keys, broken YAML or a wrong
    /// basic_auth_users, with what the error about each must say.
    fn key_and_user_mistakes() -> Vec<(String, &'static str)> {
        let hash = hash();
        vec![
            (
                "tls_server_confg:\n  cert_file: a\n".into(),
                "line 1: unknown field `tls_server_confg`",
            ),
            (
                "tls_server_config:\n  certfile: a.pem\n".into(),
                "line 2: tls_server_config: unknown field `certfile`",
            ),
            (
                "basic_auth_users:\n  alice: secret\n".into(),
                "the password of \"alice\" is not a bcrypt hash",
            ),
            (
                format!(
                    "basic_auth_users:\n  alice: {}\n",
                    hash.replace("$04$", "$99$")
                ),
                "not a bcrypt hash",
            ),
            (
                "basic_auth_users: [alice]\n".into(),
                "basic_auth_users: invalid type: sequence",
            ),
            (
                format!("basic_auth_users:\n  alice: {hash}\n  alice: {hash}\n"),
                "basic_auth_users: key \"alice\" set twice",
            ),
            ("tls_server_config:\n  cert_file: [a\n".into(), "line "),
            ("- a\n".into(), "invalid type: sequence"),
        ]
    }

    /// Web configs whose tls_server_config, rate_limit or
    /// http_server_config is wrong or asks for what bpfsnap serve does not
    /// do, with what the error about each must say.
    const SERVER_MISTAKES: &[(&str, &str)] = &[
        (
            "tls_server_config:\n  key_file: key.pem\n",
            "tls_server_config: missing one of cert or cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: cert.pem\n  key_file: key.pem\n",
            "tls_server_config.cert_file: cannot read /etc/bpfsnap/cert.pem",
        ),
        (
            "tls_server_config:\n  cert: not a PEM\n  key_file: /k.pem\n",
            "tls_server_config.cert: no PEM certificate in it",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 1\n",
            "rate_limit: not supported",
        ),
        (
            "tls_server_config:\n  client_allowed_sans: [client]\n",
            "client_allowed_sans: not supported",
        ),
        (
            "http_server_config:\n  headers:\n    Server: bpfsnap\n",
            "HTTP header \"Server\" can not be configured",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "invalid value for X-Frame-Options: expected one of deny, sameorigin",
        ),
        (
            "http_server_config:\n  http3: true\n",
            "unknown field `http3`",
        ),
    ];

    #[test]
    fn zero_durations_turn_the_rate_limit_off() {
        let value = |text: &str| serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text).unwrap();
        for (text, zero) in [
            ("0", true),
            ("0s", true),
            ("0ms", true),
            ("0.0h", true),
            ("~", true),
            ("1s", false),
            ("10ms", false),
            ("1", false),
            ("s", false),
            ("0x", false),
        ] {
            assert_eq!(zero_duration(&value(text)), zero, "{text}");
        }
    }
}
