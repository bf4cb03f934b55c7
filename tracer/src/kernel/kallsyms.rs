//! Kernel symbol table from `/proc/kallsyms`, for naming stack addresses.

use std::path::PathBuf;

pub const KALLSYMS_PATH: &str = "/proc/kallsyms";

#[derive(Debug, thiserror::Error)]
pub enum KallsymsError {
    #[error("failed to read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "kernel symbol addresses are hidden (all zero in /proc/kallsyms): run as root \
         with CAP_SYSLOG, or lower the kernel.kptr_restrict sysctl"
    )]
    AddressesHidden,
    #[error("malformed kallsyms line {line}: {text:?}")]
    Malformed { line: usize, text: String },
    #[error("no symbols in kallsyms")]
    Empty,
}

pub type Result<T> = std::result::Result<T, KallsymsError>;

/// One symbol, in 16 bytes: the table holds the kernel's (about
/// 64,000 on 6.18 without the padding symbols) for as long as pathtrace runs.
#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    /// Where the name starts in the shared buffer.
    name: u32,
    /// The name's length, with [`TEXT`] set for a text symbol.
    len: u16,
    /// 1 + the index of the module in [`Kallsyms::modules`]; 0 for the core kernel.
    module: u16,
}

/// Names of the padding before each function (`CONFIG_FUNCTION_PADDING_BYTES`,
/// half the text symbols of a 6.x kernel): no return address or drop
/// location falls there, so they are not kept.
const PADDING: &str = "__pfx_";

/// In [`Entry::len`]: the symbol is text (`t`, `T`, `w`, `W`).
const TEXT: u16 = 1 << 15;

impl Entry {
    fn name(&self) -> (u32, u32) {
        (self.name, self.name + u32::from(self.len & !TEXT))
    }

    fn text(&self) -> bool {
        self.len & TEXT != 0
    }
}

/// A symbol a kernel address falls into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbol<'a> {
    pub name: &'a str,
    pub offset: u64,
    pub module: Option<&'a str>,
}

