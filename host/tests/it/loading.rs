//! Components are checked before anything runs.

use super::*;
use agora_host::LoadError;

#[test]
fn a_precompiled_artifact_is_refused_before_compiling() {
    let cwasm = runtime()
        .engine()
        .precompile_component(&guest("hostile"))
        .unwrap();
    assert!(matches!(
        runtime().load(&cwasm),
        Err(LoadError::Precompiled)
    ));
}

#[test]
fn an_oversized_component_is_refused_before_compiling() {
    let mut bytes = guest("hostile");
    bytes.resize(agora_host::limits::MAX_COMPONENT_BYTES + 1, 0);
    let error = runtime().load(&bytes).err().expect("refused");
    assert!(matches!(error, LoadError::TooLarge { .. }));
    assert_eq!(
        error.outcome(),
        Outcome::LimitExceeded {
            limit: agora_host::LimitKind::ComponentSize,
            message: error.to_string()
        }
    );
}

#[test]
fn malformed_and_tampered_bytes_are_refused() {
    assert!(matches!(runtime().load(b"hello"), Err(LoadError::NotWasm)));
    let core_module = b"\0asm\x01\0\0\0";
    assert!(matches!(
        runtime().load(core_module),
        Err(LoadError::CoreModule)
    ));
    let mut tampered = guest("saxpy");
    let middle = tampered.len() / 2;
    for b in &mut tampered[middle..middle + 64] {
        *b ^= 0x5a;
    }
    assert!(matches!(
        runtime().load(&tampered),
        Err(LoadError::Invalid(_))
    ));
}

#[test]
fn a_component_of_another_world_is_refused() {
    let empty = wasmtime_component_text("(component)");
    let error = runtime().load(&empty).err().expect("refused");
    assert!(matches!(error, LoadError::WrongWorld(_)), "{error}");
    assert!(error.to_string().contains("run"), "{error}");
}

#[test]
fn table_growth_past_the_limit_fails_cleanly() {
    // A component whose `run` grows a table without bound. It imports the
    // contract at 0.1.0: a job built before 0.1.1 still links and runs.
    let wat = r#"(component
      (import "agora:compute/data@0.1.0" (instance $data (export "blob" (type (sub resource)))))
      (alias export $data "blob" (type $blob))
      (core module $m
        (memory (export "memory") 1)
        (table $t 1 funcref)
        (func (export "run") (param i32) (result i32)
          (loop $grow
            (br_if $grow (i32.ne (table.grow $t (ref.null func) (i32.const 65536)) (i32.const -1))))
          (i32.const 0)))
      (core instance $i (instantiate $m))
      (func (export "run") (param "input" (own $blob)) (result (result (own $blob) (error string)))
        (canon lift (core func $i "run") (memory (core memory $i "memory")))))"#;
    let component = runtime()
        .load(&wasmtime_component_text(wat))
        .expect("the table component loads");
    let (report, _) = runtime().run(&component, Vec::new(), &Limits::default());
    assert_limit(&report, agora_host::LimitKind::Table);
}

fn wasmtime_component_text(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid component text")
}

/// Hand-written components that each use one proposal outside
/// `JOB_WASM_FEATURES` (the market's tests read the same files).
fn unsupported_feature_components() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wat");
    ["gc-types", "function-subtypes", "threads", "shared-memory"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                wat::parse_file(dir.join(format!("{name}.wat"))).expect("valid component text"),
            )
        })
        .collect()
}

#[test]
fn a_component_using_a_feature_the_engine_lacks_is_refused_before_compiling() {
    for (name, bytes) in unsupported_feature_components() {
        match runtime().load(&bytes) {
            Err(LoadError::UnsupportedFeature(why)) => println!("{name}: {why}"),
            other => panic!(
                "{name}: expected an unsupported feature, got {:?}",
                other.map(|_| "loaded")
            ),
        }
    }
}
