//! A VM's cid names one VM, not a node: `<node uuid>:<vm id>`, where the vm id is the UUID the
//! VM's create_vm claimed the node with and recorded in `extra.bosh_vm`. A node serves many VMs
//! over its life; a cid of a VM that is gone never matches the node's current record, so a
//! retried or late call for it cannot touch the VM that holds the node now.

use std::fmt;

/// A parsed VM cid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmCid {
    pub node: String,
    pub vm_id: String,
}

impl VmCid {
    /// Parse a cid as create_vm returns it. The error says what a cid looks like.
    pub fn parse(text: &str) -> Result<VmCid, String> {
        let explain = || {
            format!(
                "'{}' is not a VM cid of this CPI: it names a VM as <node uuid>:<vm id> \
                 (two UUIDs, as create_vm returns it)",
                printable(text)
            )
        };
        let (node, vm) = text.split_once(':').ok_or_else(explain)?;
        let node = canonical_uuid(node).ok_or_else(explain)?;
        let vm_id = canonical_uuid(vm).ok_or_else(explain)?;
        Ok(VmCid { node, vm_id })
    }
}

impl fmt::Display for VmCid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.vm_id)
    }
}

/// Lower-case hyphenated form of a UUID written in that form; anything else is refused, so that
/// names, `..` and other path tricks never reach a URL.
fn canonical_uuid(s: &str) -> Option<String> {
    if s.len() != 36 {
        return None;
    }
    uuid::Uuid::try_parse(s)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// At most 80 characters of `s`, control characters escaped, for error messages.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cids_round_trip_and_foreign_ones_are_refused() {
        let text = "7a3e5a52-0d3c-4c55-9d2c-3f1b0a6c2b11:01937b2e-6b5c-7d3e-8f00-1a2b3c4d5e6f";
        let cid = VmCid::parse(text).unwrap();
        assert_eq!(cid.to_string(), text);
        assert_eq!(
            VmCid::parse(&text.to_uppercase()).unwrap().to_string(),
            text
        );
        for bad in [
            "7a3e5a52-0d3c-4c55-9d2c-3f1b0a6c2b11",
            "node-1",
            "..",
            "../../v1/nodes:x",
            "7a3e5a52-0d3c-4c55-9d2c-3f1b0a6c2b11:",
            "7a3e5a520d3c4c559d2c3f1b0a6c2b11:01937b2e6b5c7d3e8f001a2b3c4d5e6f",
            "",
        ] {
            let e = VmCid::parse(bad).unwrap_err();
            assert!(e.contains("<node uuid>:<vm id>"), "{bad}: {e}");
        }
        let e = VmCid::parse("\u{1b}[2J").unwrap_err();
        assert!(!e.contains('\u{1b}'), "{e}");
    }
}
