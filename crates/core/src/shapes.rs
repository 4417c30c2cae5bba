//! Span shapes: the `shapes_json` a caller attaches to a span, checked against
//! `format::SpanShapes` and reduced to one canonical text, which the session interns.

use vllm_profiler_format::SpanShapes;

use crate::error::{ProfilerError, Result};
use crate::names::MAX_SHAPES_LEN;

/// Longest `shapes_json` accepted, in bytes (without its NUL).
pub const MAX_SHAPES_JSON_LEN: usize = MAX_SHAPES_LEN;

/// Checks raw `shapes_json` and returns its canonical text (keys in a fixed order, no spaces,
/// absent keys left out), or `None` when it carries no shapes (`{}`). The error names the
/// problem: too long, not UTF-8, or serde's reason (unknown key, wrong type, negative or
/// fractional dimension) with its position.
pub fn canonical(raw: &[u8]) -> Result<Option<String>> {
    if raw.len() > MAX_SHAPES_JSON_LEN {
        return Err(ProfilerError::InvalidShapes(format!(
            "shapes_json is longer than {MAX_SHAPES_JSON_LEN} bytes"
        )));
    }
    let text = std::str::from_utf8(raw).map_err(|e| {
        ProfilerError::InvalidShapes(format!(
            "shapes_json is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        ))
    })?;
    let invalid = |why: &dyn std::fmt::Display| {
        ProfilerError::InvalidShapes(format!(
            "shapes_json is not {{\"input_shapes\": [[int, ...], ...], \"output_shapes\": [[...], ...]}}: {why}"
        ))
    };
    // serde would also take a struct from an array (`[[[1]]]` as input_shapes): only an object
    // is shapes.
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(invalid(&"it is not a JSON object"));
    }
    let shapes: SpanShapes = serde_json::from_str(text).map_err(|e| invalid(&e))?;
    if shapes.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(&shapes)
        .map(Some)
        .map_err(|e| ProfilerError::Internal(format!("shapes do not serialise: {e}")))
}

/// The shapes of a canonical text made by `canonical`.
pub fn parse(canonical: &str) -> Option<SpanShapes> {
    serde_json::from_str(canonical).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(raw: &[u8]) -> String {
        let err = canonical(raw).unwrap_err();
        assert_eq!(err.code(), -2, "{err}");
        err.to_string()
    }

    #[test]
    fn equal_shapes_have_one_canonical_text() {
        let a =
            canonical(br#"{ "output_shapes": [[8, 512, 768]], "input_shapes": [[8,512,768]] }"#);
        let b = canonical(br#"{"input_shapes":[[8,512,768]],"output_shapes":[[8,512,768]]}"#);
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(
            canonical(br#"{"output_shapes": [[2]]}"#)
                .unwrap()
                .as_deref(),
            Some(r#"{"output_shapes":[[2]]}"#)
        );
        assert_eq!(canonical(b"{}").unwrap(), None);
        assert_eq!(canonical(br#"{"input_shapes": null}"#).unwrap(), None);
        let text = canonical(br#"{"input_shapes": [[1, 2], []]}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            parse(&text).unwrap().input_shapes,
            Some(vec![vec![1, 2], vec![]])
        );
    }

    #[test]
    fn bad_shapes_say_why() {
        assert!(message(br#"{"input_shapes": [[1]], "dtype": "f16"}"#)
            .contains("unknown field `dtype`"));
        assert!(message(br#"{"input_shapes": [[-1]]}"#).contains("-1"));
        assert!(message(br#"{"input_shapes": [[1.5]]}"#).contains("1.5"));
        assert!(message(br#"{"input_shapes": [[1]"#).contains("EOF"));
        assert!(message(b"[[1]]").contains("not a JSON object"));
        assert!(message(b" [[[1]]]").contains("not a JSON object"));
        assert!(message(b"null").contains("not a JSON object"));
        assert!(message(br#"{"input_shapes": [[1]]} x"#).contains("trailing"));
        assert!(
            message(br#"{"input_shapes": [[1]], "input_shapes": [[2]]}"#)
                .contains("duplicate field")
        );
        assert!(message(b"{\"input_shapes\": \"\xff\"}").contains("not valid UTF-8"));
        let long = format!(r#"{{"input_shapes": [[{}1]]}}"#, "1,".repeat(2100));
        assert!(message(long.as_bytes()).contains("longer than 4096 bytes"));
        let m = message(b"{");
        assert!(
            m.starts_with("invalid argument: shapes_json")
                && m.ends_with("the span was ended, without shapes"),
            "{m}"
        );
    }
}
