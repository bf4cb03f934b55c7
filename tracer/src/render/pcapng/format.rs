//! pcap-ng framing (draft-ietf-opsawg-pcapng): the three blocks `--pcap`
//! writes, in the machine's byte order, which the Section Header Block's
//! byte-order magic announces.
//!
//! Every block is `type, total length, body, total length`, its length a
//! multiple of 4; every option is `code, length, value` with the value padded
//! to 4 bytes, and an option list ends with `opt_endofopt`.

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
/// Packets begin with their IPv4 or IPv6 header (told apart by the version
/// nibble).
pub const LINKTYPE_RAW: u16 = 101;
const OPT_ENDOFOPT: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const EPB_FLAGS: u16 = 2;
/// `if_tsresol` 9: timestamps count nanoseconds.
const TSRESOL_NS: u8 = 9;

/// Direction of a packet at an interface (`epb_flags` bits 0-1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Unknown = 0,
    Inbound = 1,
    Outbound = 2,
}

fn pad4(n: usize) -> usize {
    n.next_multiple_of(4)
}

/// Appends one option; a value longer than an option can hold (65535
/// bytes) is cut, at a character boundary for text.
fn option(buf: &mut Vec<u8>, code: u16, value: &[u8]) {
    let len = value.len().min(usize::from(u16::MAX));
    buf.extend_from_slice(&code.to_ne_bytes());
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&value[..len]);
    buf.resize(buf.len() + pad4(len) - len, 0);
}

fn text_option(buf: &mut Vec<u8>, code: u16, text: &str) {
    let mut end = text.len().min(usize::from(u16::MAX));
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    option(buf, code, &text.as_bytes()[..end]);
}

fn end_of_options(buf: &mut Vec<u8>) {
    option(buf, OPT_ENDOFOPT, &[]);
}

/// A whole block around `body` (already a multiple of 4 bytes).
fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    debug_assert_eq!(body.len() % 4, 0);
    let total = (12 + body.len()) as u32;
    let mut b = Vec::with_capacity(total as usize);
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(&total.to_ne_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&total.to_ne_bytes());
    b
}

/// Section Header Block, version 1.0, section length unknown.
pub fn section_header(application: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&BYTE_ORDER_MAGIC.to_ne_bytes());
    body.extend_from_slice(&1u16.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&(-1i64).to_ne_bytes());
    text_option(&mut body, SHB_USERAPPL, application);
    end_of_options(&mut body);
    block(SHB, &body)
}

/// Interface Description Block: raw IP, nanosecond timestamps.
pub fn interface(name: &str, snap_len: u32) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&LINKTYPE_RAW.to_ne_bytes());
    body.extend_from_slice(&0u16.to_ne_bytes());
    body.extend_from_slice(&snap_len.to_ne_bytes());
    text_option(&mut body, IF_NAME, name);
    option(&mut body, IF_TSRESOL, &[TSRESOL_NS]);
    end_of_options(&mut body);
    block(IDB, &body)
}

/// One captured packet in an Enhanced Packet Block.
pub struct PacketRecord<'a> {
    pub interface: u32,
    /// Nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// The packet's whole length (at least `data`'s).
    pub orig_len: u32,
    pub direction: Direction,
    pub comment: &'a str,
}

