//! MAC addresses as the BOSH agent compares them: lower case, colon separated.

use std::str::FromStr;

use mac_address::MacAddress;

/// Parse any common spelling (`AA-BB-..`, `aa:bb:..`) into `aa:bb:cc:dd:ee:ff`.
pub fn normalize_mac(s: &str) -> Option<String> {
    MacAddress::from_str(s.trim())
        .ok()
        .map(|m| m.to_string().to_ascii_lowercase())
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
    }
}
