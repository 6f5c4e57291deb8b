//! HTTP basic authentication against the web config's `basic_auth_users`
//! (user → bcrypt hash), as exporter-toolkit's web/handler.go checks it:
//! every request, every path; 401 with `WWW-Authenticate: Basic` otherwise.
//!
//! bcrypt is slow on purpose (cost 10: tens of milliseconds), and a scraper
//! sends the same credentials every few seconds: like exporter-toolkit,
//! results are cached. Unlike it, the cache holds no password: its keys are
//! HMAC-SHA256 tags of (user, hash, password) under a key drawn at start, so
//! a memory dump yields nothing to try elsewhere. One bcrypt runs at a time
//! (as there), so wrong guesses cannot take every core. An unknown user costs
//! a bcrypt all the same (against another user's hash), so that response
//! times do not tell which users exist.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use base64::Engine;
use ring::hmac;

/// Results kept at most; past this the cache starts again empty.
const CACHE_SIZE: usize = 100;

pub struct Authenticator {
    key: hmac::Key,
    /// HMAC tag of the credentials → whether they were right.
    cache: Mutex<HashMap<Vec<u8>, bool>>,
    /// Held while bcrypt runs.
    bcrypt: Mutex<()>,
}

impl Authenticator {
    pub fn new() -> Result<Authenticator, String> {
        let random = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &random)
            .map_err(|_| "no random bytes from the system for the credentials cache".to_string())?;
        Ok(Authenticator {
            key,
            cache: Mutex::new(HashMap::new()),
            bcrypt: Mutex::new(()),
        })
    }

    /// Whether `authorization` (the request's header) holds the password of
    /// one of `users`.
    pub fn allows(&self, users: &BTreeMap<String, String>, authorization: &str) -> bool {
        let Some((user, password)) = basic_credentials(authorization) else {
            return false;
        };
        let known = std::str::from_utf8(&user)
            .ok()
            .and_then(|user| users.get(user));
        // An unknown user is checked against another user's hash, then
        // refused: the same work as a wrong password.
        let Some(hash) = known.or_else(|| users.values().next()) else {
            return false;
        };
        let tag = self.tag(&user, hash, &password);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tag.as_ref())
            .copied();
        let right = match cached {
            Some(right) => right,
            None => {
                let right = {
                    let _one_at_a_time = self.bcrypt.lock().unwrap_or_else(PoisonError::into_inner);
                    bcrypt::verify(&password, hash).unwrap_or(false)
                };
                let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
                if cache.len() >= CACHE_SIZE {
                    cache.clear();
                }
                cache.insert(tag.as_ref().to_vec(), right);
                right
            }
        };
        right && known.is_some()
    }

    /// The cache key of these credentials: each part with its length first,
    /// so that no two triples make the same message.
    fn tag(&self, user: &[u8], hash: &str, password: &[u8]) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.key);
        for part in [user, hash.as_bytes(), password] {
            context.update(&(part.len() as u64).to_le_bytes());
            context.update(part);
        }
        context.sign()
    }
}

/// The user and password of an `Authorization: Basic` header, as Go's
/// Request.BasicAuth reads it: the scheme without case, then standard
/// base64 of `user:password` (the user up to the first colon).
pub fn basic_credentials(header: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    const SCHEME: &str = "basic ";
    let scheme = header.get(..SCHEME.len())?;
    if !scheme.eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&header[SCHEME.len()..])
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(credentials: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(credentials)
        )
    }

    #[test]
    fn credentials_are_read_as_go_reads_them() {
        let some = |user: &str, password: &str| Some((user.into(), password.into()));
        for (header, expected) in [
            (basic("alice:secret"), some("alice", "secret")),
            (basic("alice:se:cret"), some("alice", "se:cret")),
            (basic("alice:"), some("alice", "")),
            (basic(":secret"), some("", "secret")),
            (format!("BASIC {}", &basic("a:b")[6..]), some("a", "b")),
            (basic("no colon"), None),
            ("Basic".into(), None),
            ("Basic not base64!".into(), None),
            (format!("Basic  {}", &basic("a:b")[6..]), None),
            (format!("Bearer {}", &basic("a:b")[6..]), None),
            ("".into(), None),
            ("é".into(), None),
        ] {
            assert_eq!(basic_credentials(&header), expected, "{header:?}");
        }
    }

    #[test]
    fn only_a_known_user_with_the_right_password_passes() {
        let users = BTreeMap::from([
            ("alice".to_string(), bcrypt::hash("secret", 4).unwrap()),
            ("bob".to_string(), bcrypt::hash("hunter2", 4).unwrap()),
        ]);
        let auth = Authenticator::new().unwrap();
        for _ in 0..2 {
            // Twice: the second time from the cache.
            for (credentials, allowed) in [
                ("alice:secret", true),
                ("bob:hunter2", true),
                ("alice:hunter2", false),
                ("alice:Secret", false),
                ("carol:secret", false),
                ("Alice:secret", false),
            ] {
                assert_eq!(
                    auth.allows(&users, &basic(credentials)),
                    allowed,
                    "{credentials}"
                );
            }
        }
        assert!(!auth.allows(&users, ""));
        assert!(!auth.allows(&BTreeMap::new(), &basic("alice:secret")));
        let cache = auth.cache.lock().unwrap();
        assert_eq!(cache.len(), 6, "one entry per credentials");
        // Tags, not passwords.
        assert!(cache.keys().all(|key| key.len() == 32));
    }
}
