//! The supervisor kills what cannot be stopped in-process and the next job
//! runs on a fresh worker.

use super::*;
use agora_host::LimitKind;
use agora_host::pool::{ComponentBytes, PoolConfig, WorkerPool};
use std::time::{Duration, Instant};

fn pool(workers: usize) -> WorkerPool {
    WorkerPool::new(PoolConfig {
        program: env!("CARGO_BIN_EXE_agora-worker").into(),
        args: Vec::new(),
        workers,
        gpu: GpuChoice::Auto,
        sandbox: agora_host::SandboxConfig::default(),
    })
    .expect("workers start")
}

fn hostile_component() -> ComponentBytes {
    ComponentBytes::new(guest("hostile"))
}

#[test]
fn a_never_ending_shader_costs_one_worker_and_the_next_job_runs() {
    let pool = pool(1);
    let component = hostile_component();
    let mut limits = Limits {
        timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    limits.gpu.gpu_time_max = Duration::from_secs(1);
    let started = Instant::now();
    let result = pool.run(&component, b"gpu-hang", &limits);
    let outcome = &result.report.outcome;
    let stopped = match outcome {
        Outcome::JobError { message } => message.contains("device-lost"),
        Outcome::LimitExceeded {
            limit: LimitKind::Timeout,
            ..
        } => true,
        _ => false,
    };
    assert!(
        stopped,
        "expected a lost device or a timeout, got {outcome}"
    );
    println!(
        "outcome: {outcome} gpu {:?} poisoned {}",
        result.report.gpu, result.report.worker_poisoned
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(
        pool.counters().killed >= 1,
        "the hung worker was killed: {:?}",
        pool.counters()
    );

    let next = pool.run(&component, b"echo alive", &Limits::default());
    assert_ok(&next.report);
    assert_eq!(next.output.unwrap(), b"echo alive");
}

#[test]
fn a_warm_worker_compiles_once_and_reuses_the_component() {
    let pool = pool(1);
    let component = hostile_component();
    let first = pool.run(&component, b"noop", &Limits::default());
    assert_ok(&first.report);
    assert!(
        !first.report.compile_time.is_zero(),
        "the first job compiles"
    );
    for _ in 0..5 {
        let again = pool.run(&component, b"echo again", &Limits::default());
        assert_ok(&again.report);
        assert!(
            again.report.compile_time.is_zero(),
            "later jobs use the worker's cache"
        );
    }
    assert_eq!(pool.counters().started, 1);
    assert_eq!(pool.counters().killed, 0);
}

#[test]
fn limits_are_the_same_through_a_worker() {
    let pool = pool(1);
    let limits = Limits {
        fuel: 10_000_000,
        ..Limits::default()
    };
    let result = pool.run(&hostile_component(), b"fuel", &limits);
    assert_limit(&result.report, LimitKind::Fuel);
    assert_eq!(pool.counters().killed, 0, "a fuel trap needs no kill");
}

#[test]
fn a_refused_component_through_a_worker_is_reported() {
    let pool = pool(1);
    let result = pool.run(
        &ComponentBytes::new(b"not wasm".to_vec()),
        b"",
        &Limits::default(),
    );
    assert!(
        matches!(result.report.outcome, Outcome::Refused { .. }),
        "{}",
        result.report.outcome
    );
    let next = pool.run(&hostile_component(), b"noop", &Limits::default());
    assert_ok(&next.report);
}

#[test]
fn jobs_run_concurrently_on_several_workers() {
    let pool = pool(2);
    let component = hostile_component();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (pool, component) = (&pool, &component);
                s.spawn(move || {
                    pool.run(
                        component,
                        format!("echo {i}").as_bytes(),
                        &Limits::default(),
                    )
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let result = h.join().unwrap();
            assert_ok(&result.report);
            assert_eq!(result.output.unwrap(), format!("echo {i}").as_bytes());
        }
    });
}

#[test]
fn a_running_job_reports_progress_and_logs_while_it_runs() {
    let pool = pool(1);
    let started = Instant::now();
    let mut updates = Vec::new();
    let result = pool.run_observed(
        &hostile_component(),
        b"paced-log 8",
        &Limits::default(),
        &mut |u| updates.push((started.elapsed(), u)),
    );
    let ended = started.elapsed();
    assert!(result.report.outcome.is_ok(), "{}", result.report.outcome);
    assert!(updates.len() >= 2, "{updates:?}");
    assert!(
        updates[0].0 + Duration::from_millis(400) < ended,
        "the first update came while the job ran: {updates:?} ended {ended:?}"
    );
    let live: Vec<_> = updates.iter().flat_map(|(_, u)| u.logs.clone()).collect();
    assert_eq!(
        live[..],
        result.report.logs[..live.len()],
        "live lines are a prefix of the report's"
    );
    let progress: Vec<u64> = updates
        .iter()
        .filter_map(|(_, u)| u.progress.map(|p| p.0))
        .collect();
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]) && progress[0] >= 1,
        "{progress:?}"
    );
    assert_eq!(result.report.progress, Some((8, 8)));
}

/// A job logs as much as it may, each line of characters JSON escapes six
/// times over: its report still reaches the supervisor (an honest worker is
/// never lost to a chatty job), with the lines past MAX_LOG_BYTES dropped.
#[test]
fn a_job_logging_all_it_may_still_gets_its_answer_through() {
    let pool = pool(1);
    let result = pool.run(&hostile_component(), b"log-flood 10000", &Limits::default());
    assert_ok(&result.report);
    let kept: usize = result.report.logs.iter().map(|l| l.message.len()).sum();
    assert!(
        kept <= agora_host::limits::MAX_LOG_BYTES + 4096,
        "{kept} bytes of log kept"
    );
    assert!(
        result
            .report
            .logs
            .last()
            .unwrap()
            .message
            .contains("dropped"),
        "the drop is said"
    );
    assert_eq!(pool.counters().killed, 0, "no worker lost");
}

