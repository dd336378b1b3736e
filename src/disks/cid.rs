//! Persistent disk ids. A disk is a local disk of one node, so its cid names the node by a MAC
//! of its ports (stable when a node is deleted and enrolled again, unlike its UUID) and the
//! device, plus a random part so that two disks never share a cid:
//!
//! `disk-525400a1b2c3-sdc-9f2c41d0` is `/dev/sdc` on the node with port `52:54:00:a1:b2:c3`;
//! `/dev/disk/by-id/wwn-0x5000` is written `disk~by-id~wwn-0x5000` (no `/`, which the agent's
//! by-id lookup would trip on).

use std::fmt;

use crate::error::{CpiError, Result};
use crate::mac::normalize_mac;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCid {
    /// Lower-case, colon-separated.
    pub mac: String,
    /// Full device path, e.g. `/dev/sdc`.
    pub device: String,
    pub nonce: String,
}

impl DiskCid {
    pub fn new(mac: &str, device: &str) -> Result<DiskCid> {
        let mac = normalize_mac(mac)
            .ok_or_else(|| CpiError::cloud(format!("'{mac}' is not a MAC address")))?;
        check_device(device)?;
        let nonce = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Ok(DiskCid {
            mac,
            device: device.to_string(),
            nonce,
        })
    }

    pub fn parse(cid: &str) -> Option<DiskCid> {
        let rest = cid.strip_prefix("disk-")?;
        let (mac_hex, rest) = rest.split_once('-')?;
        let (device, nonce) = rest.rsplit_once('-')?;
        if mac_hex.len() != 12 || !mac_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        if nonce.len() != 8 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) || device.is_empty() {
            return None;
        }
        let mac = mac_hex
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(":");
        Some(DiskCid {
            mac: normalize_mac(&mac)?,
            device: format!("/dev/{}", device.replace('~', "/")),
            nonce: nonce.to_string(),
        })
    }

    /// Parse, or the DiskNotFound the director expects for ids that cannot be ours.
    pub fn parse_or_not_found(cid: &str) -> Result<DiskCid> {
        DiskCid::parse(cid).ok_or_else(|| {
            CpiError::disk_not_found(format!(
                "disk {cid} not found: not a disk id of this CPI \
                 (expected disk-<node MAC>-<device>-<8 hex digits>)"
            ))
        })
    }
}

impl fmt::Display for DiskCid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = self
            .device
            .strip_prefix("/dev/")
            .unwrap_or(&self.device)
            .replace('/', "~");
        write!(
            f,
            "disk-{}-{device}-{}",
            self.mac.replace(':', ""),
            self.nonce
        )
    }
}

pub fn check_device(device: &str) -> Result<()> {
    let ok = device
        .strip_prefix("/dev/")
        .is_some_and(|d| !d.is_empty() && !d.contains('~') && !d.contains(".."));
    if ok {
        Ok(())
    } else {
        Err(CpiError::cloud(format!(
            "disk device '{device}' must be a path under /dev/, e.g. /dev/sdc or /dev/disk/by-id/..."
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for dev in [
            "/dev/sdc",
            "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
            "/dev/nvme1n1",
        ] {
            let cid = DiskCid::new("52:54:00:A1:B2:C3", dev).unwrap();
            let text = cid.to_string();
            assert!(!text.contains('/'), "{text}");
            assert_eq!(DiskCid::parse(&text).unwrap(), cid, "{text}");
        }
        let a = DiskCid::new("52:54:00:a1:b2:c3", "/dev/sdc").unwrap();
        let b = DiskCid::new("52:54:00:a1:b2:c3", "/dev/sdc").unwrap();
        assert_ne!(a.to_string(), b.to_string());
        assert_eq!(
            DiskCid::parse("disk-525400a1b2c3-sdc-9f2c41d0")
                .unwrap()
                .device,
            "/dev/sdc"
        );
    }

    #[test]
    fn rejects_foreign_ids() {
        for bad in [
            "vol-123",
            "disk-xyz-sdc-12345678",
            "disk-525400a1b2c3-sdc-123",
            "disk-525400a1b2c3--9f2c41d0",
        ] {
            assert!(DiskCid::parse(bad).is_none(), "{bad}");
        }
        assert!(DiskCid::new("52:54:00:a1:b2:c3", "sdc").is_err());
        assert!(DiskCid::new("52:54:00:a1:b2:c3", "/dev/../etc").is_err());
    }
}
