//! MAC addresses as the BOSH agent compares them (`/sys/class/net/*/address`): lower case,
//! colon separated. Ironic, operators and manifests spell them in other ways.

use std::str::FromStr;

use mac_address::MacAddress;

/// The agent's canonical MAC form: lower case, colon separated.
///
/// `mac_address` accepts `:`/`-` separators, no separator, and either case; the extra character
/// check refuses inputs it would let through by accident (`u8::from_str_radix` takes a sign).
pub fn normalize_mac(input: &str) -> Option<String> {
    let s = input.trim();
    if !s
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '-')
    {
        return None;
    }
    let mac = MacAddress::from_str(s).ok()?;
    let b = mac.bytes();
    Some(format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_spellings() {
        assert_eq!(
            normalize_mac("52-54-00-AA-BB-CC").as_deref(),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(
            normalize_mac(" 52:54:00:aa:bb:cc ").as_deref(),
            Some("52:54:00:aa:bb:cc")
        );
        assert_eq!(normalize_mac("nope"), None);
        assert_eq!(normalize_mac("+2:54:00:aa:bb:cc"), None);
    }
}