/// All symbols sorted by address. Names live in one shared buffer, each
/// module's name once.
#[derive(Debug, Clone)]
pub struct Kallsyms {
    entries: Vec<Entry>,
    strings: String,
    modules: Vec<(u32, u32)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms` a line at a time: the text (about 5 MiB) is
    /// never held whole.
    pub fn load() -> Result<Self> {
        use std::io::BufRead;
        let io_err = |source| KallsymsError::Io {
            path: PathBuf::from(KALLSYMS_PATH),
            source,
        };
        let file = std::fs::File::open(KALLSYMS_PATH).map_err(io_err)?;
        let mut reader = std::io::BufReader::new(file);
        let mut builder = Builder::default();
        let mut line = String::new();
        for i in 0.. {
            line.clear();
            if reader.read_line(&mut line).map_err(io_err)? == 0 {
                break;
            }
            builder.line(i, line.trim_end_matches('\n'))?;
        }
        builder.finish()
    }

    /// Parses `addr type name [module]` lines.
    pub fn parse(text: &str) -> Result<Self> {
        let mut builder = Builder::default();
        for (i, line) in text.lines().enumerate() {
            builder.line(i, line)?;
        }
        builder.finish()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn str(&self, (start, end): (u32, u32)) -> &str {
        self.strings.get(start as usize..end as usize).unwrap_or("")
    }

    /// Name and offset of the text symbol containing `addr`. `None` when the
    /// nearest symbol below is data, or `addr` is below every symbol.
    pub fn symbolize(&self, addr: u64) -> Option<(&str, u64)> {
        self.lookup(addr).map(|s| (s.name, s.offset))
    }

    pub fn lookup(&self, addr: u64) -> Option<Symbol<'_>> {
        let end = self.entries.partition_point(|e| e.addr <= addr);
        let sym_addr = self.entries.get(end.checked_sub(1)?)?.addr;
        let start = self.entries.partition_point(|e| e.addr < sym_addr);
        // Several names can share an address (aliases); take the first text one.
        let entry = self.entries[start..end].iter().find(|e| e.text())?;
        let module = entry
            .module
            .checked_sub(1)
            .and_then(|i| self.modules.get(usize::from(i)))
            .map_or("", |&m| self.str(m));
        Some(Symbol {
            name: self.str(entry.name()),
            offset: addr - sym_addr,
            module: (!module.is_empty()).then_some(module),
        })
    }

    /// Address of the first symbol called `name` (linear scan).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|e| self.str(e.name()) == name)
            .map(|e| e.addr)
    }
}

#[derive(Default)]
struct Builder {
    entries: Vec<Entry>,
    strings: String,
    modules: Vec<(u32, u32)>,
    any_nonzero: bool,
}

impl Builder {
    fn line(&mut self, i: usize, line: &str) -> Result<()> {
        let mut fields = line.split_whitespace();
        let (Some(addr), Some(ty), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            if line.trim().is_empty() {
                return Ok(());
            }
            return Err(malformed(i, line));
        };
        let module = fields
            .next()
            .map(|m| m.trim_start_matches('[').trim_end_matches(']'));
        let (Ok(addr), true) = (u64::from_str_radix(addr, 16), ty.len() == 1) else {
            return Err(malformed(i, line));
        };
        self.any_nonzero |= addr != 0;
        if name.starts_with(PADDING) {
            return Ok(());
        }
        let module = module.map_or(0, |m| self.module(m));
        let (start, end) = push_str(&mut self.strings, name);
        let len = u16::try_from(end - start).unwrap_or(u16::MAX) & !TEXT;
        let text = matches!(ty, "t" | "T" | "w" | "W");
        self.entries.push(Entry {
            addr,
            name: start,
            len: if text { len | TEXT } else { len },
            module,
        });
        Ok(())
    }

    /// The [`Entry::module`] of module `name`: a module's symbols come
    /// together, so the last one is looked at first.
    fn module(&mut self, name: &str) -> u16 {
        let strings = &self.strings;
        let found = self
            .modules
            .iter()
            .rposition(|&(s, e)| strings.get(s as usize..e as usize) == Some(name));
        let index = found.unwrap_or_else(|| {
            let range = push_str(&mut self.strings, name);
            self.modules.push(range);
            self.modules.len() - 1
        });
        u16::try_from(index + 1).unwrap_or(u16::MAX)
    }

    fn finish(self) -> Result<Kallsyms> {
        let Self {
            mut entries,
            mut strings,
            modules,
            any_nonzero,
        } = self;
        if entries.is_empty() {
            return Err(KallsymsError::Empty);
        }
        if !any_nonzero {
            return Err(KallsymsError::AddressesHidden);
        }
        // In place; names were added in file order, which aliases keep.
        entries.sort_unstable_by_key(|e| (e.addr, e.name));
        entries.shrink_to_fit();
        strings.shrink_to_fit();
        Ok(Kallsyms {
            entries,
            strings,
            modules,
        })
    }
}

fn push_str(buf: &mut String, s: &str) -> (u32, u32) {
    let pos = |len: usize| u32::try_from(len).unwrap_or(u32::MAX);
    let start = pos(buf.len());
    buf.push_str(s);
    (start, pos(buf.len()))
}

fn malformed(i: usize, line: &str) -> KallsymsError {
    KallsymsError::Malformed {
        line: i + 1,
        text: line.chars().take(120).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = "\
ffffffff81000000 T srso_alias_untrain_ret
ffffffff81000000 T _stext
ffffffff81001000 t __pfx_ip_rcv
ffffffff81001010 T ip_rcv
ffffffff81001200 t ip_forward.cold
ffffffff81001300 W weak_fn
ffffffff81002000 D some_data
ffffffff81002000 d other_data
ffffffff81003000 T nf_hook_slow
ffffffffc0a01000 t nft_do_chain_bridge\t[nf_tables]
ffffffffc0a02000 t bpf_prog_6deef7357e7b4530_kfree_skb\t[bpf]
";

    fn syms() -> Kallsyms {
        match Kallsyms::parse(FIXTURE) {
            Ok(s) => s,
            Err(e) => panic!("fixture: {e}"),
        }
    }

    #[test]
    fn symbolizes_text_addresses() {
        let s = syms();
        assert_eq!(s.len(), 10, "all but the padding symbol");
        assert_eq!(s.address_of("__pfx_ip_rcv"), None);
        assert_eq!(s.symbolize(0xffffffff81001010), Some(("ip_rcv", 0)));
        assert_eq!(s.symbolize(0xffffffff8100104e), Some(("ip_rcv", 0x3e)));
        assert_eq!(
            s.symbolize(0xffffffff81001208),
            Some(("ip_forward.cold", 8))
        );
        assert_eq!(s.symbolize(0xffffffff81001301), Some(("weak_fn", 1)));
        assert_eq!(
            s.symbolize(0xffffffff81000004),
            Some(("srso_alias_untrain_ret", 4))
        );
        assert_eq!(
            s.symbolize(0xffffffff81003100),
            Some(("nf_hook_slow", 0x100))
        );
    }

    #[test]
    fn data_and_out_of_range_addresses_are_not_symbolized() {
        let s = syms();
        assert_eq!(s.symbolize(0xffffffff81002010), None);
        assert_eq!(s.symbolize(0x1000), None);
    }

    #[test]
    fn modules_are_reported() {
        let s = syms();
        let sym = s.lookup(0xffffffffc0a01010);
        assert_eq!(
            sym,
            Some(Symbol {
                name: "nft_do_chain_bridge",
                offset: 0x10,
                module: Some("nf_tables")
            })
        );
        assert_eq!(s.lookup(0xffffffff81001010).and_then(|s| s.module), None);
        assert_eq!(s.address_of("nf_hook_slow"), Some(0xffffffff81003000));
        assert_eq!(s.address_of("missing"), None);
    }

    #[test]
    fn hidden_addresses_are_detected() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t ip_rcv\n";
        assert!(matches!(
            Kallsyms::parse(hidden),
            Err(KallsymsError::AddressesHidden)
        ));
        let msg = KallsymsError::AddressesHidden.to_string();
        assert!(msg.contains("hidden") && msg.contains("kptr_restrict"));
    }

    #[test]
    fn bad_input_is_rejected() {
        assert!(matches!(Kallsyms::parse(""), Err(KallsymsError::Empty)));
        assert!(matches!(
            Kallsyms::parse("zzzz T x\n"),
            Err(KallsymsError::Malformed { line: 1, .. })
        ));
        assert!(matches!(
            Kallsyms::parse("ffff T x\nffff\n"),
            Err(KallsymsError::Malformed { line: 2, .. })
        ));
    }

    #[test]
    fn real_kallsyms() {
        let start = std::time::Instant::now();
        let s = Kallsyms::load().unwrap_or_else(|e| {
            panic!("real_kallsyms needs /proc/kallsyms with addresses (root): {e}")
        });
        eprintln!("{} symbols loaded in {:?}", s.len(), start.elapsed());
        let addr = s
            .address_of("nf_hook_slow")
            .expect("nf_hook_slow in kallsyms");
        assert_eq!(s.symbolize(addr + 1), Some(("nf_hook_slow", 1)));
        assert_eq!(std::mem::size_of::<Entry>(), 16);
        // Every module symbol names its module, as the file does.
        let text = std::fs::read_to_string(KALLSYMS_PATH).expect("reads kallsyms");
        let in_module = text
            .lines()
            .filter(|l| l.split_whitespace().nth(3).is_some());
        for line in in_module.step_by(97) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = u64::from_str_radix(f[0], 16).expect("hex");
            let module = f[3].trim_matches(['[', ']']);
            let found = s
                .entries
                .iter()
                .find(|e| e.addr == addr && s.str(e.name()) == f[2]);
            let found = found.expect("the symbol is in the table");
            let m = found
                .module
                .checked_sub(1)
                .map(|i| s.str(s.modules[usize::from(i)]));
            assert_eq!(m, Some(module), "{line}");
        }
    }
}
