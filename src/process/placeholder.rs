//! datarhei-style placeholders in process definitions: `{name}`, `{name^C}` (escape `C` in the
//! value) and `{name,k=v}` (parameters, kept for templates that take them).

use std::sync::LazyLock;

use regex::{Captures, Regex};

static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\{([a-z]+(?::[0-9A-Za-z]+)?)(?:\^(.))?(?:,([^}]*))?\}").expect("valid regex")
});

/// Replaces the placeholders named in `values` inside `text`; any other placeholder is left as it is.
pub fn replace(text: &str, values: &[(&str, &str)]) -> String {
    PLACEHOLDER
        .replace_all(text, |caps: &Captures| {
            let name = &caps[1];
            match values.iter().find(|(n, _)| *n == name) {
                Some((_, value)) => match caps.get(2) {
                    Some(esc) => escape(value, esc.as_str()),
                    None => value.to_string(),
                },
                None => caps[0].to_string(),
            }
        })
        .into_owned()
}

/// datarhei's escaping: every backslash becomes three (unless the escape char is a backslash),
/// then every escape char `C` becomes `\\C`, so the value survives ffmpeg's option parsers.
fn escape(value: &str, esc: &str) -> String {
    let mut out = if esc == "\\" {
        value.to_string()
    } else {
        value.replace('\\', "\\\\\\")
    };
    out = out.replace(esc, &format!("\\\\{esc}"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_known_and_keeps_unknown() {
        let v = [("processid", "p1"), ("reference", "")];
        assert_eq!(replace("/x/{processid}.m3u8", &v), "/x/p1.m3u8");
        assert_eq!(replace("{reference}-{processid}", &v), "-p1");
        assert_eq!(replace("{rtmp,name=a}", &v), "{rtmp,name=a}");
        assert_eq!(replace("{processid", &v), "{processid");
    }

    #[test]
    fn escapes_with_caret() {
        let v = [("diskfs", "/data:x")];
        assert_eq!(replace("{diskfs^:}/a", &v), "/data\\\\:x/a");
        assert_eq!(replace("{fs:disk}", &[("fs:disk", "/d")]), "/d");
    }
}
