//! Per-tenant ingestion credentials: a random password for the tenant's clients and its bcrypt
//! hash, the only form that reaches a collector (basicauth's htpasswd file).

use rand::RngExt;
use rand::distr::Alphanumeric;

/// Length of generated passwords: 32 alphanumerics, about 190 bits of entropy.
const PASSWORD_LEN: usize = 32;

/// bcrypt work factor. The passwords are random with ~190 bits of entropy, so a high factor
/// adds nothing against guessing, while the collector verifies the hash on every request:
/// keep it at bcrypt's minimum so authentication stays cheap on the data path.
const BCRYPT_COST: u32 = 4;

/// A freshly issued credential.
pub struct IssuedCredential {
    pub password: String,
    /// `$2y$...` bcrypt hash of the password.
    pub bcrypt_hash: String,
}

#[derive(Debug, thiserror::Error)]
#[error("could not hash the ingestion password: {0}")]
pub struct HashError(#[from] bcrypt::BcryptError);

/// Generates a new random password and its bcrypt hash.
pub fn issue_credential() -> Result<IssuedCredential, HashError> {
    let password: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect();
    let bcrypt_hash = hash_password(&password)?;
    // Made from this password just now: the reconcile that next reads it back need not check.
    remember_verified(&password, &bcrypt_hash);
    Ok(IssuedCredential {
        password,
        bcrypt_hash,
    })
}

/// bcrypt in the `$2y$` flavour that htpasswd files use.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    Ok(bcrypt::hash_with_result(password, BCRYPT_COST)?.format_for_version(bcrypt::Version::TwoY))
}

/// True when `hash` is a bcrypt hash of `password`. Every reconcile of a tenant checks its
/// stored credential, and bcrypt is slow by design (even at cost 4, half of the operator's CPU
/// in a burst of thousands of tenants), so a pair verified once is remembered: by hash, with
/// a SHA-256 of the password (never the password itself).
pub fn verify_password(password: &str, hash: &str) -> bool {
    let digest = password_digest(password);
    let verified = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
    if verified.get(hash) == Some(&digest) {
        return true;
    }
    drop(verified);
    let intact = bcrypt::verify(password, hash).unwrap_or(false);
    if intact {
        remember_verified(password, hash);
    }
    intact
}

fn password_digest(password: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(password.as_bytes()).into()
}

/// Remembers that `hash` is a bcrypt hash of `password`.
fn remember_verified(password: &str, hash: &str) {
    let digest = password_digest(password);
    let mut verified = VERIFIED.lock().unwrap_or_else(|p| p.into_inner());
    if verified.len() >= MAX_VERIFIED {
        verified.clear(); // a bound, not an LRU: a miss costs one bcrypt
    }
    verified.insert(hash.to_owned(), digest);
}

/// Verified pairs kept (about 100 bytes each).
const MAX_VERIFIED: usize = 100_000;

static VERIFIED: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, [u8; 32]>>,
> = std::sync::LazyLock::new(Default::default);

/// A bcrypt hash as the collector's htpasswd parser accepts it.
pub fn is_bcrypt_hash(hash: &str) -> bool {
    (hash.starts_with("$2y$") || hash.starts_with("$2a$") || hash.starts_with("$2b$"))
        && hash.len() == 60
        && !hash.contains([':', '\n'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_passwords_are_random_and_verify_against_their_hash() {
        let a = issue_credential().unwrap();
        let b = issue_credential().unwrap();
        assert_ne!(a.password, b.password);
        assert_eq!(a.password.len(), PASSWORD_LEN);
        assert!(a.bcrypt_hash.starts_with("$2y$04$"), "{}", a.bcrypt_hash);
        assert!(is_bcrypt_hash(&a.bcrypt_hash));
        assert!(verify_password(&a.password, &a.bcrypt_hash));
        assert!(!verify_password(&b.password, &a.bcrypt_hash));
        // Remembered pairs pass again; remembering never lets another password through.
        assert!(verify_password(&a.password, &a.bcrypt_hash));
        assert!(!verify_password(&b.password, &a.bcrypt_hash));
        assert!(!verify_password("", &a.bcrypt_hash));
    }
}
