//! The one rule every process id follows, on create and on rename.
//!
//! An id is a URL path segment (`/api/v3/process/{id}`), a file-name part (`{processid}` in
//! output addresses) and a log field. Ids that cannot be all three safely are refused: over
//! 255 bytes (a file name's limit; far longer ones cannot even be addressed, the HTTP layer
//! refuses URIs over 64 KiB), control characters (NUL, CR, LF break logs, headers and C
//! strings), `/` and `..` (a `{processid}` in a path would leave its directory).

/// Longest id, in bytes.
pub const MAX_LEN: usize = 255;

/// The rule, as error messages name it.
pub const RULE: &str =
    "a process ID has at most 255 bytes and contains no control characters, no '/' and no '..'";

/// Checks `id` against [`RULE`]; the error says what is wrong and states the rule.
pub fn check(id: &str) -> Result<(), String> {
    let problem = if id.len() > MAX_LEN {
        format!("the ID is {} bytes long", id.len())
    } else if let Some(c) = id.chars().find(|c| c.is_control()) {
        format!("the ID contains the control character {:?}", c)
    } else if id.contains('/') {
        "the ID contains '/'".to_string()
    } else if id.contains("..") {
        "the ID contains '..'".to_string()
    } else {
        return Ok(());
    };
    Err(format!("invalid process ID: {problem}; {RULE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_and_longest_ids() {
        for id in [
            "a",
            "my-stream_1.2",
            "caméra 2",
            &"x".repeat(255),
            &"é".repeat(127),
        ] {
            assert_eq!(check(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_each_broken_rule_and_names_the_rule() {
        for id in [
            "x".repeat(256),
            "a\0b".into(),
            "a\rb".into(),
            "a\nb".into(),
            "a\u{7f}".into(),
            "a\u{85}".into(),
            "a/b".into(),
            "..".into(),
            "a..b".into(),
        ] {
            let error = check(&id).expect_err(&id);
            assert!(error.ends_with(RULE), "{error}");
        }
    }
}
