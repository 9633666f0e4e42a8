//! The one error type of the SDK: the host's `gpu-error` and `data-error`
//! kept as they are, plus the job's own messages.

use crate::bindings::job::agora::compute::{data::DataError, gpu::GpuError};
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The host refused or failed a GPU call.
    Gpu(GpuError),
    /// The host refused a data (input/output) call.
    Data(DataError),
    /// The job's own failure (bad input and so on).
    Job(String),
}

pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// A job-level error with a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::Job(message.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Gpu(e) => write!(f, "gpu: {e}"),
            Error::Data(e) => write!(f, "data: {e}"),
            Error::Job(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Self {
        Error::Gpu(e)
    }
}

impl From<DataError> for Error {
    fn from(e: DataError) -> Self {
        Error::Data(e)
    }
}

impl From<String> for Error {
    fn from(m: String) -> Self {
        Error::Job(m)
    }
}

impl From<&str> for Error {
    fn from(m: &str) -> Self {
        Error::Job(m.to_string())
    }
}
