//! What may go into an error, a log line or a terminal: values that may be secrets never do.
//!
//! - URLs lose their `user:password@`.
//! - serde's messages quote the value they refused (`invalid type: integer `12345`, expected a
//!   string` for a password YAML read as a number): only the kind of value stays.
//! - Text from Ironic (names, agent ids, `last_error`) is shown with control characters escaped,
//!   so that it cannot clear a terminal or forge lines.

/// `url` without credentials; text that does not parse as a URL loses everything up to an `@`
/// in what would be its authority.
pub fn url(raw: &str) -> String {
    if let Ok(mut u) = url::Url::parse(raw).map_err(|_| ()).and_then(|u| {
        // `user:pw@host` parses as scheme `user` with an opaque path: not a URL with a host.
        if u.has_host() {
            Ok(u)
        } else {
            Err(())
        }
    }) {
        if !u.username().is_empty() || u.password().is_some() {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let mut s = u.to_string();
            // Url adds a `/` to an empty path; keep the configured form.
            if !raw.ends_with('/') && s.ends_with('/') && u.path() == "/" {
                s.pop();
            }
            return s;
        }
        return raw.to_string();
    }
    let (scheme, rest) = match raw.find("://") {
        Some(i) => (&raw[..i + 3], &raw[i + 3..]),
        None => ("", raw),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}{}", &rest[at + 1..]),
        None => raw.to_string(),
    }
}

/// A serde error message without the value it quotes. serde writes the refused value after the
/// kind of value (`integer `5``, `string "x"`, `floating point `1.5``, `boolean `true``,
/// `character `c``) in "invalid type"/"invalid value" messages, and the variant in "unknown
/// variant" messages; field names and the expected type are kept.
pub fn serde_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = find_any(
        rest,
        &["invalid type: ", "invalid value: ", "unknown variant "],
    ) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let prefix_len = ["invalid type: ", "invalid value: ", "unknown variant "]
            .iter()
            .find(|p| tail.starts_with(**p))
            .map_or(0, |p| p.len());
        out.push_str(&tail[..prefix_len]);
        let body = &tail[prefix_len..];
        // The unexpected value runs to ", expected" (serde's fixed wording).
        let end = body.find(", expected").unwrap_or(body.len());
        let kind = body[..end]
            .split(['`', '"'])
            .next()
            .unwrap_or("")
            .trim_end();
        if kind.is_empty() {
            out.push_str("(value not shown)");
        } else {
            out.push_str(kind);
        }
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

fn find_any(s: &str, needles: &[&str]) -> Option<usize> {
    needles.iter().filter_map(|n| s.find(n)).min()
}

/// `s` with control characters (C0, DEL, C1) and the bidirectional overrides escaped as `\u{..}`
/// (`\n`, `\t` and `\r` as such), for a terminal.
pub fn control_chars(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(url("http://u:p%40ss@h:1/x"), "http://h:1/x");
        assert_eq!(url("http://u:pw@h:1"), "http://h:1");
        assert_eq!(url("http://h:1/x/"), "http://h:1/x/");
        assert_eq!(url("h:1/x"), "h:1/x");
        assert_eq!(url("http://u:s3cret@[bad/x"), "http://[bad/x");
        assert_eq!(url("u:s3cret@host:25777"), "host:25777");
    }

    #[test]
    fn serde_values_are_not_quoted() {
        let cases = [
            (
                "key 'password': invalid type: integer `123456`, expected a string",
                "key 'password': invalid type: integer, expected a string",
            ),
            (
                "invalid type: string \"s3cret\", expected u32 at line 1 column 9",
                "invalid type: string, expected u32 at line 1 column 9",
            ),
            (
                "invalid value: floating point `1.5`, expected u8",
                "invalid value: floating point, expected u8",
            ),
            (
                "unknown variant `s3cret`, expected one of `none`, `http_basic`",
                "unknown variant (value not shown), expected one of `none`, `http_basic`",
            ),
            (
                "unknown field `passwrd`, expected `username`",
                "unknown field `passwrd`, expected `username`",
            ),
            (
                "invalid type: boolean `true`, expected a string",
                "invalid type: boolean, expected a string",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(serde_message(raw), want);
        }
        let e = serde_json::from_str::<String>("987654321").unwrap_err();
        assert!(!serde_message(&e.to_string()).contains("987654321"));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(control_chars("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(control_chars("x\ny\rz"), "x\\ny\\rz");
        assert_eq!(control_chars("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(control_chars("plain-name é"), "plain-name é");
        assert_eq!(control_chars("\u{9b}"), "\\u{9b}");
    }
}
