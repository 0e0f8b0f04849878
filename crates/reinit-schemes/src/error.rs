//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong when a scheme is asked to fill a layer.
///
/// Every message names the scheme (CLI name), the parameter or the shape at fault, so a
/// report at the binary edge can print it as is.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SchemeError {
    /// A scheme parameter is out of its domain (e.g. density 0, negative gain).
    #[error("{scheme}: parameter `{param}` = {value}: {reason}")]
    InvalidParam {
        scheme: &'static str,
        param: &'static str,
        value: String,
        reason: String,
    },
    /// The layer description is inconsistent or unsupported by this scheme.
    #[error("{scheme}: layer shape {shape}: {reason}")]
    Shape {
        scheme: &'static str,
        shape: String,
        reason: String,
    },
    /// The scheme needs graph information the layer description does not carry
    /// (residual role, chain position, …) or the graph breaks the scheme's construction.
    #[error("{scheme}: {reason}")]
    Unsupported {
        scheme: &'static str,
        reason: String,
    },
    /// No point on the critical line exists for this activation / target.
    #[error("critical: activation {activation}: {reason}")]
    Infeasible { activation: String, reason: String },
    /// A scheme name that does not parse.
    #[error("unknown scheme `{0}` (known: {known})", known = crate::table::scheme_names().collect::<Vec<_>>().join(", "))]
    UnknownScheme(String),
    /// A parameter name no scheme takes.
    #[error("unknown scheme parameter `{name}` (known: {known})")]
    UnknownParam { name: String, known: String },
    /// A parameter of the wrong type (a word where a number is expected, …).
    #[error("--{param} {value}: expected {expected}")]
    ParamType {
        param: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A choice parameter with a value outside its choices.
    #[error("--{param} {value}: expected one of {choices}")]
    BadChoice {
        param: &'static str,
        value: String,
        choices: String,
    },
    /// Parameters given for a scheme that does not take them (a typo or a misapplied flag
    /// would otherwise silently do nothing).
    #[error("--{} does not apply to scheme {scheme} (see `reinit schemes`)", params.join(", --"))]
    NotApplicable {
        scheme: &'static str,
        params: Vec<String>,
    },
    /// A numerical library failed (should not happen for finite input).
    #[error("{scheme}: linear algebra failed: {reason}")]
    Numerical {
        scheme: &'static str,
        reason: String,
    },
}
