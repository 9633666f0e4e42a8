//! Hostile jobs end in clean failures that name the limit they hit, and the
//! runtime runs the next job as if nothing happened.

use super::*;
use agora_host::LimitKind;
use std::time::Duration;

/// After any hostile case, a normal job still runs on the same runtime.
fn next_job_runs() {
    let (report, output) = hostile("echo hello", &Limits::default());
    assert_ok(&report);
    assert_eq!(output.unwrap(), b"echo hello");
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let limits = Limits {
        fuel: 50_000_000,
        ..Limits::default()
    };
    let (report, _) = hostile("fuel", &limits);
    assert_limit(&report, LimitKind::Fuel);
    assert_eq!(report.fuel_used, limits.fuel);
    next_job_runs();
}

#[test]
fn a_guest_in_slow_host_calls_hits_the_epoch_deadline() {
    // Host calls use no fuel; only the wall clock can stop this job.
    let limits = Limits {
        timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (report, _) = hostile("slow-host", &limits);
    assert_limit(&report, LimitKind::Timeout);
    assert!(
        report.wall_time < Duration::from_secs(30),
        "stopped near its deadline: {:?}",
        report.wall_time
    );
    assert!(report.gpu.dispatches >= 1);
    next_job_runs();
}

#[test]
fn memory_growth_past_the_limit_fails_cleanly() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let (report, _) = hostile("memory", &limits);
    assert_limit(&report, LimitKind::Memory);
    assert!(
        report.peak_memory_bytes <= 32 << 20,
        "peak {} stays under the limit",
        report.peak_memory_bytes
    );
    assert!(
        report.peak_memory_bytes > 16 << 20,
        "the guest did grow: {}",
        report.peak_memory_bytes
    );
    next_job_runs();
}

#[test]
fn unbounded_recursion_overflows_the_wasm_stack() {
    let (report, _) = hostile("recurse", &Limits::default());
    assert_limit(&report, LimitKind::Stack);
    next_job_runs();
}

#[test]
fn a_huge_output_is_refused_by_the_output_cap() {
    let limits = Limits {
        output_bytes: 1 << 20,
        ..Limits::default()
    };
    let (report, output) = hostile("huge-output 8", &limits);
    assert_limit(&report, LimitKind::Output);
    assert!(output.is_none());
    next_job_runs();
}

#[test]
fn a_huge_error_message_is_cut() {
    let (report, _) = hostile("huge-error 8", &Limits::default());
    match &report.outcome {
        Outcome::JobError { message } => {
            assert!(
                message.len() <= agora_host::limits::MAX_ERROR_MESSAGE_BYTES + 32,
                "{} bytes",
                message.len()
            );
            assert!(message.ends_with("[truncated]"));
        }
        other => panic!("expected a job error, got {other}"),
    }
}

#[test]
fn one_host_call_cannot_copy_more_than_the_hostcall_limit() {
    let limits = Limits {
        memory_bytes: 512 << 20,
        ..Limits::default()
    };
    let mib = (agora_host::limits::MAX_HOSTCALL_BYTES >> 20) + 16;
    let (report, _) = hostile(&format!("big-hostcall {mib}"), &limits);
    assert_limit(&report, LimitKind::HostcallData);
    next_job_runs();
}

#[test]
fn a_crashing_guest_is_a_trap() {
    let (report, _) = hostile("crash", &Limits::default());
    assert!(
        matches!(report.outcome, Outcome::Trap { .. }),
        "{}",
        report.outcome
    );
    next_job_runs();
}

#[test]
fn log_spam_is_capped() {
    let (report, _) = hostile("log-spam 20000", &Limits::default());
    assert_ok(&report);
    let max = agora_host::limits::MAX_LOG_LINES;
    assert!(
        report.logs.len() <= max + 1,
        "{} log lines",
        report.logs.len()
    );
    assert!(report.logs.last().unwrap().message.contains("dropped"));
}

#[test]
fn invalid_wgsl_is_an_invalid_shader_error() {
    let (report, _) = hostile("bad-wgsl", &Limits::default());
    match &report.outcome {
        Outcome::JobError { message } => assert!(message.contains("invalid-shader"), "{message}"),
        other => panic!("expected a job error, got {other}"),
    }
    next_job_runs();
}

#[test]
fn a_missing_binding_is_named() {
    let (report, _) = hostile("binding-mismatch", &Limits::default());
    match &report.outcome {
        Outcome::JobError { message } => assert!(message.contains("@binding(0)"), "{message}"),
        other => panic!("expected a job error, got {other}"),
    }
}

#[test]
fn out_of_bounds_shader_writes_stay_inside_their_buffer() {
    let (report, output) = hostile("out-of-bounds", &Limits::default());
    assert_ok(&report);
    let values = f32s(&output.unwrap());
    assert_eq!(values.len(), 32);
    assert!(
        values[16..].iter().all(|v| *v == 7.0),
        "the neighbouring buffer is untouched: {:?}",
        &values[16..]
    );
    assert!(
        values[..16].iter().all(|v| *v == 0.0 || *v == 1.0),
        "clamped writes land in the buffer itself"
    );
    next_job_runs();
}

#[test]
fn a_gpu_buffer_bomb_hits_the_quota() {
    let mut limits = Limits::default();
    limits.gpu.buffer_bytes_max = 256 << 20;
    let (report, _) = hostile("gpu-bomb", &limits);
    match &report.outcome {
        Outcome::JobError { message } => {
            assert!(
                message.contains("quota-exceeded") && message.contains("GPU buffer bytes"),
                "{message}"
            )
        }
        other => panic!("expected a job error, got {other}"),
    }
    assert!(report.gpu.buffer_bytes_peak <= 256 << 20);
    next_job_runs();
}

#[test]
fn a_dispatch_bomb_hits_the_quota() {
    let mut limits = Limits::default();
    limits.gpu.dispatches_max = 500;
    let (report, _) = hostile("dispatch-bomb", &limits);
    match &report.outcome {
        Outcome::JobError { message } => assert!(message.contains("dispatches"), "{message}"),
        other => panic!("expected a job error, got {other}"),
    }
    assert_eq!(report.gpu.dispatches, 500);
}

#[test]
fn many_dispatches_give_the_right_count() {
    let (report, output) = hostile("dispatches 300", &Limits::default());
    assert_ok(&report);
    assert_eq!(f32s(&output.unwrap()).len(), 1);
    assert_eq!(report.gpu.dispatches, 300);
}

#[test]
fn a_guests_clocks_step_in_milliseconds() {
    let (report, output) = hostile("clock", &Limits::default());
    assert_ok(&report);
    let text = String::from_utf8(output.unwrap()).unwrap();
    let step = agora_host::limits::GUEST_CLOCK_RESOLUTION.as_nanos() as u64;
    let readings: Vec<u64> = text
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(readings.len(), 2, "{text}");
    assert_eq!(
        readings[0] % step,
        0,
        "the wall clock's sub-second part is a whole step: {text}"
    );
    assert!(
        readings[1] > 0 && readings[1] % step == 0,
        "a monotonic interval is whole steps: {text}"
    );
}
