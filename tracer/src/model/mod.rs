//! The vocabulary every layer shares: a flow's [`Tuple`], a netfilter
//! [`Verdict`], [`Hook`] and [`Family`], the [`FlowFilter`] a user asks
//! for, and the [`Tier`] that traces it. It imports nothing from the rest of the crate.
mod conntrack;
mod cover;
mod expr;
mod filter;
mod flow;
mod hook;
mod icmp;
mod ifname;
mod tier;
mod verdict;

pub use conntrack::{decode_tuple, Conntrack, CtEntry, CtInfo, Endpoint, Mapping};
pub use expr::{parse as parse_expr, Dir, Dnf, Expr, ExprError, Lit, Prim, SUPPORTED};
pub use filter::{
    parse_port, proto_name, terms_match, Cidr, FilterError, FlowFilter, Flows, Proto,
};
pub use flow::Tuple;
pub use hook::{Family, Hook};
pub use icmp::{IcmpError, IcmpMeaning};
pub use ifname::{IfName, IFNAME_MAX};
pub use tier::Tier;
pub use verdict::Verdict;
