//! The one error type of the SDK: the host's `gpu-error` and `data-error`
//! kept as they are, plus the job's own messages.

use crate::bindings::job::agora::compute::{
    data::{DataError, OutputError},
    gpu::GpuError,
};
use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// The host refused or failed a GPU call.
    Gpu(GpuError),
    /// The host refused a data (input/output) call.
    Data(DataError),
    /// The host refused a named output.
    Output(OutputError),
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
        use crate::bindings::job::agora::compute::data::Quota;
        let quota = |f: &mut fmt::Formatter<'_>, kind: &str, q: &Quota| {
            write!(f, "{kind}: {} would be {}, the limit is {}", q.resource, q.requested, q.limit)
        };
        // The variant names are the WIT's, so logs and tests can match them.
        match self {
            Error::Gpu(GpuError::Unavailable(m)) => write!(f, "gpu unavailable: {m}"),
            Error::Gpu(GpuError::QuotaExceeded(q)) => quota(f, "gpu quota-exceeded", q),
            Error::Gpu(GpuError::InvalidShader(m)) => write!(f, "gpu invalid-shader: {m}"),
            Error::Gpu(GpuError::InvalidArgument(m)) => write!(f, "gpu invalid-argument: {m}"),
            Error::Gpu(GpuError::DeviceLost(m)) => write!(f, "gpu device-lost: {m}"),
            Error::Data(DataError::OutOfRange(r)) => {
                write!(f, "data out-of-range: {}+{} is outside {} bytes", r.offset, r.len, r.size)
            }
            Error::Data(DataError::QuotaExceeded(q)) => quota(f, "data quota-exceeded", q),
            Error::Output(OutputError::InvalidName(n)) => write!(f, "output invalid-name: `{n}`"),
            Error::Output(OutputError::Duplicate(n)) => write!(f, "output duplicate: `{n}`"),
            Error::Output(OutputError::QuotaExceeded(q)) => quota(f, "output quota-exceeded", q),
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

impl From<OutputError> for Error {
    fn from(e: OutputError) -> Self {
        Error::Output(e)
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
