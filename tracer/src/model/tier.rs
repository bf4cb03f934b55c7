//! Which mechanism sees `nf_hook_slow`: trampolines, kprobes, or neither.
use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// fentry/fexit on `nf_hook_slow`: every hook's verdict.
    Fentry,
    /// kprobe/kretprobe on `nf_hook_slow`: the same, without trampolines.
    Kprobe,
    /// Tracepoints and `tp_btf` only: device hops and drops (every kernel
    /// pathtrace runs on has it).
    #[default]
    Tracepoint,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fentry => "fentry",
            Self::Kprobe => "kprobe",
            Self::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_its_name() {
        for t in [Tier::Fentry, Tier::Kprobe, Tier::Tracepoint] {
            let json = serde_json::to_string(&t).ok();
            assert_eq!(json, Some(format!("\"{}\"", t.as_str())));
        }
    }
}
