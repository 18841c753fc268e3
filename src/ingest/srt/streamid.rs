//! Core's SRT stream ids (srt/srt.go `parseStreamId`): `<resource>[,mode:<m>][,token:<t>]`,
//! where a value runs to the next `,mode:` or `,token:` (so `,token:foo,bar` is the token
//! `foo,bar`), the mode defaults to `request`; and the older `#!:m=<m>,r=<resource>,token=<t>`.

use std::sync::LazyLock;

use regex::Regex;

/// What a caller asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    pub resource: String,
    pub mode: String,
    pub token: String,
}

static KEY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r",(token|mode):(.+)").expect("valid regex"));

pub fn parse(streamid: &str) -> StreamInfo {
    if let Some(old) = streamid.strip_prefix("#!:") {
        return parse_old(old);
    }
    let mut results: Vec<(String, String)> = Vec::new();
    let mut id_end: Option<usize> = None;
    let mut value = streamid;
    let mut key = String::new();
    while let Some(caps) = KEY.captures(value) {
        let (k, v) = (caps.get(1).expect("group"), caps.get(2).expect("group"));
        // The first match is in the whole id.
        if id_end.is_none() {
            id_end = Some(k.start() - 1);
        }
        if !key.is_empty() {
            set(&mut results, &key, &value[..k.start() - 1]);
        }
        key = k.as_str().to_string();
        value = &value[v.start()..v.end()];
        set(&mut results, &key, value);
    }
    let get = |k: &str| {
        results
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    StreamInfo {
        resource: streamid[..id_end.unwrap_or(streamid.len())].to_string(),
        mode: get("mode").unwrap_or_else(|| "request".into()),
        token: get("token").unwrap_or_default(),
    }
}

fn set(results: &mut Vec<(String, String)>, key: &str, value: &str) {
    results.retain(|(k, _)| k != key);
    results.push((key.to_string(), value.to_string()));
}

fn parse_old(streamid: &str) -> StreamInfo {
    let mut info = StreamInfo::default();
    for (key, value) in streamid.split(',').filter_map(|kv| kv.split_once('=')) {
        match key {
            "m" => info.mode = value.to_string(),
            "r" => info.resource = value.to_string(),
            "token" => info.token = value.to_string(),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn si(resource: &str, mode: &str, token: &str) -> StreamInfo {
        StreamInfo {
            resource: resource.into(),
            mode: mode.into(),
            token: token.into(),
        }
    }

    /// Core's srt_test.go cases.
    #[test]
    fn core_stream_ids() {
        let cases = [
            ("bla", si("bla", "request", "")),
            ("bla,mode:publish", si("bla", "publish", "")),
            ("123456789", si("123456789", "request", "")),
            ("bla,token:foobar", si("bla", "request", "foobar")),
            ("bla,token:foo,bar", si("bla", "request", "foo,bar")),
            (
                "123456789,mode:publish,token:foobar",
                si("123456789", "publish", "foobar"),
            ),
            ("mode:publish", si("mode:publish", "request", "")),
            ("#!:", si("", "", "")),
            ("#!:key=value", si("", "", "")),
            ("#!:m=publish", si("", "publish", "")),
            ("#!:r=123456789", si("123456789", "", "")),
            ("#!:token=foo,bar", si("", "", "foo")),
            (
                "#!:m=publish,r=123456789,token=foobar",
                si("123456789", "publish", "foobar"),
            ),
        ];
        for (id, want) in cases {
            assert_eq!(parse(id), want, "{id}");
        }
    }
}
