//! The file-name patterns of `remove-files`: `*` stands for any run of bytes (none included),
//! every other character for itself. One matcher for the real run and the dry run, so both
//! remove the same files.
//!
//! Names are bytes (a Unix file name need not be UTF-8); a pattern is UTF-8 and matches a name
//! byte for byte, ignoring ASCII case when asked (Windows products, host names).

/// Which names a `remove-files` step removes, as one value: the executor hands it to the
/// machine the directory is on (the host, or a server's agent over the connection), which
/// decides by [`selects`], the same rule the dry run follows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// Names to remove.
    pub patterns: Vec<String>,
    /// Names to keep though a pattern matches them.
    pub except: Vec<String>,
    /// Whether names match ignoring ASCII case.
    pub ignore_case: bool,
}

impl Selection {
    /// Whether `name` is one to remove ([`selects`]).
    pub fn selects(&self, name: &[u8]) -> bool {
        selects(&self.patterns, &self.except, name, self.ignore_case)
    }
}

/// Whether `name` matches one of `patterns` and none of `except`.
pub fn selects(patterns: &[String], except: &[String], name: &[u8], ignore_case: bool) -> bool {
    let hit = |ps: &[String]| ps.iter().any(|p| matches(p.as_bytes(), name, ignore_case));
    hit(patterns) && !hit(except)
}

/// Whether `name` matches `pattern`.
pub fn matches(pattern: &[u8], name: &[u8], ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ignore_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    // The classic linear wildcard match: on a mismatch, go back to the last `*` and let it
    // take one more byte.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && eq(pattern[p], name[n]) {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_is_any_run_of_bytes_and_the_rest_match_themselves() {
        let m = |p: &str, n: &[u8]| matches(p.as_bytes(), n, false);
        assert!(m("*", b"anything"));
        assert!(m("*", b""));
        assert!(m("gm1", b"gm1"));
        assert!(!m("gm1", b"gm10"));
        assert!(m("gm1.*", b"gm1.001"));
        assert!(m("gm1.*", b"gm1."));
        assert!(!m("gm1.*", b"gm1"));
        assert!(m("*.log", b"a.b.log"));
        assert!(!m("*.log", b"a.log.bak"));
        assert!(m("a*b*c", b"aXXbYYc"));
        assert!(!m("a*b*c", b"aXXcYYb"));
        assert!(m("**x", b"x"));
        // Names that are not UTF-8 match byte for byte.
        assert!(m("gm1.*", b"gm1.\xff\xfe"));
        assert!(!m("?", b"x"), "`?` is no wildcard");
    }

    #[test]
    fn case_is_ignored_only_when_asked() {
        assert!(!matches(b"GM1.*", b"gm1.001", false));
        assert!(matches(b"GM1.*", b"gm1.001", true));
    }

    #[test]
    fn except_wins_over_patterns() {
        let p = vec!["gm1".to_string(), "gm1-*".to_string()];
        let x = vec!["gm1-b".to_string(), "gm1-b-*".to_string()];
        assert!(selects(&p, &x, b"gm1-2026", true));
        assert!(!selects(&p, &x, b"gm1-b", true));
        assert!(!selects(&p, &x, b"GM1-B-2026", true));
        assert!(!selects(&p, &[], b"other", true));
    }
}
