//! File name patterns of cleanup rules and `GET /api/v3/fs/{name}?glob=`, with datarhei's
//! meaning (gobwas/glob with `/` as separator): `*` stays inside a directory, `**` crosses
//! directories anywhere in the pattern (`/abc_**.ts` matches `/abc_x/y.ts`). globset gives `**`
//! that meaning only as a whole path component, so other `**` are rewritten into alternates
//! that globset reads the same way.

use globset::{GlobBuilder, GlobMatcher};

/// A compiled pattern, matched against absolute names (`/dir/file`).
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: GlobMatcher,
}

impl Pattern {
    /// Compiles `pattern`; a pattern without a leading `/` is taken from the file system's root.
    pub fn new(pattern: &str) -> Result<Pattern, String> {
        let rooted = if pattern.starts_with('/') {
            pattern.to_string()
        } else {
            format!("/{pattern}")
        };
        let matcher = GlobBuilder::new(&crossing(&rooted))
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?
            .compile_matcher();
        Ok(Pattern { matcher })
    }

    /// Whether `name` (absolute, `/`-separated) matches.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }
}

/// Rewrites every `**` that is not a whole path component into `{*,*/**/*}`: the same name
/// inside one directory, or across any number of them.
fn crossing(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '\\' && i + 1 < chars.len() {
            out.push(chars[i]);
            out.push(chars[i + 1]);
            i += 2;
            continue;
        }
        if chars[i] == '*' && chars.get(i + 1) == Some(&'*') {
            let mut end = i;
            while chars.get(end) == Some(&'*') {
                end += 1;
            }
            let before = i == 0 || chars[i - 1] == '/';
            let after = end == chars.len() || chars[end] == '/';
            if before && after {
                out.push_str("**");
            } else {
                out.push_str("{*,*/**/*}");
            }
            i = end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn star_stays_in_its_directory() {
        assert!(m("/a_*.ts", "/a_0001.ts"));
        assert!(!m("/a_*.ts", "/a_x/0001.ts"));
        assert!(m("a_*.ts", "/a_0001.ts"));
        assert!(!m("/a_*.ts", "/b_0001.ts"));
    }

    #[test]
    fn double_star_crosses_directories() {
        // restreamer-ui's patterns: `memfs:/<id>**` and `memfs:/<id>_{outputid}_**.ts`.
        assert!(m("/abc**", "/abc.m3u8"));
        assert!(m("/abc**", "/abc_output_0_0001.ts"));
        assert!(m("/abc**", "/abc/deep/x.ts"));
        assert!(!m("/abc**", "/abd.m3u8"));
        assert!(m("/abc_o_**.ts", "/abc_o_0001.ts"));
        assert!(m("/abc_o_**.ts", "/abc_o_x/y.ts"));
        assert!(!m("/abc_o_**.ts", "/abc_o_0001.m3u8"));
        assert!(m("/**", "/x/y/z"));
        assert!(m("/x/**/*.ts", "/x/a/b/c.ts"));
        assert!(m("/x/**/*.ts", "/x/c.ts"));
    }

    #[test]
    fn escapes_and_classes() {
        assert!(m(r"/a\*.ts", "/a*.ts"));
        assert!(!m(r"/a\*.ts", "/ab.ts"));
        assert!(m("/a[0-9].ts", "/a5.ts"));
        assert!(Pattern::new("/a[").is_err());
    }
}
