//! Property tests of what this crate parses from strangers: signed-request
//! headers, the package log, result reports. A bounded number of cases from
//! a fixed seed (`AGORA_SEED=n` replays another), so CI sees the same ones.

use crate::api::{ResultReport, RunOutcome};
use crate::auth::{self, AuthError};
use crate::keys::Keypair;
use crate::log::{LogAction, LogEntry, verify_log};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

fn config() -> ProptestConfig {
    let seed = std::env::var("AGORA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xa60a);
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

const MARKET: &str = "https://market.example.org";

fn headers_of<'a>(list: &'a [(&'static str, String)]) -> impl Fn(&'static str) -> Option<&'a str> {
    move |name| {
        list.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A valid log of `versions.len()` releases by one key.
fn chain(key: &Keypair, versions: &[String]) -> Vec<LogEntry> {
    let mut log: Vec<LogEntry> = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        let prev = log.last().map(|e| (e.seq, e.hash()));
        let action = LogAction::Release {
            version: version.clone(),
            digest: format!("{i:064x}"),
            size: i as u64,
        };
        log.push(LogEntry::new_signed(
            key,
            "pkg",
            prev.as_ref().map(|(s, h)| (*s, h.as_str())),
            action,
        ));
    }
    log
}

proptest! {
    #![proptest_config(config())]

    /// Any header values: a typed answer, never a panic.
    #[test]
    fn any_headers_get_an_answer(key in ".{0,80}", origin in ".{0,80}", timestamp in ".{0,24}", nonce in ".{0,80}", signature in ".{0,140}") {
        let list = [(auth::HEADER_KEY, key), (auth::HEADER_ORIGIN, origin), (auth::HEADER_TIMESTAMP, timestamp), (auth::HEADER_NONCE, nonce), (auth::HEADER_SIGNATURE, signature)];
        let _ = auth::check_headers(headers_of(&list), 1_700_000_000_000);
    }

    /// A signature covers every byte of the body and the path, the method
    /// and the market: change any and it no longer verifies.
    #[test]
    fn a_signature_covers_every_byte(method in "(GET|POST)", path in "/[!-~]{0,60}", body in proptest::collection::vec(any::<u8>(), 1..200), at in any::<prop::sample::Index>(), flip in 1u8..) {
        let key = Keypair::generate();
        let now = 1_700_000_000_000;
        let list = auth::sign_request(&key, MARKET, &method, &path, &body, now);
        let verify = |market: &str, method: &str, path: &str, body: &[u8]| auth::verify_request(&[market.to_string()], method, path, headers_of(&list), body, now);
        prop_assert_eq!(verify(MARKET, &method, &path, &body).map(|s| s.key), Ok(key.id().clone()));
        let mut changed = body.clone();
        changed[at.index(body.len())] ^= flip;
        prop_assert_eq!(verify(MARKET, &method, &path, &changed), Err(AuthError::BadSignature));
        prop_assert_eq!(verify(MARKET, &method, &format!("{path}x"), &body), Err(AuthError::BadSignature));
        prop_assert_eq!(verify(MARKET, if method == "GET" { "POST" } else { "GET" }, &path, &body), Err(AuthError::BadSignature));
        let elsewhere = verify("https://another.example", &method, &path, &body);
        prop_assert!(matches!(elsewhere, Err(AuthError::OtherMarket { .. })), "{:?}", elsewhere);
    }

    /// Any change to a valid package log (a field, the order, a dropped or
    /// repeated entry) is detected.
    #[test]
    fn a_changed_log_never_verifies(count in 1usize..6, target in any::<prop::sample::Index>(), change in 0u8..7) {
        let key = Keypair::generate();
        let versions: Vec<String> = (0..count).map(|i| format!("1.0.{i}")).collect();
        let mut log = chain(&key, &versions);
        prop_assert!(verify_log(&log, None).is_ok());
        let i = target.index(count);
        match change {
            0 => log[i].seq += 1,
            1 => log[i].prev = "1".repeat(64),
            2 => log[i].package = "other".into(),
            3 => log[i].action = LogAction::Release { version: "9.9.9".into(), digest: "f".repeat(64), size: 1 },
            4 => log[i].signature = Keypair::generate().sign(&log[i].signed_bytes()),
            5 => { log.remove(i); if log.is_empty() { return Ok(()); } if i == count - 1 { return Ok(()); } }
            _ => { let copy = log[i].clone(); log.insert(i, copy); }
        }
        prop_assert!(verify_log(&log, None).is_err(), "change {} at {} went unnoticed", change, i);
    }

    /// Whatever JSON claims to be a log is answered, never a panic.
    #[test]
    fn any_log_json_gets_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(entries) = serde_json::from_slice::<Vec<LogEntry>>(&bytes) {
            let _ = verify_log(&entries, Some((3, "x")));
        }
    }

    /// A result's signed bytes read back as exactly its fields (so no two
    /// different results of well-formed leases sign the same bytes).
    #[test]
    fn result_signatures_read_back_as_their_fields(
        lease in "l[a-z0-9]{12}", outcome in 0..RunOutcome::ALL.len(), digest in proptest::option::of("[0-9a-f]{64}"), fuel in any::<u64>(), gpu in any::<u64>(),
    ) {
        let bytes = ResultReport::signed_bytes(&lease, RunOutcome::ALL[outcome], digest.as_deref(), &[], fuel, gpu);
        let text = String::from_utf8(bytes).unwrap();
        let fields: Vec<&str> = text.split('\n').collect();
        let read = (fields[1], fields[2], fields[3], fields[4].parse::<u64>().ok(), fields[5].parse::<u64>().ok());
        prop_assert_eq!(fields.len(), 6);
        prop_assert_eq!(fields[0], "agora-result-v1");
        prop_assert_eq!(read, (lease.as_str(), RunOutcome::ALL[outcome].as_str(), digest.as_deref().unwrap_or("-"), Some(fuel), Some(gpu)));
    }
}
