//! The worker process: a [`Runtime`] serving run requests from its
//! supervisor over stdin/stdout, one at a time, until stdin closes.
//!
//! Entry points: the `agora-worker` binary and the hidden `agora worker`
//! subcommand both call [`main`]. Logs go to stderr (the supervisor's).

use crate::protocol::{Call, Hello, Request, Response, WorkerMessage, read_frame, write_frame};
use crate::report::RunReport;
use crate::runtime::{Runtime, RuntimeConfig, digest_of, hex};
use crate::GpuChoice;
use std::io::{BufReader, BufWriter, Stdout};
use std::sync::{Arc, Mutex};

/// Serve requests until stdin closes. Returns the process exit code.
pub fn main(gpu: GpuChoice) -> i32 {
    // First, while this process has one thread and before any driver loads.
    let sandbox = crate::sandbox::enter();
    let stdin = std::io::stdin().lock();
    let mut input = BufReader::new(stdin);
    // Shared with the live observer of the running job.
    let output: Arc<Mutex<BufWriter<Stdout>>> = Arc::new(Mutex::new(BufWriter::new(std::io::stdout())));
    let runtime = match Runtime::new(RuntimeConfig { gpu }) {
        Ok(r) => r,
        Err(e) => {
            let _ = write_frame(&mut *output.lock().expect("stdout lock"), &Hello { devices: Vec::new(), error: Some(e.to_string()), sandbox }, &[]);
            return 1;
        }
    };
    if write_frame(&mut *output.lock().expect("stdout lock"), &Hello { devices: runtime.devices(), error: None, sandbox }, &[]).is_err() {
        return 1;
    }
    loop {
        let (request, body): (Request, Vec<u8>) = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                tracing::error!("worker: bad request frame: {e}");
                return 2;
            }
        };
        let needs_component = !matches!(request.call, Call::Load) && runtime.cached(&request.digest).is_none();
        let live = request.live.then(|| {
            let output = output.clone();
            Box::new(move |update| {
                // A supervisor that stopped reading will notice the worker
                // at the final frame; nothing to do here.
                let _ = write_frame(&mut *output.lock().expect("stdout lock"), &WorkerMessage::Live(update), &[]);
            }) as crate::report::LiveObserver
        });
        let (report, out) = serve(&runtime, request, body, live);
        let response = WorkerMessage::Done(Response { has_output: out.is_some(), report, needs_component });
        if write_frame(&mut *output.lock().expect("stdout lock"), &response, &[out.as_deref().unwrap_or(&[])]).is_err() {
            return 1;
        }
    }
}

fn serve(runtime: &Runtime, request: Request, mut body: Vec<u8>, live: Option<crate::report::LiveObserver>) -> (RunReport, Option<Vec<u8>>) {
    if let Call::Load = request.call {
        // The digest is the cache key: check it matches what we were sent.
        if hex(&digest_of(&body)) != request.digest {
            let outcome = crate::Outcome::Refused { message: "component bytes do not match their digest".into() };
            return (RunReport::new(outcome, request.digest), None);
        }
        return match runtime.load(&body) {
            Ok(component) => {
                let mut report = RunReport::new(crate::Outcome::Ok, request.digest);
                report.compile_time = component.compile_time;
                (report, None)
            }
            Err(e) => (RunReport::new(e.outcome(), request.digest), None),
        };
    }
    let Some(component) = runtime.cached(&request.digest) else {
        let message = format!("component {} is not loaded in this worker", request.digest);
        return (RunReport::new(crate::Outcome::Refused { message }, request.digest), None);
    };
    let shared = match crate::protocol::split_shared(&mut body, &request.shared) {
        Ok(shared) => shared,
        Err(e) => return (RunReport::new(crate::Outcome::Refused { message: e.to_string() }, request.digest), None),
    };
    match request.call {
        Call::Run => runtime.run_shared(&component, body, &shared, &request.limits, live),
        Call::Verify { output_len } => {
            let mut input = body;
            let split = input.len().saturating_sub(output_len as usize);
            let output = input.split_off(split);
            let (report, ok) = runtime.verify_shared(&component, input, output, &shared, &request.limits);
            (report, ok.map(|ok| vec![ok as u8]))
        }
        Call::Load => unreachable!("handled above"),
    }
}
