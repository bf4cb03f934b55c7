//! nftables flowtables: which devices' established flows bypass the
//! netfilter hooks (`NFT_MSG_GETFLOWTABLE` dumps).
use std::path::Path;
use std::time::Duration;

use super::attrs::{self, AttrIter};
use super::dump::run_dump;
use super::netlink::NFNL_SUBSYS_NFTABLES;
use super::socket::NlSocket;
use super::{family_name, ns, NfError};

/// `enum nf_tables_msg_types` (not in the libc crate).
const NFT_MSG_GETFLOWTABLE: u16 = 23;
const NFTA_FLOWTABLE_TABLE: u16 = 1;
const NFTA_FLOWTABLE_NAME: u16 = 2;
const NFTA_FLOWTABLE_HOOK: u16 = 3;
const NFTA_FLOWTABLE_HOOK_DEVS: u16 = 3;
const NFTA_DEVICE_NAME: u16 = 1;

/// A flowtable: the table it belongs to, its name, and the devices whose
/// ingress it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flowtable {
    pub family: u8,
    pub table: String,
    pub name: String,
    pub devices: Vec<String>,
}

impl Flowtable {
    /// `flowtable ft of table inet filter`.
    pub fn phrase(&self) -> String {
        format!(
            "flowtable {} of table {} {}",
            self.name,
            family_name(self.family),
            self.table
        )
    }
}

/// Decodes one `NFT_MSG_NEWFLOWTABLE` reply (its attributes).
pub fn decode(family: u8, a: &[u8]) -> Flowtable {
    let devices = attrs::find(a, NFTA_FLOWTABLE_HOOK)
        .and_then(|h| attrs::find(h, NFTA_FLOWTABLE_HOOK_DEVS))
        .map(|devs| {
            AttrIter::new(devs)
                .filter(|(k, _)| *k == NFTA_DEVICE_NAME)
                .map(|(_, d)| attrs::string(d))
                .collect()
        })
        .unwrap_or_default();
    Flowtable {
        family,
        table: attrs::find(a, NFTA_FLOWTABLE_TABLE)
            .map(attrs::string)
            .unwrap_or_default(),
        name: attrs::find(a, NFTA_FLOWTABLE_NAME)
            .map(attrs::string)
            .unwrap_or_default(),
        devices,
    }
}

/// The flowtables of the namespace at `netns` (None: the current one). A
/// kernel without flowtable support has none.
pub fn flowtables(netns: Option<&Path>) -> Result<Vec<Flowtable>, NfError> {
    ns::with_netns(netns, || {
        let mut sock = NlSocket::open(false)?;
        sock.set_rcv_timeout(Duration::from_secs(3))?;
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETFLOWTABLE;
        let replies = match run_dump(&mut sock, kind, 0, &[]) {
            Err(NfError::Kernel { source, .. })
                if source.raw_os_error() == Some(libc::EOPNOTSUPP) =>
            {
                return Ok(Vec::new())
            }
            r => r?,
        };
        Ok(replies.iter().map(|(f, a)| decode(*f, a)).collect())
    })
}
