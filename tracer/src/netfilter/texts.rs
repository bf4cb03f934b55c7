//! Rule texts by handle, kept deflated in blocks of lines: a table of
//! 50,000 rules lists about 7 MB of text, and keeps well under 1 MB of it.
//! A lookup inflates one block.
use std::io::{Read, Write};

use flate2::{read::DeflateDecoder, write::DeflateEncoder, Compression};

/// Lines per block: a lookup inflates at most this many.
const BLOCK: usize = 64;

/// The text of each rule of a listing, by handle.
#[derive(Debug, Default)]
pub struct Texts {
    /// Each rule's handle and line number, sorted by handle.
    at: Vec<(u64, u32)>,
    blocks: Vec<Box<[u8]>>,
    /// The lines of the block being filled.
    open: String,
    lines: u32,
}

fn deflate(text: &str) -> Box<[u8]> {
    let mut e = DeflateEncoder::new(Vec::new(), Compression::fast());
    // Writing into a Vec can't fail.
    let _ = e.write_all(text.as_bytes());
    e.finish().unwrap_or_default().into_boxed_slice()
}

impl Texts {
    /// Adds the text of rule `handle`, a single line.
    pub fn push(&mut self, handle: u64, text: &str) {
        self.open.push_str(text.trim_end_matches('\n'));
        self.open.push('\n');
        self.at.push((handle, self.lines));
        self.lines += 1;
        if self.open.len() >= 4096 || (self.lines as usize).is_multiple_of(BLOCK) {
            self.seal();
        }
    }

    /// Deflates the block being filled; the next line starts a new block
    /// (a long block is sealed before it has [`BLOCK`] lines).
    fn seal(&mut self) {
        self.blocks.push(deflate(&self.open));
        self.open.clear();
        self.lines = (self.blocks.len() * BLOCK) as u32;
    }

    /// Ends the listing: what remains is deflated, and handles sorted.
    pub fn finish(mut self) -> Self {
        if !self.open.is_empty() {
            self.seal();
        }
        self.open = String::new();
        self.at.sort_unstable_by_key(|(h, _)| *h);
        self.at.shrink_to_fit();
        self.blocks.shrink_to_fit();
        self
    }

    /// Forgets the texts of `handles`.
    pub fn forget(&mut self, handles: &std::collections::HashSet<u64>) {
        self.at.retain(|(h, _)| !handles.contains(h));
    }

    pub fn contains(&self, handle: u64) -> bool {
        self.line_of(handle).is_some()
    }

    fn line_of(&self, handle: u64) -> Option<u32> {
        let i = self.at.binary_search_by_key(&handle, |(h, _)| *h).ok()?;
        Some(self.at[i].1)
    }

    /// The text of rule `handle`.
    pub fn get(&self, handle: u64) -> Option<String> {
        let n = self.line_of(handle)? as usize;
        let block = self.blocks.get(n / BLOCK)?;
        let mut text = String::new();
        DeflateDecoder::new(&block[..])
            .read_to_string(&mut text)
            .ok()?;
        text.lines().nth(n % BLOCK).map(str::to_owned)
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_comes_back_by_its_handle() {
        let mut t = Texts::default();
        for h in 0..1000u64 {
            t.push(
                5000 - h,
                &format!("-A KUBE-SERVICES -d 10.96.0.{h}/32 -j DNAT"),
            );
        }
        let t = t.finish();
        for h in [0u64, 1, 63, 64, 65, 500, 999] {
            assert_eq!(
                t.get(5000 - h).as_deref(),
                Some(format!("-A KUBE-SERVICES -d 10.96.0.{h}/32 -j DNAT").as_str())
            );
        }
        assert_eq!(t.get(1), None);
        assert!(t.blocks.iter().map(|b| b.len()).sum::<usize>() < 20_000);
    }

    #[test]
    fn long_lines_seal_a_block_early_and_still_come_back() {
        let mut t = Texts::default();
        let long = "x".repeat(3000);
        for h in 0..10u64 {
            t.push(h, &format!("{h} {long}"));
        }
        let t = t.finish();
        for h in 0..10u64 {
            assert_eq!(t.get(h), Some(format!("{h} {long}")));
        }
    }
}
