//! The one error type of the kernel tracer: each variant is one line of warning for the user.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CuptiError {
    /// No CUPTI library could be loaded from any of these names.
    NotFound { tried: Vec<String> },
    /// The library lacks a function the tracer needs.
    MissingSymbol {
        library: String,
        symbol: &'static str,
    },
    /// A CUPTI call failed.
    Call { function: &'static str, code: u32 },
    /// The library's API version is not one whose record layouts are known here.
    UnknownVersion(u32),
    /// Another CUPTI client (a profiler, an injected tool) holds the subscription.
    OtherSubscriber,
    /// Nsight (or another CUDA injection) profiles this process.
    ExternalProfiler(&'static str),
}

impl fmt::Display for CuptiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CuptiError::NotFound { tried } => {
                write!(f, "no CUPTI library found (tried {})", tried.join(", "))
            }
            CuptiError::MissingSymbol { library, symbol } => {
                write!(f, "{library} has no {symbol}")
            }
            CuptiError::Call { function, code } => write!(f, "{function} failed with code {code}"),
            CuptiError::UnknownVersion(version) => write!(
                f,
                "CUPTI API version {version} is not one whose record layouts are known \
                 (CUDA 12.0 to 13.5)"
            ),
            CuptiError::OtherSubscriber => {
                write!(f, "another CUPTI client holds the subscription")
            }
            CuptiError::ExternalProfiler(var) => {
                write!(f, "an external CUDA profiler is attached ({var} is set)")
            }
        }
    }
}

impl std::error::Error for CuptiError {}

pub type Result<T> = std::result::Result<T, CuptiError>;