/// Enhanced Packet Block.
pub fn enhanced_packet(p: &PacketRecord) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&p.interface.to_ne_bytes());
    body.extend_from_slice(&((p.ts_ns >> 32) as u32).to_ne_bytes());
    body.extend_from_slice(&(p.ts_ns as u32).to_ne_bytes());
    body.extend_from_slice(&(p.data.len() as u32).to_ne_bytes());
    body.extend_from_slice(&p.orig_len.max(p.data.len() as u32).to_ne_bytes());
    body.extend_from_slice(p.data);
    body.resize(body.len() + pad4(p.data.len()) - p.data.len(), 0);
    if p.direction != Direction::Unknown {
        option(&mut body, EPB_FLAGS, &(p.direction as u32).to_ne_bytes());
    }
    text_option(&mut body, OPT_COMMENT, p.comment);
    end_of_options(&mut body);
    block(EPB, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().expect("2 bytes"))
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The options from `at` to the trailing length: (code, value) pairs,
    /// checking each value's padding and that the list ends with
    /// `opt_endofopt` right before the trailer.
    fn options(b: &[u8], mut at: usize) -> Vec<(u16, Vec<u8>)> {
        let end = b.len() - 4;
        let mut out = Vec::new();
        loop {
            assert!(at + 4 <= end, "options run past the block");
            let (code, len) = (u16_at(b, at), usize::from(u16_at(b, at + 2)));
            if code == OPT_ENDOFOPT {
                assert_eq!(len, 0);
                assert_eq!(at + 4, end, "opt_endofopt is the last option");
                return out;
            }
            let padded = pad4(len);
            assert!(b[at + 4 + len..at + 4 + padded].iter().all(|&x| x == 0));
            out.push((code, b[at + 4..at + 4 + len].to_vec()));
            at += 4 + padded;
        }
    }

    fn framed(b: &[u8], kind: u32) {
        assert_eq!(u32_at(b, 0), kind);
        let total = u32_at(b, 4) as usize;
        assert_eq!(total, b.len());
        assert_eq!(total % 4, 0);
        assert_eq!(u32_at(b, total - 4) as usize, total);
    }

    #[test]
    fn the_section_header_announces_byte_order_and_version() {
        let b = section_header("pathtrace 0.1.0");
        framed(&b, SHB);
        assert_eq!(u32_at(&b, 8), BYTE_ORDER_MAGIC);
        assert_eq!((u16_at(&b, 12), u16_at(&b, 14)), (1, 0));
        assert_eq!(&b[16..24], &[0xff; 8], "section length -1: not given");
        assert_eq!(
            options(&b, 24),
            vec![(SHB_USERAPPL, b"pathtrace 0.1.0".to_vec())]
        );
    }

    #[test]
    fn an_interface_is_raw_ip_in_nanoseconds_with_its_name() {
        let b = interface("ptdemo-dock/eth0", 128);
        framed(&b, IDB);
        assert_eq!(u16_at(&b, 8), LINKTYPE_RAW);
        assert_eq!(u16_at(&b, 10), 0, "reserved");
        assert_eq!(u32_at(&b, 12), 128, "snap length");
        assert_eq!(
            options(&b, 16),
            vec![
                (IF_NAME, b"ptdemo-dock/eth0".to_vec()),
                (IF_TSRESOL, vec![9]),
            ]
        );
    }

    #[test]
    fn a_packet_carries_both_lengths_the_time_padding_and_its_options() {
        let ts = 1_700_000_000_123_456_789u64;
        let data = [0x45u8; 41];
        let b = enhanced_packet(&PacketRecord {
            interface: 3,
            ts_ns: ts,
            data: &data,
            orig_len: 60,
            direction: Direction::Inbound,
            comment: "pathtrace packet 1: rx",
        });
        framed(&b, EPB);
        assert_eq!(u32_at(&b, 8), 3, "interface");
        assert_eq!(
            (u64::from(u32_at(&b, 12)) << 32) | u64::from(u32_at(&b, 16)),
            ts
        );
        assert_eq!((u32_at(&b, 20), u32_at(&b, 24)), (41, 60));
        assert_eq!(&b[28..69], &data);
        assert_eq!(&b[69..72], &[0, 0, 0], "data padded to 4 bytes");
        assert_eq!(
            options(&b, 72),
            vec![
                (EPB_FLAGS, 1u32.to_ne_bytes().to_vec()),
                (OPT_COMMENT, b"pathtrace packet 1: rx".to_vec()),
            ]
        );
    }

    #[test]
    fn an_overlong_comment_is_cut_at_a_character_boundary() {
        let comment = "é".repeat(40_000);
        let b = enhanced_packet(&PacketRecord {
            interface: 0,
            ts_ns: 0,
            data: &[],
            orig_len: 0,
            direction: Direction::Unknown,
            comment: &comment,
        });
        framed(&b, EPB);
        let opts = options(&b, 28);
        assert_eq!(opts.len(), 1);
        let text = String::from_utf8(opts[0].1.clone()).expect("still UTF-8");
        assert_eq!(text.len(), 65534);
    }
}
