//! Property tests of what the market parses from strangers: component bytes
//! at publish and result reports from providers. A bounded number of cases
//! from a fixed seed (`AGORA_SEED=n` replays another).

use crate::jobs::{lease, provider, publish, submit};
use crate::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::RngSeed;
use std::sync::OnceLock;

fn config(cases: u32) -> ProptestConfig {
    let seed = std::env::var("AGORA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0xa60a);
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..ProptestConfig::default() }
}

fn saxpy() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| guest("saxpy"))
}

/// The magic and version of a component, so the parser goes past the first
/// check.
const COMPONENT_PREAMBLE: [u8; 8] = [0, b'a', b's', b'm', 0x0d, 0x00, 0x01, 0x00];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn inspection_answers_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000), preamble in any::<bool>()) {
        let bytes = if preamble { [COMPONENT_PREAMBLE.as_slice(), &bytes].concat() } else { bytes };
        let _ = agora_market::registry::inspect(&bytes);
    }

    #[test]
    fn inspection_answers_a_corrupted_component(flips in proptest::collection::vec((any::<Index>(), 1u8..), 1..8)) {
        let mut bytes = saxpy().to_vec();
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        let _ = agora_market::registry::inspect(&bytes);
    }
}

/// Whatever a provider sends as its result is a 4xx (never a 500), and the
/// lease still takes its honest result afterwards.
#[test]
fn any_result_body_gets_a_client_error() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let m = runtime.block_on(TestMarket::sqlite());
    let (p, lease_id) = runtime.block_on(async {
        publish(&m, "props").await;
        let buyer = Keypair::generate();
        m.fund(&buyer, 1_000_000).await;
        submit(&m, &buyer, "props", &[b"in"], 1_000, 1).await;
        let p = provider(&m, 1).await;
        let grant = lease(&m, &p).await.expect("a lease");
        (p, grant["lease_id"].as_str().unwrap().to_string())
    });
    let path = format!("/api/v1/leases/{lease_id}/result");
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        ".{0,200}".prop_map(String::into_bytes),
        (any::<u64>(), ".{0,20}", ".{0,70}").prop_map(|(fuel, outcome, digest)| {
            serde_json::to_vec(&json!({"outcome": outcome, "output_digest": digest, "fuel_used": fuel, "signature": "00"})).unwrap()
        }),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(config(64));
    runner
        .run(&bodies, |body| {
            let (status, reply) = runtime.block_on(call_on(&m.state, "POST", &path, Some(body), Some(&p), None));
            prop_assert!(status.is_client_error(), "{status}: {reply}");
            Ok(())
        })
        .unwrap();
    let (status, reply) = runtime.block_on(crate::jobs::answer(&m, &p, &json!({"lease_id": lease_id}), Ok(b"out")));
    assert_eq!(status, StatusCode::OK, "the honest result after the garbage: {reply}");
}
