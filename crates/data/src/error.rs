//! One error type for the data crate. Every variant names the file, address or value at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose contents are not what the format requires (bad magic, wrong size, bad label).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: {algo} checksum mismatch: expected {expected}, got {got} (the file was removed; fetch again)")]
    Checksum {
        path: PathBuf,
        algo: &'static str,
        expected: String,
        got: String,
    },
    #[error("{url}: {msg}")]
    Http { url: String, msg: String },
    /// An archive entry that would land outside the target folder, or a link.
    #[error("{archive}: refusing entry `{entry}`: {why}")]
    UnsafeEntry {
        archive: PathBuf,
        entry: String,
        why: &'static str,
    },
    #[error("dataset `{name}` not found under {dir}: {hint}")]
    Missing {
        name: String,
        dir: PathBuf,
        hint: String,
    },
    #[error("unknown dataset `{0}`; valid names: cifar10, cifar100, tiny-imagenet, cinic10, svhn, fashion-mnist")]
    UnknownDataset(String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| DataError::Io {
            path: path.into(),
            source,
        })
    }
}

pub(crate) fn format_err(path: impl Into<PathBuf>, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.into(),
        msg: msg.into(),
    }
}
