//! The digits data set as a job reads it: the shared input `digits`, made
//! by `prepare_digits.py` from the copy scikit-learn's wheel ships. All
//! little-endian:
//!
//! ```text
//! u32 train_count, u32 test_count, u32 features, u32 classes
//! f32 train_x[train_count * features]   (pixels scaled to 0..1)
//! f32 test_x[test_count * features]
//! u32 train_y[train_count]
//! u32 test_y[test_count]
//! ```
//!
//! The images stay on the host: the training set goes from the provider's
//! cache into GPU buffers without entering guest memory.

use agora_guest::prelude::*;

/// The shared input's name (`agora submit --shared digits=digits.bin`).
pub const SHARED_NAME: &str = "digits";

const HEADER_BYTES: u64 = 16;

/// The data set's shape and where each part lies in the blob.
pub struct Dataset {
    pub input: Input,
    pub train_count: u32,
    pub test_count: u32,
    pub features: u32,
    pub classes: u32,
}

impl Dataset {
    /// The job's shared `digits` input, its header checked against its size.
    pub fn open() -> Result<Dataset> {
        let input = Input::shared(SHARED_NAME)
            .ok_or_else(|| Error::msg(format!("this job needs the shared input `{SHARED_NAME}` (agora submit --shared {SHARED_NAME}=digits.bin)")))?;
        if (input.len() as u64) < HEADER_BYTES {
            return Err(Error::msg("the data set is shorter than its header"));
        }
        let h = input.read_slice::<u32>(0, 4)?;
        let (train_count, test_count, features, classes) = (h[0], h[1], h[2], h[3]);
        let rows = train_count as u64 + test_count as u64;
        let want = HEADER_BYTES + 4 * rows * (features as u64 + 1);
        let shaped = train_count > 0 && test_count > 0 && (1..=crate::MAX_FEATURES).contains(&features) && (2..=crate::MAX_CLASSES).contains(&classes);
        if input.len() as u64 != want || !shaped {
            return Err(Error::msg(format!(
                "a data set of {train_count}+{test_count} rows of {features} features (1..={}), {classes} classes (2..={}) is {want} bytes, not {}",
                crate::MAX_FEATURES,
                crate::MAX_CLASSES,
                input.len()
            )));
        }
        Ok(Dataset { input, train_count, test_count, features, classes })
    }

    pub fn train_x_offset(&self) -> u64 {
        HEADER_BYTES
    }

    pub fn test_x_offset(&self) -> u64 {
        self.train_x_offset() + 4 * self.train_count as u64 * self.features as u64
    }

    pub fn train_y_offset(&self) -> u64 {
        self.test_x_offset() + 4 * self.test_count as u64 * self.features as u64
    }

    pub fn test_y_offset(&self) -> u64 {
        self.train_y_offset() + 4 * self.train_count as u64
    }

    /// The training images and labels, in guest memory (for the CPU replay).
    pub fn train_set(&self) -> Result<(Vec<f32>, Vec<u32>)> {
        let x = self.input.read_slice::<f32>(self.train_x_offset(), (self.train_count * self.features) as usize)?;
        let y = self.input.read_slice::<u32>(self.train_y_offset(), self.train_count as usize)?;
        Ok((x, y))
    }

    /// The held-out images and labels, in guest memory (for the CPU check).
    pub fn test_set(&self) -> Result<(Vec<f32>, Vec<u32>)> {
        let x = self.input.read_slice::<f32>(self.test_x_offset(), (self.test_count * self.features) as usize)?;
        let y = self.input.read_slice::<u32>(self.test_y_offset(), self.test_count as usize)?;
        Ok((x, y))
    }

    /// Every label is a class: a shader indexes by them.
    pub fn check_labels(&self) -> Result<()> {
        let y = self.input.read_slice::<u32>(self.train_y_offset(), (self.train_count + self.test_count) as usize)?;
        match y.iter().position(|&c| c >= self.classes) {
            Some(i) => Err(Error::msg(format!("label {} of row {i} is not one of {} classes", y[i], self.classes))),
            None => Ok(()),
        }
    }
}
