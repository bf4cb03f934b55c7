//! A bounded CPU load for `cargo xtask test --under-load`: one busy thread
//! per CPU, in a child process that ends itself at its deadline, dies with
//! xtask (parent-death signal) and is ended by its pid when the tests end.
use std::{
    os::unix::process::CommandExt,
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// `cargo xtask load-generator --seconds N` (hidden: what `test
/// --under-load` starts).
#[derive(clap::Args)]
pub struct Options {
    #[arg(long)]
    pub seconds: u64,
}

/// Keeps every CPU busy until `opts.seconds` have passed.
pub fn run(opts: Options) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(opts.seconds);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads: Vec<_> = (0..cpus)
        .map(|_| {
            std::thread::spawn(move || {
                let mut x: u64 = 1;
                while Instant::now() < end {
                    for _ in 0..100_000 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
                x
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// The running load generator; dropping it ends it by its pid.
pub struct Load {
    child: Child,
    started: Instant,
}

impl Load {
    /// Starts `xtask load-generator` for at most `bound`.
    pub fn start(bound: Duration) -> Result<Self> {
        let exe = std::env::current_exe().context("finding xtask's own binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["load-generator", "--seconds", &bound.as_secs().to_string()]);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().context("starting the load generator")?;
        eprintln!(
            "xtask: load generator {} keeps every CPU busy (at most {} s)",
            child.id(),
            bound.as_secs()
        );
        Ok(Self {
            child,
            started: Instant::now(),
        })
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        // The child is ours and not yet reaped, so its pid is still valid.
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!(
            "xtask: load generator {} ended after {} s",
            self.child.id(),
            self.started.elapsed().as_secs()
        );
    }
}
