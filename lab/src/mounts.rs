//! /proc/self/mountinfo: the mounts under a lab's state dir, and cgroup hierarchies.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One line of mountinfo: mount point and file-system type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub(crate) fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            let sep = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(sep + 1)?;
            Some(Mount {
                point: PathBuf::from(unescape(point)),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

pub(crate) fn current() -> Vec<Mount> {
    fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

pub(crate) fn is_mount_point(path: &Path) -> bool {
    current().iter().any(|m| m.point == path)
}

/// Mount points at or under `dir`, deepest first.
pub(crate) fn under(dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = current()
        .into_iter()
        .map(|m| m.point)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    points
}

/// Lazily unmounts everything at or under `dir`, deepest first (repeating for stacked
/// mounts). Returns what is still mounted afterwards, as messages.
pub(crate) fn unmount_all_under(dir: &Path) -> Vec<String> {
    for _round in 0..5 {
        let points = under(dir);
        if points.is_empty() {
            return Vec::new();
        }
        for p in &points {
            if let Err(e) = umount_detach(p) {
                log::debug!("umount -l {}: {e}", p.display());
            }
        }
    }
    under(dir)
        .into_iter()
        .map(|p| format!("still mounted: {}", p.display()))
        .collect()
}

/// Mount points of all cgroup (v1 and v2) hierarchies.
pub(crate) fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = current()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| m.point)
        .collect();
    roots.dedup();
    roots
}

/// The mount point of the cgroup2 (unified) hierarchy, if one is mounted:
/// `/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host.
pub fn cgroup2_root() -> Option<PathBuf> {
    current()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.point)
}

/// Removes `/{name}` (and its empty sub-cgroups) from every cgroup hierarchy.
/// Returns problems as messages.
pub(crate) fn remove_cgroup(name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for root in cgroup_roots() {
        let dir = root.join(name);
        if dir.is_dir() {
            if let Err(e) = rmdir_cgroup(&dir) {
                problems.push(format!("rmdir {}: {e}", dir.display()));
            }
        }
    }
    problems
}

/// Cgroup directories are removed with rmdir (their files are virtual), children first.
fn rmdir_cgroup(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)?.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            rmdir_cgroup(&entry.path())?;
        }
    }
    fs::remove_dir(dir)
}

/// `umount2(path, MNT_DETACH)` (a lazy unmount, like `umount -l`), without running the
/// `umount` binary (which would create /run/mount).
pub(crate) fn umount_detach(path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: a valid NUL-terminated path; umount2 doesn't keep the pointer.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod mount_tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let text = "45 27 254:0 /run/x /run/pathtrace-lab/pt/data rw,relatime shared:4 - ext4 /dev/vda rw\n\
                    93 27 0:4 net:[4026532325] /run/pathtrace-lab/pt/exec/netns/0e8 rw - nsfs nsfs rw\n\
                    94 27 0:4 / /tmp/a\\040b rw - tmpfs tmpfs rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].point, PathBuf::from("/run/pathtrace-lab/pt/data"));
        assert_eq!(m[1].fstype, "nsfs");
        assert_eq!(m[2].point, PathBuf::from("/tmp/a b"));
    }
}
