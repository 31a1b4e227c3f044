//! A plugin's log: `info!("…")`, `warn!`, `error!`, `debug!`, `trace!`
//! (in the prelude).
//!
//! In the host, each line goes through the contract's `log` import: the
//! host rate-limits it per plugin (counting what it drops), keeps the
//! latest lines, and shows them in its own log, on `/ws`, at
//! `GET /api/plugins/NAME/logs` and on the dashboard. It never blocks a
//! call and never fails one. Whatever the plugin writes to stdout or stderr
//! (`println!`, `eprintln!`, a panic message) becomes log lines as well.
//!
//! Natively (`cargo test`) the lines go to stderr, shown for failing tests,
//! and [`crate::testing::take_logs`] returns them to a test.

/// How much a line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Write one line (what the macros call).
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::wit::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::write(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod native {
    use super::Level;
    use std::cell::RefCell;

    /// Lines kept per thread for `testing::take_logs` (the oldest go).
    const KEPT: usize = 10_000;

    thread_local! {
        static LINES: RefCell<std::collections::VecDeque<(Level, String)>> =
            const { RefCell::new(std::collections::VecDeque::new()) };
    }

    pub fn write(level: Level, message: &str) {
        eprintln!("[{}] {message}", level.as_str());
        LINES.with(|l| {
            let mut l = l.borrow_mut();
            if l.len() == KEPT {
                l.pop_front();
            }
            l.push_back((level, message.to_string()));
        });
    }

    pub fn take() -> Vec<(Level, String)> {
        LINES.with(|l| l.borrow_mut().drain(..).collect())
    }
}

/// `info!("{} events", n)`: a line at level info.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Info, &::std::format!($($arg)+)) };
}

/// A line at level warn.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Warn, &::std::format!($($arg)+)) };
}

/// A line at level error.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Error, &::std::format!($($arg)+)) };
}

/// A line at level debug.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Debug, &::std::format!($($arg)+)) };
}

/// A line at level trace.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log::write($crate::log::Level::Trace, &::std::format!($($arg)+)) };
}
