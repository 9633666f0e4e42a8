//! The worker process: a [`Runtime`] serving run requests from its
//! supervisor over stdin/stdout, one at a time, until stdin closes.
//!
//! Entry points: the `agora-worker` binary and the hidden `agora worker`
//! subcommand both call [`main`]. Logs go to stderr (the supervisor's).

use crate::GpuChoice;
use crate::protocol::{
    Call, Hello, Request, Response, SharedSpec, WorkerMessage, read_frame, write_frame,
};
use crate::report::RunReport;
use crate::runtime::{Runtime, RuntimeConfig, digest_of, hex};
use std::io::{BufReader, BufWriter, Stdout};
use std::sync::{Arc, Mutex};

/// Serve requests until stdin closes. Returns the process exit code.
pub fn main(gpu: GpuChoice) -> i32 {
    // First, while this process has one thread and before any driver loads.
    let sandbox = crate::sandbox::enter();
    let stdin = std::io::stdin().lock();
    let mut input = BufReader::new(stdin);
    // Shared with the live observer of the running job.
    let output: Arc<Mutex<BufWriter<Stdout>>> =
        Arc::new(Mutex::new(BufWriter::new(std::io::stdout())));
    let runtime = match Runtime::new(RuntimeConfig { gpu }) {
        Ok(r) => r,
        Err(e) => {
            let _ = write_frame(
                &mut *output.lock().expect("stdout lock"),
                &Hello {
                    devices: Vec::new(),
                    error: Some(e.to_string()),
                    sandbox,
                },
                &[],
            );
            return 1;
        }
    };
    if write_frame(
        &mut *output.lock().expect("stdout lock"),
        &Hello {
            devices: runtime.devices(),
            error: None,
            sandbox,
        },
        &[],
    )
    .is_err()
    {
        return 1;
    }
    let mut held = HeldShared::default();
    loop {
        let (request, mut body): (Request, Vec<u8>) = match read_frame(&mut input) {
            Ok(Some(frame)) => frame,
            Ok(None) => return 0,
            Err(e) => {
                tracing::error!("worker: bad request frame: {e}");
                return 2;
            }
        };
        let needs_component = !matches!(request.call, Call::Load | Call::Benchmark)
            && runtime.cached(&request.digest).is_none();
        let live = request.live.then(|| {
            let output = output.clone();
            Box::new(move |update| {
                // A supervisor that stopped reading will notice the worker
                // at the final frame; nothing to do here.
                let _ = write_frame(
                    &mut *output.lock().expect("stdout lock"),
                    &WorkerMessage::Live(update),
                    &[],
                );
            }) as crate::report::LiveObserver
        });
        let shared = match held.take(&mut body, &request.shared) {
            Ok(Some(shared)) => shared,
            Ok(None) => {
                // Evicted since the supervisor sent it: it sends them all again.
                let report = RunReport::new(
                    crate::Outcome::Refused {
                        message: "a shared input is not held".into(),
                    },
                    request.digest.clone(),
                );
                let response = WorkerMessage::Done(Response {
                    has_output: false,
                    report,
                    needs_component,
                    needs_shared: true,
                    outputs: Vec::new(),
                });
                if write_frame(&mut *output.lock().expect("stdout lock"), &response, &[]).is_err() {
                    return 1;
                }
                continue;
            }
            Err(e) => {
                tracing::error!("worker: bad shared inputs: {e}");
                return 2;
            }
        };
        let (report, out) = match serve(&runtime, request, body, &shared, live) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::error!("worker: bad named outputs: {e}");
                return 2;
            }
        };
        let has_output = out.is_some();
        let (main, named) = match out {
            Some((main, named)) => (main, named),
            None => (Vec::new(), crate::NamedOutputs::new()),
        };
        let response = WorkerMessage::Done(Response {
            has_output,
            report,
            needs_component,
            needs_shared: false,
            outputs: named
                .iter()
                .map(|(n, b)| (n.clone(), b.len() as u64))
                .collect(),
        });
        let mut body: Vec<&[u8]> = vec![&main];
        body.extend(named.values().map(|b| &b[..]));
        if write_frame(&mut *output.lock().expect("stdout lock"), &response, &body).is_err() {
            return 1;
        }
    }
}

fn serve(
    runtime: &Runtime,
    request: Request,
    body: Vec<u8>,
    shared: &crate::SharedInputs,
    live: Option<crate::report::LiveObserver>,
) -> std::io::Result<(RunReport, Option<(Vec<u8>, crate::NamedOutputs)>)> {
    if let Call::Benchmark = request.call {
        let (outcome, measured) = match runtime.benchmark() {
            Ok(measured) => (crate::Outcome::Ok, measured),
            Err(e) => (
                crate::Outcome::Refused {
                    message: format!("benchmark: {e}"),
                },
                None,
            ),
        };
        let mut report = RunReport::new(outcome, request.digest);
        // A failed measurement may have left the device hung: the
        // supervisor replaces a worker that says so.
        report.worker_poisoned = measured.is_none_or(|m| m.poisoned) && runtime.adapter().is_some();
        let output =
            measured.map(|m| (m.gflops.to_le_bytes().to_vec(), crate::NamedOutputs::new()));
        return Ok((report, output));
    }
    if let Call::Load = request.call {
        // The digest is the cache key: check it matches what we were sent.
        if hex(&digest_of(&body)) != request.digest {
            let outcome = crate::Outcome::Refused {
                message: "component bytes do not match their digest".into(),
            };
            return Ok((RunReport::new(outcome, request.digest), None));
        }
        return Ok(match runtime.load(&body) {
            Ok(component) => {
                let mut report = RunReport::new(crate::Outcome::Ok, request.digest);
                report.compile_time = component.compile_time;
                (report, None)
            }
            Err(e) => (RunReport::new(e.outcome(), request.digest), None),
        });
    }
    let Some(component) = runtime.cached(&request.digest) else {
        let message = format!("component {} is not loaded in this worker", request.digest);
        return Ok((
            RunReport::new(crate::Outcome::Refused { message }, request.digest),
            None,
        ));
    };
    Ok(match request.call {
        Call::Run => runtime.run_shared(&component, body, shared, &request.limits, live),
        Call::Verify {
            output_len,
            outputs,
        } => {
            let mut input = body;
            let outputs = crate::protocol::split_named(&mut input, &outputs)?;
            let split = input.len().saturating_sub(output_len as usize);
            let output = input.split_off(split);
            let (report, ok) =
                runtime.verify_shared(&component, input, output, shared, &outputs, &request.limits);
            (
                report,
                ok.map(|ok| (vec![ok as u8], crate::NamedOutputs::new())),
            )
        }
        Call::Load | Call::Benchmark => unreachable!("handled above"),
    })
}

