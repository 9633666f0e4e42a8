//! Log lines and progress the people running the job see.

use crate::bindings::job::agora::compute::progress::{self, Level};

pub fn log(level: Level, message: &str) {
    progress::log(level, message);
}

/// Tell the host how far the job is, in the job's own units.
pub fn report_progress(done: u64, total: u64) {
    progress::report(done, total);
}

pub use progress::Level as LogLevel;

#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::log($crate::log::LogLevel::Info, &format!($($arg)*)) };
}
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::log($crate::log::LogLevel::Warn, &format!($($arg)*)) };
}
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::log($crate::log::LogLevel::Debug, &format!($($arg)*)) };
}
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::log($crate::log::LogLevel::Error, &format!($($arg)*)) };
}
