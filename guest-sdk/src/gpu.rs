//! Typed GPU buffers and WGSL shaders.

use crate::bindings::job::agora::compute::gpu as wit;
use crate::{Input, Result};

pub use wit::BufferUsage as Usage;

/// Plain numbers that go into buffers as little-endian bytes.
pub trait Element: Copy + Sized {
    const SIZE: usize;
    fn to_le_bytes(values: &[Self]) -> Vec<u8>;
    fn from_le_bytes(bytes: &[u8]) -> Vec<Self>;
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const SIZE: usize = core::mem::size_of::<$t>();
            fn to_le_bytes(values: &[Self]) -> Vec<u8> {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            fn from_le_bytes(bytes: &[u8]) -> Vec<Self> {
                bytes
                    .chunks_exact(Self::SIZE)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of SIZE")))
                    .collect()
            }
        }
    )*};
}
element!(f32, u32, i32);

/// A GPU buffer owned by this job; freed when dropped.
pub struct Buffer(pub(crate) wit::Buffer);

impl Buffer {
    /// A zero-filled buffer of `size` bytes (a multiple of 4).
    pub fn zeroed(size: u64, usage: Usage) -> Result<Self> {
        Ok(Buffer(wit::Buffer::create(size, usage)?))
    }

    /// A storage buffer holding `values`.
    pub fn from_slice<T: Element>(values: &[T]) -> Result<Self> {
        Self::from_bytes(&T::to_le_bytes(values), Usage::STORAGE)
    }

    pub fn from_bytes(bytes: &[u8], usage: Usage) -> Result<Self> {
        Ok(Buffer(wit::Buffer::from_bytes(bytes, usage)?))
    }

    /// A buffer filled host-side from `len` bytes of the input at `offset`:
    /// the data never enters guest memory.
    pub fn from_input(input: &Input, offset: u64, len: u64, usage: Usage) -> Result<Self> {
        Ok(Buffer(wit::Buffer::from_blob(input.blob(), offset, len, usage)?))
    }

    pub fn size(&self) -> u64 {
        self.0.size()
    }

    pub fn write<T: Element>(&self, offset: u64, values: &[T]) -> Result<()> {
        Ok(self.0.write(offset, &T::to_le_bytes(values))?)
    }

    /// Wait for queued GPU work, then read the whole buffer.
    pub fn read<T: Element>(&self) -> Result<Vec<T>> {
        Ok(T::from_le_bytes(&self.0.read(0, self.0.size())?))
    }

    /// Wait for queued GPU work, then read `count` elements at byte `offset`.
    pub fn read_at<T: Element>(&self, offset: u64, count: usize) -> Result<Vec<T>> {
        Ok(T::from_le_bytes(&self.0.read(offset, (count * std::mem::size_of::<T>()) as u64)?))
    }

    pub(crate) fn to_blob(&self) -> Result<crate::bindings::job::agora::compute::data::Blob> {
        Ok(self.0.to_blob()?)
    }
}

/// A WGSL compute shader, validated by the host.
pub struct Shader(wit::Shader);

impl Shader {
    pub fn wgsl(source: &str) -> Result<Self> {
        Ok(Shader(wit::Shader::wgsl(source)?))
    }

    /// Queue `groups` workgroups of `entry`, with `bindings[i]` at
    /// `@group(0) @binding(i)`.
    pub fn dispatch(&self, entry: &str, bindings: &[&Buffer], groups: [u32; 3]) -> Result<()> {
        let handles: Vec<&wit::Buffer> = bindings.iter().map(|b| &b.0).collect();
        Ok(wit::dispatch(&self.0, entry, &handles, (groups[0], groups[1], groups[2]))?)
    }
}

pub use wit::AdapterInfo;

/// The adapter this job runs on, or `None` on a host without a GPU.
pub fn adapter() -> Option<AdapterInfo> {
    wit::info()
}
