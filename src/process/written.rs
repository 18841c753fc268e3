//! Which files of the server's memory file system a process's outputs write, so that its
//! progress can count the bytes: FFmpeg prints `size=N/A` for a tee, HLS, segment or image
//! output, but every byte such an output puts into `{memfs}` passes through the server.

use std::sync::LazyLock;

use regex::Regex;

use crate::fs::glob::Pattern;

/// printf and strftime fields in segment names (`%04d`, `%Y`), and `%%`.
static FIELD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"%%|%[0-9]*[a-zA-Z]").expect("valid regex"));

/// The memfs names that `output_args` (the part of an argv after the inputs) write, as patterns.
/// Escapes (`{memfs^:}` inside tee options) are undone first; each name ends where an address
/// or a tee option does.
pub fn memfs_patterns(output_args: &[String], memfs_url: &str) -> Vec<Pattern> {
    let mut patterns = Vec::new();
    for arg in output_args {
        let plain = arg.replace('\\', "");
        let mut rest = plain.as_str();
        while let Some(at) = rest.find(memfs_url) {
            let after = &rest[at + memfs_url.len()..];
            let end = after
                .find(|c: char| {
                    matches!(c, '|' | '[' | ']' | ':' | '\'' | '"') || c.is_whitespace()
                })
                .unwrap_or(after.len());
            let name = &after[..end];
            rest = &after[end..];
            if name.starts_with('/') {
                patterns.extend(name_globs(name).iter().filter_map(|g| Pattern::new(g).ok()));
            }
        }
    }
    patterns
}

/// The glob of a name with its fields as `*`; for a playlist also the names the HLS muxer gives
/// its segments when no `hls_segment_filename` is set (`<stem><n>.ts`, `.m4s`).
fn name_globs(name: &str) -> Vec<String> {
    let glob = |text: &str| {
        let mut out = String::new();
        let mut last = 0;
        for field in FIELD.find_iter(text) {
            out.push_str(&globset::escape(&text[last..field.start()]));
            out.push_str(if field.as_str() == "%%" { "[%]" } else { "*" });
            last = field.end();
        }
        out.push_str(&globset::escape(&text[last..]));
        out
    };
    let mut globs = vec![glob(name)];
    if let Some(stem) = name.strip_suffix(".m3u8") {
        globs.push(format!("{}*.ts", glob(stem)));
        globs.push(format!("{}*.m4s", glob(stem)));
    }
    globs
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://admin:pw@127.0.0.1:8080/memfs";

    fn matches(patterns: &[Pattern], name: &str) -> bool {
        patterns.iter().any(|p| p.matches(name))
    }

    #[test]
    fn finds_the_names_of_a_tee_with_escaped_options() {
        let escaped = "http\\\\://admin\\\\:pw@127.0.0.1\\\\:8080/memfs";
        let args = vec![
            "-f".to_string(),
            "tee".to_string(),
            format!("[f=hls:hls_segment_filename={escaped}/ch_%04d.ts:method=PUT]{URL}/ch.m3u8|[f=flv]rtmp://x/y"),
        ];
        let patterns = memfs_patterns(&args, URL);
        assert!(matches(&patterns, "/ch.m3u8"));
        assert!(matches(&patterns, "/ch_0042.ts"));
        assert!(!matches(&patterns, "/ch.jpg"));
        assert!(!matches(&patterns, "/other_0001.ts"));
    }

    #[test]
    fn playlists_without_segment_names_get_the_muxers_default() {
        let patterns = memfs_patterns(&[format!("{URL}/live/a.m3u8")], URL);
        assert!(matches(&patterns, "/live/a7.ts"));
        assert!(matches(&patterns, "/live/a.m3u8"));
        assert!(!matches(&patterns, "/live/b7.ts"));
        assert!(memfs_patterns(&["/data/public/a.m3u8".to_string()], URL).is_empty());
    }
}
