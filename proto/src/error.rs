//! The error of a wire message that fails validation, and its one mapping to
//! a gRPC status.

/// Why a wire message could not become a domain value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A field the message needs was absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A numeric field outside the range the protocol allows.
    #[error("field `{field}` is {value}, outside the allowed range (at most {max})")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The value received.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A field whose value is not acceptable, with the reason.
    #[error("field `{field}` is invalid: {reason}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl From<WireError> for tonic::Status {
    fn from(err: WireError) -> Self {
        tonic::Status::invalid_argument(err.to_string())
    }
}
