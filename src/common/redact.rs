//! What may go into an error, a log line or a terminal: values that may be secrets never do.
//!
//! - URLs lose their `user:password@`.
//! - serde's messages quote the value they refused (`invalid type: integer `12345`, expected a
//!   string` for a password YAML read as a number): only the kind of value stays.
//! - Text from Ironic (names, agent ids, `last_error`) is shown with control characters escaped,
//!   so that it cannot clear a terminal or forge lines.

use percent_encoding::percent_decode_str;
use url::Url;

/// `u` without its user and password: the one way a URL goes into a message.
pub fn url(u: &Url) -> String {
    let mut u = u.clone();
    strip(&mut u);
    u.to_string()
}

/// Text that should be a URL (a configured endpoint), without credentials, in the form it was
/// written. Text that is no URL with a host (`user:pw@host:25777` parses as scheme `user`)
/// loses everything up to an `@` in what would be its authority.
pub fn url_text(raw: &str) -> String {
    split_credentials(raw).0
}

/// `raw` without `user:password@`, and the credentials it carried, percent-decoded (a WebDAV
/// URL's userinfo becomes basic auth). A URL keeps the form it was written in (no `/` added to
/// an empty path); text that is no URL with a host loses everything up to an `@` in what would
/// be its authority, and its credentials are not taken (they cannot be told apart reliably).
pub fn split_credentials(raw: &str) -> (String, Option<(String, String)>) {
    let Some(mut u) = Url::parse(raw).ok().filter(Url::has_host) else {
        return (without_authority_userinfo(raw), None);
    };
    if u.username().is_empty() && u.password().is_none() {
        return (raw.to_string(), None);
    }
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    let creds = (decode(u.username()), decode(u.password().unwrap_or("")));
    strip(&mut u);
    let mut plain = u.to_string();
    // Url adds a `/` to an empty path; keep the configured form.
    if !raw.ends_with('/') && plain.ends_with('/') && u.path() == "/" {
        plain.pop();
    }
    (plain, Some(creds))
}

fn strip(u: &mut Url) {
    // Both only fail for URLs that cannot have userinfo, which then have none.
    let _ = u.set_username("");
    let _ = u.set_password(None);
}

fn without_authority_userinfo(raw: &str) -> String {
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
        let u = |s: &str| Url::parse(s).unwrap();
        assert_eq!(url(&u("http://u:p%40ss@h:1/x?q=1")), "http://h:1/x?q=1");
        assert_eq!(url(&u("http://u@h:1")), "http://h:1/", "Url's own form");
        assert_eq!(url(&u("http://h:1/x/")), "http://h:1/x/");
    }

    #[test]
    fn text_loses_credentials_and_keeps_its_form() {
        assert_eq!(url_text("http://u:p%40ss@h:1/x"), "http://h:1/x");
        assert_eq!(url_text("http://u:pw@h:1"), "http://h:1");
        assert_eq!(url_text("http://h:1/x/"), "http://h:1/x/");
        assert_eq!(
            url_text("HTTP://h:1"),
            "HTTP://h:1",
            "no credentials: as written"
        );
        // Not URLs with a host: everything up to the authority's last `@` goes.
        assert_eq!(url_text("h:1/x"), "h:1/x");
        assert_eq!(url_text("http://u:s3cret@[bad/x"), "http://[bad/x");
        assert_eq!(url_text("u:s3cret@host:25777"), "host:25777");
        assert_eq!(url_text("u:p@ss@host/a@b"), "host/a@b");
    }

    #[test]
    fn credentials_are_split_off_decoded() {
        let owned = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(
            split_credentials("http://u:p%40ss@h:1/images"),
            ("http://h:1/images".to_string(), owned("u", "p@ss"))
        );
        assert_eq!(
            split_credentials("https://us%20er@h"),
            ("https://h".to_string(), owned("us er", ""))
        );
        assert_eq!(
            split_credentials("http://h/x/"),
            ("http://h/x/".to_string(), None)
        );
        assert_eq!(
            split_credentials("u:pw@h:1/x"),
            ("h:1/x".to_string(), None),
            "no URL: hidden, not taken"
        );
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
