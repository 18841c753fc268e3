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

/// Replaces `{name}` / `{name^C}` / `{name,k=v,...}` with `template`, datarhei's template
/// placeholders (`{rtmp}`, `{srt}`): each `{k}` inside the template becomes the parameter `k`
/// (URL-query-unescaped, with `$var` replaced by `vars`) or its default; a `{k}` with neither
/// stays literal. `None` (the server behind the template is off) replaces the placeholder with
/// nothing, as Core does for a placeholder without value or template.
pub fn replace_template(
    text: &str,
    name: &str,
    template: Option<&str>,
    defaults: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> String {
    PLACEHOLDER
        .replace_all(text, |caps: &Captures| {
            if &caps[1] != name {
                return caps[0].to_string();
            }
            let value = match template {
                Some(t) => compile(t, caps.get(3).map_or("", |p| p.as_str()), defaults, vars),
                None => String::new(),
            };
            match caps.get(2) {
                Some(esc) => escape(&value, esc.as_str()),
                None => value,
            }
        })
        .into_owned()
}

static TEMPLATE_PARAM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{([a-z:]+)\}").expect("valid regex"));

/// Core's `compileTemplate`.
fn compile(
    template: &str,
    params: &str,
    defaults: &[(&str, &str)],
    vars: &[(&str, &str)],
) -> String {
    let mut values: Vec<(String, String)> = defaults
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for pair in params.split(',').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(mut value)) = (query_unescape(key), query_unescape(value)) else {
            continue;
        };
        for (var, v) in vars {
            value = value.replace(&format!("${var}"), v);
        }
        values.retain(|(k, _)| *k != key);
        values.push((key, value));
    }
    TEMPLATE_PARAM
        .replace_all(template, |caps: &Captures| {
            values
                .iter()
                .find(|(k, _)| *k == caps[1])
                .map_or_else(|| caps[0].to_string(), |(_, v)| v.clone())
        })
        .into_owned()
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a broken escape is an error.
fn query_unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
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
    fn templates_take_parameters_defaults_and_vars() {
        let t = Some("srt://localhost:6000?latency={latency}&streamid={name},mode:request");
        let d = [("latency", "20000")];
        let v = [("processid", "p1")];
        assert_eq!(
            replace_template("{srt,name=$processid.x,latency=5}", "srt", t, &d, &v),
            "srt://localhost:6000?latency=5&streamid=p1.x,mode:request"
        );
        assert_eq!(
            replace_template("{srt,name=a%2Cb}", "srt", t, &d, &v),
            "srt://localhost:6000?latency=20000&streamid=a,b,mode:request"
        );
        let r = Some("rtmp://localhost:1935/{name}");
        assert_eq!(
            replace_template("{rtmp}", "rtmp", r, &[], &v),
            "rtmp://localhost:1935/{name}"
        );
        assert_eq!(
            replace_template("[f=flv]{rtmp^:,name=c}", "rtmp", r, &[], &v),
            "[f=flv]rtmp\\\\://localhost\\\\:1935/c"
        );
        assert_eq!(
            replace_template("{rtmp,name=c}|x", "rtmp", None, &[], &v),
            "|x"
        );
        assert_eq!(
            replace_template("{srt,name=c}", "rtmp", r, &[], &v),
            "{srt,name=c}"
        );
    }

    #[test]
    fn escapes_with_caret() {
        let v = [("diskfs", "/data:x")];
        assert_eq!(replace("{diskfs^:}/a", &v), "/data\\\\:x/a");
        assert_eq!(replace("{fs:disk}", &[("fs:disk", "/d")]), "/d");
    }
}
