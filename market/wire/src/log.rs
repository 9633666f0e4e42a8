//! The package log: per package, an append-only chain of entries (release,
//! yank, key rotation), each signed by the package's current key and
//! chained by the blake3 hash of the entry before it.
//!
//! A client that remembers the head it last saw (sequence number and hash)
//! detects a swapped version (a release's digest differs from the log), a
//! rewritten history (a chain or signature that does not verify) and a
//! rollback (a log shorter than, or diverging from, the head it knows).

use crate::keys::{KeyId, Keypair};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The hash `prev` holds in the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum LogAction {
    /// A new version with the blake3 digest (hex) and size of its component.
    Release {
        version: String,
        digest: String,
        size: u64,
    },
    /// A version users should no longer pick (its bytes stay downloadable).
    Yank { version: String },
    /// From the next entry on, `new_key` signs for the package.
    RotateKey { new_key: KeyId },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogEntry {
    pub package: String,
    pub seq: u64,
    /// Hash of entry `seq - 1`, or [`GENESIS`].
    pub prev: String,
    #[serde(flatten)]
    pub action: LogAction,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub signer: KeyId,
    pub signature: String,
}

impl LogEntry {
    /// Build and sign the entry that follows `prev` (`None` for the first).
    pub fn new_signed(
        key: &Keypair,
        package: &str,
        prev: Option<(u64, &str)>,
        action: LogAction,
    ) -> LogEntry {
        let (seq, prev) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (0, GENESIS.to_string()),
        };
        let mut entry = LogEntry {
            package: package.into(),
            seq,
            prev,
            action,
            signer: key.id().clone(),
            signature: String::new(),
        };
        entry.signature = key.sign(&entry.signed_bytes());
        entry
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let action = serde_json::to_string(&self.action).expect("plain JSON");
        format!(
            "agora-package-log-v1\n{}\n{}\n{}\n{}\n{}",
            self.package, self.seq, self.prev, self.signer, action
        )
        .into_bytes()
    }

    /// This entry's hash: what the next entry's `prev` holds.
    pub fn hash(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.signed_bytes());
        hasher.update(self.signature.as_bytes());
        hasher.finalize().to_hex().to_string()
    }
}

/// A release as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub digest: String,
    pub size: u64,
    pub yanked: bool,
}

/// What a verified log says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogState {
    pub package: String,
    /// The key that signs the next entry.
    pub owner: KeyId,
    pub releases: BTreeMap<String, Release>,
    pub head_seq: u64,
    pub head_hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("the log is empty")]
    Empty,
    #[error("entry {seq}: {reason}")]
    Invalid { seq: u64, reason: String },
    #[error("rollback: the log ends at entry {got} but entry {known} was seen before")]
    Rollback { known: u64, got: u64 },
    #[error("the log diverges from the one seen before at entry {seq} (a rewritten history)")]
    Diverged { seq: u64 },
}

