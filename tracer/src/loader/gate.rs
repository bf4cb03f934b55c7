//! The gate: the first test a packet nobody follows meets, before the
//! filter. When every term of the filter names an IPv4 network its packets
//! come from or go to, a packet with neither address in any of those
//! networks (and not ICMP, which may quote a matching packet) can't match:
//! the kernel turns it away after one header read and a few compares. The
//! loader hands the networks to the kernel as read-only globals.
use tracer_common::{atom_kind, Filter};

/// The most networks the kernel's gate compares.
pub const GATE_MAX: usize = 4;

/// Networks as the kernel compares them: an IPv4 address's four bytes read
/// as a native-endian `u32`, masked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// 0: no gate, every packet goes on to the filter.
    pub n: u32,
    pub nets: [u32; GATE_MAX],
    pub masks: [u32; GATE_MAX],
}

impl Gate {
    /// The gate `filter` allows: one network per term (a positive IPv4 `net`
    /// or `host` atom of it, in whichever direction), or none.
    pub fn of(filter: &Filter) -> Gate {
        let mut gate = Gate::default();
        let terms = &filter.terms[..(filter.n_terms as usize).min(filter.terms.len())];
        if terms.is_empty() || terms.len() > GATE_MAX {
            return gate;
        }
        for (i, term) in terms.iter().enumerate() {
            let atoms = filter.atoms.iter().take(filter.n_atoms as usize);
            let Some(net) = atoms.enumerate().find_map(|(a, atom)| {
                let positive = a < 32 && term.pos & (1 << a) != 0;
                (positive && atom.kind == atom_kind::NET && atom.version == 4).then_some(atom)
            }) else {
                return Gate::default();
            };
            gate.nets[i] = net.net[0] as u32;
            gate.masks[i] = net.mask[0] as u32;
        }
        gate.n = terms.len() as u32;
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::{parse_expr, FlowFilter, Flows};

    fn gate(expr: &str) -> Gate {
        let f = FlowFilter {
            expr: parse_expr(&[expr.to_string()]).expect("parses"),
            both_directions: true,
            ..Default::default()
        };
        Gate::of(&Filter::from(&Flows::new(vec![f]).expect("fits")))
    }

    #[test]
    fn one_network_per_term_or_no_gate() {
        let g = gate("src host 192.0.2.77 and udp port 53");
        assert_eq!(g.n, 1);
        assert_eq!(g.nets[0], u32::from_ne_bytes([192, 0, 2, 77]));
        assert_eq!(g.masks[0], u32::MAX);
        let g = gate("net 198.51.100.0/24 or host 203.0.113.9");
        assert_eq!(g.n, 2);
        assert_eq!(g.nets[0], u32::from_ne_bytes([198, 51, 100, 0]));
        assert_eq!(g.masks[0], u32::from_ne_bytes([255, 255, 255, 0]));
        assert_eq!(g.nets[1], u32::from_ne_bytes([203, 0, 113, 9]));
        // A term without an address: any packet may match it.
        assert_eq!(gate("host 192.0.2.1 or port 80").n, 0);
        // A negated address, or an IPv6 one, is no gate.
        assert_eq!(gate("not host 192.0.2.1").n, 0);
        assert_eq!(gate("host 2001:db8::1").n, 0);
        // More terms than the kernel compares.
        assert_eq!(
            gate("host 192.0.2.1 or host 192.0.2.2 or host 192.0.2.3 or host 192.0.2.4 or host 192.0.2.5").n,
            0
        );
    }
}