/// A job's shared inputs reach the guest host-side (`data.shared`, into a
/// GPU buffer and back) through the worker's frames; a name the job was not
/// given is none, and the next job of the same worker, given none, sees
/// none: nothing of one job's inputs stays for another.
#[test]
fn shared_inputs_reach_their_job_and_no_other() {
    let pool = pool(1);
    let component = hostile_component();
    let table: std::sync::Arc<[u8]> = (0..(1usize << 20) + 3)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    let shared = agora_host::SharedInputs::from([
        (
            "table".to_string(),
            agora_host::SharedBlob::new(table.clone()),
        ),
        ("other".to_string(), agora_host::SharedBlob::new(&b"x"[..])),
    ]);
    let result = pool.run_shared(
        &component,
        b"shared table",
        &shared,
        &Limits::default(),
        &mut |_| {},
    );
    assert_ok(&result.report);
    assert_eq!(
        result.output.as_deref(),
        Some(&table[..]),
        "the bytes the provider gave, read through the GPU"
    );
    // Sent once: the worker keeps it for the job's next unit.
    let again = pool.run_shared(
        &component,
        b"shared table",
        &shared,
        &Limits::default(),
        &mut |_| {},
    );
    assert_eq!(again.output.as_deref(), Some(&table[..]));
    let result = pool.run_shared(
        &component,
        b"shared missing",
        &shared,
        &Limits::default(),
        &mut |_| {},
    );
    match &result.report.outcome {
        Outcome::JobError { message } => {
            assert!(message.contains("no shared input `missing`"), "{message}")
        }
        other => panic!("a name the job was not given is none, got {other}"),
    }
    let next = pool.run(&component, b"shared table", &Limits::default());
    assert!(
        matches!(next.report.outcome, Outcome::JobError { .. }),
        "the next job has no shared inputs: {}",
        next.report.outcome
    );
    assert_eq!(pool.counters().started, 1, "one worker served all three");
}

/// Named outputs (`data.output`) come back from the worker by name beside
/// the output, at most `MAX_NAMED_OUTPUTS`; a name that breaks the rule
/// (the main output's own, a path, a hidden file, none) or comes twice is
/// refused by name; and outputs that together pass the unit's output bytes
/// end the run at the output limit, the named ones counted.
#[test]
fn named_outputs_come_back_by_name_within_the_units_bounds() {
    use agora_wire::limits::MAX_NAMED_OUTPUTS;
    let pool = pool(1);
    let component = ComponentBytes::new(guest("named-outputs"));
    let shared = agora_host::SharedInputs::new();
    let result = pool.run_shared(
        &component,
        (MAX_NAMED_OUTPUTS + 1).to_string().as_bytes(),
        &shared,
        &Limits::default(),
        &mut |_| {},
    );
    assert_ok(&result.report);
    let names: Vec<&str> = result.named.keys().map(String::as_str).collect();
    let mut expected: Vec<String> = (0..MAX_NAMED_OUTPUTS).map(|i| format!("o{i}")).collect();
    expected.sort();
    assert_eq!(names, expected, "every output the quota allows, by name");
    assert_eq!(
        &result.named["o3"][..],
        &[3u8; 1024][..],
        "each one's bytes"
    );
    let refused = String::from_utf8(result.output.unwrap()).unwrap();
    let lines: Vec<&str> = refused.lines().collect();
    assert_eq!(lines.len(), 7, "{refused}");
    assert!(
        lines[0].starts_with("output quota-exceeded: named outputs would be 17"),
        "{refused}"
    );
    for (line, name) in lines[1..6].iter().zip(["out", "png", "../x", ".x", ""]) {
        assert_eq!(*line, format!("output invalid-name: `{name}`"));
    }
    assert_eq!(lines[6], "output duplicate: `o0`");

    // Eight KiB for everything: eight named outputs fit, the ninth is
    // refused, and the refusals the run returns as its output pass it.
    let limits = Limits {
        output_bytes: 8 << 10,
        ..Limits::default()
    };
    let result = pool.run_shared(&component, b"9", &shared, &limits, &mut |_| {});
    match &result.report.outcome {
        Outcome::LimitExceeded { limit, message } => {
            assert_eq!(*limit, agora_host::LimitKind::Output, "{message}")
        }
        other => panic!("outputs past the unit's bytes end the run, got {other}"),
    }
    assert!(
        result.output.is_none() && result.named.is_empty(),
        "nothing of it comes back"
    );
}

#[test]
fn a_worker_measures_its_devices_speed_and_serves_on() {
    let pool = pool(1);
    let speed = pool.benchmark();
    match pool.adapter() {
        Some(adapter) => {
            let gflops = speed.expect("a device with an adapter is measured");
            assert!(gflops.is_finite() && gflops > 0.0, "{gflops}");
            println!("{}: {gflops:.1} GFLOPS", adapter.name);
        }
        None => assert_eq!(speed, None, "no GPU, no speed"),
    }
    let next = pool.run(&hostile_component(), b"echo alive", &Limits::default());
    assert_ok(&next.report);
    assert_eq!(
        pool.counters().killed,
        0,
        "the benchmark's worker serves on"
    );
}
