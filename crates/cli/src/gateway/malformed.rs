//! Requests rmcp could not read as the method they name. rmcp hands such a request over as a
//! custom request, whose default answer is "method not found" — wrong for a `tools/call` whose
//! `arguments` is not an object, say. A method MCP defines, with params that do not fit it, is
//! answered as the caller's mistake in its params (-32602, saying what the method takes);
//! anything else is an unknown method (-32601).

use rmcp::ErrorData as McpError;
use rmcp::model::{CustomRequest, ErrorCode};
use serde_json::json;

/// Takes no params, or an object with an optional `cursor`.
const PAGINATED: &str = "no params, or an object with an optional string `cursor`";
/// Takes an object naming a resource.
const BY_URI: &str = "an object with a string `uri`";

/// The request methods MCP defines that rmcp reads, and what each takes.
const KNOWN: &[(&str, &str)] = &[
    (
        "tools/call",
        "an object with a string `name` and, optionally, an object `arguments`",
    ),
    ("tools/list", PAGINATED),
    ("resources/list", PAGINATED),
    ("resources/templates/list", PAGINATED),
    ("prompts/list", PAGINATED),
    ("resources/read", BY_URI),
    ("resources/subscribe", BY_URI),
    ("resources/unsubscribe", BY_URI),
    (
        "prompts/get",
        "an object with a string `name` and, optionally, an object `arguments` of strings",
    ),
    (
        "completion/complete",
        "an object with a `ref` (`ref/prompt` or `ref/resource`) and an `argument` with a `name` and a `value`",
    ),
    (
        "logging/setLevel",
        "an object with a `level` (debug, info, notice, warning, error, critical, alert or emergency)",
    ),
    (
        "initialize",
        "an object with `protocolVersion`, `capabilities` and `clientInfo`",
    ),
    ("ping", "no params, or an object"),
];

/// The error for a request rmcp could not read as a method it knows.
pub(super) fn answer(request: &CustomRequest) -> McpError {
    match KNOWN.iter().find(|(method, _)| *method == request.method) {
        Some((method, takes)) => McpError::invalid_params(
            format!("invalid params for {method}: it takes {takes}"),
            Some(json!({ "method": method })),
        ),
        None => McpError::new(ErrorCode::METHOD_NOT_FOUND, request.method.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_method_with_bad_params_is_invalid_params_and_an_unknown_one_is_not_found() {
        let bad_call = CustomRequest::new("tools/call", Some(json!({ "name": 3 })));
        let error = answer(&bad_call);
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert!(error.message.contains("tools/call"), "{}", error.message);
        assert!(error.message.contains("`arguments`"), "{}", error.message);

        let unknown = CustomRequest::new("no/such/method", None);
        let error = answer(&unknown);
        assert_eq!(error.code, ErrorCode::METHOD_NOT_FOUND);
        assert_eq!(error.message, "no/such/method");
    }
}
