//! What rule tracing can say of a flow filter: flag-only filters (no
//! expression) whose union matches at least what the filter matches.
use tracer_common::port_default;

use super::{expr::Prim, Dir, FlowFilter, Proto};

/// More flag-only filters than this for one flow, and one that matches
/// every packet stands for them all.
const MAX_COVER: usize = 32;

impl FlowFilter {
    /// Flag-only filters whose union matches what this filter matches, and
    /// maybe more. Flags alone are said exactly. With an expression, each
    /// alternative is said by its positive primitives that flags can say
    /// (negations, port ranges and versions are left out); too many
    /// alternatives, and one filter matches every packet.
    pub fn flag_cover(&self) -> Vec<FlowFilter> {
        let all = FlowFilter {
            both_directions: self.both_directions,
            ..FlowFilter::default()
        };
        if self.expr.is_none() {
            return vec![self.clone()];
        }
        let Ok(dnf) = self.dnf() else {
            return vec![all];
        };
        let mut out: Vec<FlowFilter> = Vec::new();
        for conj in &dnf {
            let mut variants = vec![all.clone()];
            for lit in conj.iter().filter(|l| !l.negate) {
                variants = variants
                    .into_iter()
                    .flat_map(|v| narrowed(v, &lit.prim))
                    .collect();
            }
            for v in variants {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        if out.len() > MAX_COVER {
            return vec![all];
        }
        out
    }
}

/// `v` narrowed by one primitive, as one or two (src or dst) filters.
fn narrowed(v: FlowFilter, p: &Prim) -> Vec<FlowFilter> {
    match *p {
        Prim::Proto { proto, .. } if v.proto.is_none() => vec![FlowFilter {
            proto: Some(Proto(proto)),
            ..v
        }],
        Prim::Net { dir, net } => by_dir(v, dir, |f| &mut f.src, |f| &mut f.dst, net),
        Prim::Port { dir, lo, hi, proto } if lo == hi => {
            let proto_ok = match (v.proto, proto) {
                (Some(have), 0) => port_default(have.0),
                (Some(have), want) => have.0 == want,
                (None, _) => true,
            };
            if !proto_ok {
                return vec![v];
            }
            let proto = v.proto.or((proto != 0).then_some(Proto(proto)));
            let mut out = by_dir(v.clone(), dir, |f| &mut f.sport, |f| &mut f.dport, lo);
            // A filter the port could not narrow keeps its protocol.
            for f in out.iter_mut().filter(|f| **f != v) {
                f.proto = proto;
            }
            out
        }
        _ => vec![v],
    }
}

/// `v` with `value` as its source field, its destination field, both, or
/// (as two filters) either — where those fields are still free.
fn by_dir<T: Copy>(
    v: FlowFilter,
    dir: Dir,
    src: fn(&mut FlowFilter) -> &mut Option<T>,
    dst: fn(&mut FlowFilter) -> &mut Option<T>,
    value: T,
) -> Vec<FlowFilter> {
    let with = |mut f: FlowFilter, fields: &[fn(&mut FlowFilter) -> &mut Option<T>]| {
        for field in fields {
            *field(&mut f) = Some(value);
        }
        f
    };
    let mut probe = v.clone();
    let (src_free, dst_free) = (src(&mut probe).is_none(), dst(&mut probe).is_none());
    match dir {
        Dir::Src if src_free => vec![with(v, &[src])],
        Dir::Dst if dst_free => vec![with(v, &[dst])],
        Dir::Both if src_free && dst_free => vec![with(v, &[src, dst])],
        Dir::Either if src_free && dst_free => vec![with(v.clone(), &[src]), with(v, &[dst])],
        _ => vec![v],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(expr: &str) -> Vec<FlowFilter> {
        let f = FlowFilter {
            expr: crate::model::parse_expr(&[expr.to_owned()]).expect("parses"),
            ..FlowFilter::default()
        };
        f.flag_cover()
    }

    #[test]
    fn an_expression_traces_a_superset_by_its_positive_primitives() {
        let ip = |s: &str| Some(s.parse::<crate::model::Cidr>().expect("ip"));
        assert_eq!(
            rules_of("src host 192.0.2.9 and tcp dst port 8092"),
            [FlowFilter {
                src: ip("192.0.2.9"),
                dport: Some(8092),
                proto: Some(Proto(6)),
                ..FlowFilter::default()
            }],
            "exact when the expression says only what a rule can"
        );
        let either = rules_of("host 192.0.2.9 and not port 22");
        assert_eq!(
            either,
            [
                FlowFilter {
                    src: ip("192.0.2.9"),
                    ..FlowFilter::default()
                },
                FlowFilter {
                    dst: ip("192.0.2.9"),
                    ..FlowFilter::default()
                },
            ],
            "src or dst as two rules; the negation left out"
        );
        assert_eq!(
            rules_of("icmp and port 80").len(),
            1,
            "a port on a protocol without ports is left out, not refused"
        );
        assert_eq!(
            rules_of("not tcp"),
            [FlowFilter::default()],
            "nothing a rule can say: trace all"
        );
    }
}