/// The shared inputs a worker keeps between jobs, by digest, at most
/// `MAX_SHARED_INPUT_BYTES` together (one job's worth; its memory wall
/// counts them): a job of many units is sent its dataset once per worker,
/// not once per unit.
struct HeldShared {
    by_digest: std::collections::HashMap<String, Arc<[u8]>>,
    /// Least recently used first.
    order: Vec<String>,
    limit: u64,
}

impl Default for HeldShared {
    fn default() -> Self {
        HeldShared {
            by_digest: Default::default(),
            order: Vec::new(),
            limit: agora_wire::limits::MAX_SHARED_INPUT_BYTES,
        }
    }
}

impl HeldShared {
    /// The request's shared inputs: those sent split off the end of
    /// `body` and kept, the rest from what is kept; None when one that was
    /// not sent is not kept.
    fn take(
        &mut self,
        body: &mut Vec<u8>,
        specs: &[SharedSpec],
    ) -> std::io::Result<Option<crate::SharedInputs>> {
        for (digest, bytes) in crate::protocol::split_shared(body, specs)? {
            self.keep(digest, bytes, specs);
        }
        let mut inputs = crate::SharedInputs::new();
        for spec in specs {
            let Some(bytes) = self.by_digest.get(&spec.digest) else {
                return Ok(None);
            };
            self.order.retain(|d| d != &spec.digest);
            self.order.push(spec.digest.clone());
            inputs.insert(
                spec.name.clone(),
                crate::state::SharedBlob::checked(spec.digest.clone(), bytes.clone()),
            );
        }
        Ok(Some(inputs))
    }

    /// Keep `bytes`, dropping the least recently used that this request
    /// does not name until the total fits.
    fn keep(&mut self, digest: String, bytes: Arc<[u8]>, specs: &[SharedSpec]) {
        let limit = self.limit;
        let mut total: u64 =
            self.by_digest.values().map(|b| b.len() as u64).sum::<u64>() + bytes.len() as u64;
        let mut i = 0;
        while total > limit && i < self.order.len() {
            if specs.iter().any(|s| s.digest == self.order[i]) {
                i += 1;
                continue;
            }
            let gone = self.order.remove(i);
            total -= self.by_digest.remove(&gone).map_or(0, |b| b.len() as u64);
        }
        self.order.retain(|d| d != &digest);
        self.order.push(digest.clone());
        self.by_digest.insert(digest, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, bytes: &[u8], sent: bool) -> SharedSpec {
        SharedSpec {
            name: name.into(),
            digest: hex(&digest_of(bytes)),
            len: bytes.len() as u64,
            sent,
        }
    }

    /// Sent once, used by later requests unsent; the least recently used
    /// not named by the request goes past the bound; one not held is asked
    /// for again.
    #[test]
    fn a_worker_keeps_shared_inputs_within_its_bound() {
        let mut held = HeldShared {
            limit: 10,
            ..HeldShared::default()
        };
        let (a, b, c) = (b"aaaa".as_slice(), b"bbbb".as_slice(), b"cccc".as_slice());
        let mut body = [b"input".as_slice(), a, b].concat();
        let got = held
            .take(&mut body, &[spec("a", a, true), spec("b", b, true)])
            .unwrap()
            .unwrap();
        assert_eq!(
            (&body[..], &*got["a"].bytes, &*got["b"].bytes),
            (&b"input"[..], a, b)
        );
        let mut body = b"next".to_vec();
        let got = held
            .take(&mut body, &[spec("a", a, false)])
            .unwrap()
            .unwrap();
        assert_eq!(&*got["a"].bytes, a, "kept from the first request");
        // c pushes out b (a was used since).
        let mut body = [b"x".as_slice(), c].concat();
        held.take(&mut body, &[spec("c", c, true)])
            .unwrap()
            .unwrap();
        assert!(
            held.take(&mut Vec::new(), &[spec("b", b, false)])
                .unwrap()
                .is_none(),
            "b went"
        );
        assert!(
            held.take(&mut Vec::new(), &[spec("a", a, false), spec("c", c, false)])
                .unwrap()
                .is_some()
        );
        // A body shorter than what it claims to carry is an error.
        assert!(
            held.take(&mut b"ab".to_vec(), &[spec("c", c, true)])
                .is_err()
        );
    }
}