/// Verify a whole log; `known` is the head (seq, hash) this client saw last.
pub fn verify_log(entries: &[LogEntry], known: Option<(u64, &str)>) -> Result<LogState, LogError> {
    let first = entries.first().ok_or(LogError::Empty)?;
    let mut state = LogState {
        package: first.package.clone(),
        owner: first.signer.clone(),
        releases: BTreeMap::new(),
        head_seq: 0,
        head_hash: GENESIS.into(),
    };
    for (i, entry) in entries.iter().enumerate() {
        let bad = |reason: String| LogError::Invalid {
            seq: i as u64,
            reason,
        };
        if entry.seq != i as u64 {
            return Err(bad(format!("sequence number {} out of order", entry.seq)));
        }
        if entry.package != state.package {
            return Err(bad(format!("entry of another package `{}`", entry.package)));
        }
        if entry.prev != state.head_hash {
            return Err(bad("does not chain to the entry before it".into()));
        }
        if entry.signer != state.owner {
            return Err(bad(format!(
                "signed by {} but the package key is {}",
                entry.signer, state.owner
            )));
        }
        entry
            .signer
            .verify(&entry.signed_bytes(), &entry.signature)
            .map_err(|e| bad(e.to_string()))?;
        match &entry.action {
            LogAction::Release {
                version,
                digest,
                size,
            } => {
                if state.releases.contains_key(version) {
                    return Err(bad(format!("version {version} released twice")));
                }
                state.releases.insert(
                    version.clone(),
                    Release {
                        digest: digest.clone(),
                        size: *size,
                        yanked: false,
                    },
                );
            }
            LogAction::Yank { version } => match state.releases.get_mut(version) {
                Some(r) => r.yanked = true,
                None => return Err(bad(format!("yank of unknown version {version}"))),
            },
            LogAction::RotateKey { new_key } => state.owner = new_key.clone(),
        }
        state.head_seq = entry.seq;
        state.head_hash = entry.hash();
        if let Some((known_seq, known_hash)) = known
            && known_seq == entry.seq
            && known_hash != state.head_hash
        {
            return Err(LogError::Diverged { seq: known_seq });
        }
    }
    if let Some((known_seq, _)) = known
        && state.head_seq < known_seq
    {
        return Err(LogError::Rollback {
            known: known_seq,
            got: state.head_seq,
        });
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(v: &str, d: &str) -> LogAction {
        LogAction::Release {
            version: v.into(),
            digest: d.into(),
            size: 1,
        }
    }

    fn chain(key: &Keypair, actions: Vec<LogAction>) -> Vec<LogEntry> {
        let mut log: Vec<LogEntry> = Vec::new();
        for action in actions {
            let prev = log.last().map(|e| (e.seq, e.hash()));
            log.push(LogEntry::new_signed(
                key,
                "pkg",
                prev.as_ref().map(|(s, h)| (*s, h.as_str())),
                action,
            ));
        }
        log
    }

    #[test]
    fn a_good_log_verifies() {
        let key = Keypair::generate();
        let log = chain(
            &key,
            vec![
                release("1.0.0", "aa"),
                release("1.1.0", "bb"),
                LogAction::Yank {
                    version: "1.0.0".into(),
                },
            ],
        );
        let state = verify_log(&log, None).unwrap();
        assert!(state.releases["1.0.0"].yanked);
        assert_eq!(state.releases["1.1.0"].digest, "bb");
        assert_eq!(
            verify_log(&log, Some((1, &log[1].hash())))
                .unwrap()
                .head_seq,
            2
        );
    }

    #[test]
    fn swaps_rewrites_and_rollbacks_are_detected() {
        let key = Keypair::generate();
        let log = chain(&key, vec![release("1.0.0", "aa"), release("1.1.0", "bb")]);
        let mut swapped = log.clone();
        swapped[1].action = release("1.1.0", "evil");
        assert!(matches!(
            verify_log(&swapped, None),
            Err(LogError::Invalid { seq: 1, .. })
        ));

        let known = (1, log[1].hash());
        assert_eq!(
            verify_log(&log[..1], Some((known.0, &known.1))),
            Err(LogError::Rollback { known: 1, got: 0 })
        );

        // A validly signed but different history (the key holder rewrote it).
        let other = chain(&key, vec![release("1.0.0", "aa"), release("1.1.0", "cc")]);
        assert_eq!(
            verify_log(&other, Some((known.0, &known.1))),
            Err(LogError::Diverged { seq: 1 })
        );
    }

    #[test]
    fn only_the_current_key_signs() {
        let (old, new) = (Keypair::generate(), Keypair::generate());
        let mut log = chain(
            &old,
            vec![
                release("1.0.0", "aa"),
                LogAction::RotateKey {
                    new_key: new.id().clone(),
                },
            ],
        );
        let prev = (log[1].seq, log[1].hash());
        log.push(LogEntry::new_signed(
            &old,
            "pkg",
            Some((prev.0, &prev.1)),
            release("2.0.0", "dd"),
        ));
        assert!(matches!(
            verify_log(&log, None),
            Err(LogError::Invalid { seq: 2, .. })
        ));
        log.pop();
        log.push(LogEntry::new_signed(
            &new,
            "pkg",
            Some((prev.0, &prev.1)),
            release("2.0.0", "dd"),
        ));
        assert_eq!(verify_log(&log, None).unwrap().owner, *new.id());
    }
}
