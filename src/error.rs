//! One error type for the whole engine. Every failure a user can cause (a bad file, a config we do
//! not support, a context that is too long, a model that does not fit) is `BadInput` and exits with
//! code 2; anything else is `Internal` and exits with code 1. Messages say what is wrong and what to do.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user's input or request cannot be served as given (exit code 2).
    BadInput,
    /// The engine or the device failed (exit code 1).
    Internal,
    /// The user stopped the run (Ctrl-C); what was finished is kept (exit code 130).
    Interrupted,
    /// The device ran out of memory (exit code 2): for a model's weights, or for a batch, where
    /// smaller batches may fit.
    DeviceMemory,
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn bad_input(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::BadInput, message: message.into() }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Internal, message: message.into() }
    }

    pub fn interrupted(message: impl Into<String>) -> Self {
        Error { kind: ErrorKind::Interrupted, message: message.into() }
    }

    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ErrorKind::BadInput => 2,
            ErrorKind::Internal => 1,
            ErrorKind::Interrupted => 130,
            ErrorKind::DeviceMemory => 2,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `bail!(BadInput, "...")`-style early return with a formatted message.
#[macro_export]
macro_rules! bad_input {
    ($($arg:tt)*) => { return Err($crate::error::Error::bad_input(format!($($arg)*))) };
}
