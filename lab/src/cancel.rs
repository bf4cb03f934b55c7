//! Stopping a lab build part-way: [`Lab::start_cancellable`] watches a
//! [`StopFlag`] between steps, while an external command runs and while it
//! waits for dockerd or httpd. What was built is then torn down.
//!
//! [`Lab::start_cancellable`]: super::Lab::start_cancellable

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::LabError;

/// Set from another thread (a signal handler's task) to stop a build.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

thread_local! {
    /// The flag of the build running on this thread; the build's commands
    /// and waits run on the thread that started it.
    static CURRENT: RefCell<Option<StopFlag>> = const { RefCell::new(None) };
}

/// Makes `flag` the current build's until dropped; teardown runs after, so
/// it is never cut short.
pub(crate) struct Scope(());

impl Scope {
    pub(crate) fn enter(flag: &StopFlag) -> Self {
        CURRENT.with(|c| *c.borrow_mut() = Some(flag.clone()));
        Self(())
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

/// Whether the build on this thread was told to stop.
pub(crate) fn stopped() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(StopFlag::is_stopped))
}

/// `Err(Cancelled)` once the build on this thread was told to stop.
pub(crate) fn check() -> Result<(), LabError> {
    if stopped() {
        Err(LabError::Cancelled)
    } else {
        Ok(())
    }
}
