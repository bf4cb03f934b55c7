//! What netfilter decided: a hook's return (`NF_ACCEPT`, `NF_DROP`, …), an
//! nf_tables rule or chain policy, or an iptables target.
use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// A netfilter verdict. Keywords print in upper case (`DROP`, `JUMP
/// DOCKER-USER`); chain names keep the case the kernel has them in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verdict {
    Accept,
    Drop,
    Stolen,
    /// NF_QUEUE, with the queue number.
    Queue(u16),
    Repeat,
    Stop,
    Continue,
    Break,
    Jump(String),
    Goto(String),
    Return,
    Other(i32),
}

impl Verdict {
    /// Decodes an nf_tables verdict code (`NFTA_VERDICT_CODE`,
    /// `NFTA_TRACE_POLICY`): `NF_*` when non-negative, `NFT_*` below zero.
    pub fn from_code(code: i32, chain: Option<String>) -> Self {
        if code >= 0 {
            return match code & libc::NF_VERDICT_MASK {
                libc::NF_DROP => Self::Drop,
                libc::NF_ACCEPT => Self::Accept,
                libc::NF_STOLEN => Self::Stolen,
                libc::NF_QUEUE => Self::Queue((code >> 16) as u16),
                libc::NF_REPEAT => Self::Repeat,
                libc::NF_STOP => Self::Stop,
                _ => Self::Other(code),
            };
        }
        match code {
            libc::NFT_CONTINUE => Self::Continue,
            libc::NFT_BREAK => Self::Break,
            libc::NFT_JUMP => Self::Jump(chain.unwrap_or_default()),
            libc::NFT_GOTO => Self::Goto(chain.unwrap_or_default()),
            libc::NFT_RETURN => Self::Return,
            _ => Self::Other(code),
        }
    }

    /// True for verdicts that end the packet's walk through the hook.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Accept | Self::Drop | Self::Stolen | Self::Queue(_)
        )
    }

    pub fn is_drop(&self) -> bool {
        *self == Self::Drop
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Accept => f.write_str("ACCEPT"),
            Self::Drop => f.write_str("DROP"),
            Self::Stolen => f.write_str("STOLEN"),
            Self::Queue(n) => write!(f, "QUEUE {n}"),
            Self::Repeat => f.write_str("REPEAT"),
            Self::Stop => f.write_str("STOP"),
            Self::Continue => f.write_str("CONTINUE"),
            Self::Break => f.write_str("BREAK"),
            Self::Jump(c) => write!(f, "JUMP {c}"),
            Self::Goto(c) => write!(f, "GOTO {c}"),
            Self::Return => f.write_str("RETURN"),
            Self::Other(c) => write!(f, "VERDICT {c}"),
        }
    }
}

impl Serialize for Verdict {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Text that names no verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a netfilter verdict")]
pub struct UnknownVerdict(pub String);

impl FromStr for Verdict {
    type Err = UnknownVerdict;

    /// Keywords in any case (`accept`, `DROP`); a chain name is kept as given.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (word, rest) = match s.split_once(char::is_whitespace) {
            Some((w, r)) => (w, Some(r.trim())),
            None => (s, None),
        };
        let unknown = || UnknownVerdict(s.to_owned());
        let keyword = |k: &str| word.eq_ignore_ascii_case(k);
        Ok(match rest {
            None if keyword("accept") => Self::Accept,
            None if keyword("drop") => Self::Drop,
            None if keyword("stolen") => Self::Stolen,
            None if keyword("queue") => Self::Queue(0),
            None if keyword("repeat") => Self::Repeat,
            None if keyword("stop") => Self::Stop,
            None if keyword("continue") => Self::Continue,
            None if keyword("break") => Self::Break,
            None if keyword("return") => Self::Return,
            Some(n) if keyword("queue") => Self::Queue(n.parse().map_err(|_| unknown())?),
            Some(c) if keyword("jump") => Self::Jump(c.to_owned()),
            Some(c) if keyword("goto") => Self::Goto(c.to_owned()),
            _ => return Err(unknown()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(Verdict::from_code(0, None), Verdict::Drop);
        assert_eq!(Verdict::from_code(1, None), Verdict::Accept);
        assert_eq!(Verdict::from_code(3 | (7 << 16), None), Verdict::Queue(7));
        assert_eq!(
            Verdict::from_code(-3, Some("DOCKER-USER".into())),
            Verdict::Jump("DOCKER-USER".into())
        );
        assert_eq!(Verdict::from_code(-5, None), Verdict::Return);
        assert_eq!(Verdict::from_code(-9, None), Verdict::Other(-9));
    }

    #[test]
    fn text_round_trips_and_keeps_chain_case() {
        for v in [
            Verdict::Accept,
            Verdict::Drop,
            Verdict::Queue(3),
            Verdict::Jump("my-chain".into()),
            Verdict::Goto("DOCKER".into()),
            Verdict::Return,
            Verdict::Continue,
        ] {
            assert_eq!(v.to_string().parse::<Verdict>(), Ok(v));
        }
        assert_eq!("drop".parse::<Verdict>(), Ok(Verdict::Drop));
        assert_eq!("Accept".parse::<Verdict>(), Ok(Verdict::Accept));
        assert_eq!(
            "jump web-In".parse::<Verdict>(),
            Ok(Verdict::Jump("web-In".into()))
        );
        assert_eq!(Verdict::Jump("web-In".into()).to_string(), "JUMP web-In");
        assert!("DNAT".parse::<Verdict>().is_err());
        assert_eq!(
            serde_json::to_string(&Verdict::Drop).ok().as_deref(),
            Some("\"DROP\"")
        );
    }
}
