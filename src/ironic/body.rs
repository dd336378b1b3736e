//! Reading an answer body without trusting its size: a broken or hostile server may announce
//! gigabytes, or send a chunked body that never ends. Nothing beyond the cap is read.

use std::io::{self, Read};

/// Error answers are only quoted (shortened) in messages: their start says all there is.
pub const ERROR_BODY_BYTES: u64 = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Whole(Vec<u8>),
    /// Larger than the cap: by its `Content-Length` (`declared`), or found while reading.
    Over {
        declared: Option<u64>,
    },
}

/// At most `cap` bytes of `r`, or `Over` as soon as it is clear there are more. `declared` is
/// the answer's `Content-Length`, if it gave one.
pub fn read_capped(r: impl Read, declared: Option<u64>, cap: u64) -> io::Result<Body> {
    if declared.is_some_and(|n| n > cap) {
        return Ok(Body::Over { declared });
    }
    // A small start: a declared length may be a lie, and most answers are small.
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(cap).min(64 * 1024) as usize);
    r.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Ok(Body::Over { declared });
    }
    Ok(Body::Whole(buf))
}

/// The first `limit` bytes of `r` (an error answer's start), the rest left unread.
pub fn read_head(r: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(limit).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that never ends, counting what was read from it.
    struct Endless {
        read: u64,
    }

    impl Read for Endless {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            buf.fill(b'x');
            self.read += buf.len() as u64;
            Ok(buf.len())
        }
    }

    #[test]
    fn within_the_cap_is_read_whole() {
        assert_eq!(
            read_capped(&b"{}"[..], Some(2), 2).unwrap(),
            Body::Whole(b"{}".to_vec())
        );
        assert_eq!(
            read_capped(&b"abc"[..], None, 10).unwrap(),
            Body::Whole(b"abc".to_vec())
        );
    }

    #[test]
    fn an_announced_size_over_the_cap_is_refused_unread() {
        let mut endless = Endless { read: 0 };
        assert_eq!(
            read_capped(&mut endless, Some(1 << 40), 1024).unwrap(),
            Body::Over {
                declared: Some(1 << 40)
            }
        );
        assert_eq!(endless.read, 0);
    }

    #[test]
    fn an_endless_or_understated_body_stops_just_past_the_cap() {
        let mut endless = Endless { read: 0 };
        assert_eq!(
            read_capped(&mut endless, None, 100_000).unwrap(),
            Body::Over { declared: None }
        );
        assert!(endless.read <= 100_001 + 64 * 1024, "{}", endless.read);
        // A Content-Length that lies low does not let more through.
        assert_eq!(
            read_capped(&b"0123456789"[..], Some(4), 8).unwrap(),
            Body::Over { declared: Some(4) }
        );
    }

    #[test]
    fn error_heads_are_cut() {
        let mut endless = Endless { read: 0 };
        assert_eq!(read_head(&mut endless, 10).unwrap().len(), 10);
    }
}
