use std::fmt;

/// What went wrong, in terms a caller can act on (an HTTP status, a retry, a message to a user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is malformed or not allowed.
    InvalidInput,
    /// No credentials were given.
    Unauthenticated,
    /// Credentials were given but are wrong or not allowed for this.
    PermissionDenied,
    NotFound,
    /// The request conflicts with what is stored.
    Conflict,
    /// The input is larger than allowed.
    TooLarge,
    /// The input is not of a supported media type.
    UnsupportedMedia,
    /// A protocol precondition the request does not meet (a version it does not speak).
    PreconditionFailed,
    /// A dependency (broker, storage, database) is not reachable now; retrying may help.
    Unavailable,
    /// A bug or an unexpected state.
    Internal,
}

impl ErrorKind {
    /// Whether another try may succeed: only when a dependency was not reachable.
    pub fn is_retryable(self) -> bool {
        self == ErrorKind::Unavailable
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UnsupportedMedia => "unsupported_media",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Osprey's one error type: a kind, a lowercase message and an optional cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), source: None }
    }

    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand for mapping a foreign error into an Osprey error of a kind, with context.
pub trait ResultExt<T> {
    fn kind_ctx(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for std::result::Result<T, E> {
    fn kind_ctx(self, kind: ErrorKind, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, message()).with_source(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_includes_cause() {
        let io = std::io::Error::other("disk full");
        let e = Error::unavailable("cannot write chunk").with_source(io);
        assert_eq!(e.to_string(), "cannot write chunk: disk full");
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }
}
