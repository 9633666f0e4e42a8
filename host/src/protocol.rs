//! The supervisor <-> worker wire format over the worker's stdin/stdout.
//!
//! A frame is `u32 header length (LE) | header JSON | u64 body length (LE) |
//! body bytes`. JSON keeps the header readable in a hex dump; the body (the
//! component, input and output) stays raw bytes.

use crate::gpu::AdapterInfo;
use crate::limits::Limits;
use crate::report::{LiveUpdate, RunReport};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::{self, Read, Write};

/// Largest header accepted (headers are small; this bounds a corrupt frame).
const MAX_HEADER_BYTES: u32 = 16 << 20;
/// Largest body accepted: a component plus an input or an output.
const MAX_BODY_BYTES: u64 = 8 << 30;

/// Worker -> supervisor, once at start.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// Every device the worker may run jobs on; the first is its default.
    pub devices: Vec<AdapterInfo>,
    /// Set when the worker could not start (for example `--gpu wgpu` without
    /// an adapter).
    pub error: Option<String>,
    /// The walls it raised before opening its GPU, and its attempts to get
    /// past them.
    #[serde(default)]
    pub sandbox: crate::sandbox::SandboxReport,
}

/// What a run request asks the worker to do with the loaded component.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Call {
    /// Check and compile the component in the body (and keep it); nothing
    /// runs. Its own deadline is the compile timeout.
    Load,
    Run,
    /// Call `verify`; the body holds the input then `output_len` bytes of
    /// output.
    Verify { output_len: u64 },
}

/// Supervisor -> worker. Body: the component's bytes (for `Load`), or the
/// input (for `Run` and `Verify`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    pub digest: String,
    pub limits: Limits,
    pub call: Call,
    /// Send [`WorkerMessage::Live`] frames while the job runs.
    pub live: bool,
}

/// Worker -> supervisor, after the hello: any number of live updates (empty
/// body), then the answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkerMessage {
    Live(LiveUpdate),
    Done(Response),
}

/// The answer to a request. Body: the output (empty on failure; `[0|1]` for
/// verify).
#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub report: RunReport,
    pub has_output: bool,
    /// The worker no longer has the component (evicted): send it again.
    pub needs_component: bool,
}

pub fn write_frame<H: Serialize>(w: &mut impl Write, header: &H, body: &[&[u8]]) -> io::Result<()> {
    let header = serde_json::to_vec(header).map_err(io::Error::other)?;
    let body_len: usize = body.iter().map(|b| b.len()).sum();
    w.write_all(&(header.len() as u32).to_le_bytes())?;
    w.write_all(&header)?;
    w.write_all(&(body_len as u64).to_le_bytes())?;
    for part in body {
        w.write_all(part)?;
    }
    w.flush()
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame<H: DeserializeOwned>(r: &mut impl Read) -> io::Result<Option<(H, Vec<u8>)>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let header_len = u32::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame header of {header_len} bytes")));
    }
    let mut header = vec![0u8; header_len as usize];
    r.read_exact(&mut header)?;
    let mut body_len = [0u8; 8];
    r.read_exact(&mut body_len)?;
    let body_len = u64::from_le_bytes(body_len);
    if body_len > MAX_BODY_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame body of {body_len} bytes")));
    }
    let mut body = vec![0u8; body_len as usize];
    r.read_exact(&mut body)?;
    let header = serde_json::from_slice(&header).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some((header, body)))
}
