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
    let seed = std::env::var("AGORA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xa60a);
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
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

/// Whatever a provider sends as its result (garbage, or well-formed and
/// signed reports with any outcome, usage, output and digest) never gets a
/// 5xx, and the books still balance afterwards.
#[test]
fn any_result_a_provider_sends_leaves_the_books_whole() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
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
    let signed_report = {
        let (p, lease_id) = (
            Keypair::from_file_json(&p.to_file_json()).unwrap(),
            lease_id.clone(),
        );
        let outcomes = agora_wire::api::RunOutcome::ALL;
        let fields = (
            0..outcomes.len(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
        );
        fields.prop_map(move |(outcome, output, true_digest, fuel, gpu)| {
            let digest = output.as_ref().map(|o| if true_digest { agora_wire::digest_hex(o) } else { "ab".repeat(32) });
            let outcome = outcomes[outcome];
            let signed = agora_wire::api::ResultReport::signed_bytes(&lease_id, outcome, digest.as_deref(), &[], fuel, gpu);
            let output = output.map(|o| crate::jobs::b64(&o));
            serde_json::to_vec(&json!({"outcome": outcome.as_str(), "message": "m", "output_base64": output, "output_digest": digest,
                "fuel_used": fuel, "gpu_time_us": gpu, "peak_memory_bytes": 1, "signature": p.sign(&signed)})).unwrap()
        })
    };
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        ".{0,200}".prop_map(String::into_bytes),
        signed_report,
    ];
    let mut runner = proptest::test_runner::TestRunner::new(config(64));
    runner
        .run(&bodies, |body| {
            let (status, reply) =
                runtime.block_on(call_on(&m.state, "POST", &path, Some(body), Some(&p), None));
            prop_assert!(!status.is_server_error(), "{status}: {reply}");
            Ok(())
        })
        .unwrap();
    runtime.block_on(m.assert_invariants());
}
