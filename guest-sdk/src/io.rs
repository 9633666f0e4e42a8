//! Job input and output: bytes that live on the host.

use crate::bindings::job::agora::compute::data::Blob;
use crate::{Buffer, Element, Result};

/// One work unit's input (also the output under check in `verify`).
pub struct Input(Blob);

impl Input {
    pub(crate) fn from_blob(blob: Blob) -> Self {
        Input(blob)
    }

    /// The job's shared input `name` (a dataset, weights: what the buyer
    /// named with `agora submit --shared NAME=FILE`), the same for every
    /// unit; none when the job has no input of that name. Held by the host:
    /// `Buffer::from_input` takes it into GPU memory without a copy in
    /// guest memory.
    pub fn shared(name: &str) -> Option<Input> {
        crate::bindings::job::agora::compute::data::shared(name).map(Input)
    }

    /// Under `verify`: the checked result's named output `name` (what its
    /// `run` added with [`Output::named`]); under `run`, one this unit
    /// added. None when there is no output of that name.
    pub fn named_output(name: &str) -> Option<Input> {
        crate::bindings::job::agora::compute::data::named_output(name).map(Input)
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copy `len` bytes at `offset` into guest memory.
    pub fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        Ok(self.0.read(offset, len)?)
    }

    /// Copy the whole input into guest memory.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        self.read(0, self.0.len())
    }

    /// Read `count` elements at byte `offset`.
    pub fn read_slice<T: Element>(&self, offset: u64, count: usize) -> Result<Vec<T>> {
        let bytes = self.read(offset, (count * T::SIZE) as u64)?;
        Ok(T::from_le_bytes(&bytes))
    }

    pub(crate) fn blob(&self) -> &Blob {
        &self.0
    }
}

/// What a job returns.
pub struct Output(Inner);

enum Inner {
    Bytes(Vec<u8>),
    Host(Blob),
}

impl Output {
    /// The whole contents of a GPU buffer, copied host-side.
    pub fn from_buffer(buffer: &Buffer) -> Result<Self> {
        Ok(Output(Inner::Host(buffer.to_blob()?)))
    }

    /// Elements as little-endian bytes.
    pub fn from_slice<T: Element>(values: &[T]) -> Self {
        Output(Inner::Bytes(T::to_le_bytes(values)))
    }

    /// Add this as the named output `name` of the unit's result, beside
    /// the one `run` returns: its provider uploads it and its buyer gets it
    /// by name (`agora result -o DIR` writes `unit-N.NAME`). A name is 1 to
    /// 64 of `a-z 0-9 _ - .`, not beginning with `.`, neither `out` nor
    /// `png`; at most 16 named outputs, within the unit's output bytes
    /// together. A `verify` must read each one ([`Input::named_output`]),
    /// or the result fails it.
    pub fn named(self, name: &str) -> Result<()> {
        let blob = self.into_blob()?;
        Ok(crate::bindings::job::agora::compute::data::output(name, &blob)?)
    }

    pub(crate) fn into_blob(self) -> Result<Blob> {
        match self.0 {
            Inner::Host(blob) => Ok(blob),
            Inner::Bytes(bytes) => Ok(Blob::from_bytes(&bytes)?),
        }
    }
}

impl From<Vec<u8>> for Output {
    fn from(bytes: Vec<u8>) -> Self {
        Output(Inner::Bytes(bytes))
    }
}

impl From<&[u8]> for Output {
    fn from(bytes: &[u8]) -> Self {
        Output(Inner::Bytes(bytes.to_vec()))
    }
}

impl From<String> for Output {
    fn from(text: String) -> Self {
        Output(Inner::Bytes(text.into_bytes()))
    }
}
