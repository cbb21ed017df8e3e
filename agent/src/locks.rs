//! One lock per stack, between the applier and the backups: a backup that stops services (or a
//! restore that swaps a volume) holds its stack's lock, and the applier leaves a held stack alone
//! — it would otherwise see the stopped containers as drift and start them in the middle of the
//! copy. The applier only tries the lock (it never waits: other stacks go on); a backup waits for
//! the applier's pass over its stack to end. When a lock is released the applier is nudged to
//! look at the stack again.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedMutexGuard};

#[derive(Clone, Default)]
pub struct StackLocks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    locks: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    released: Notify,
}

/// A held stack lock; releasing it nudges the applier.
pub struct StackGuard {
    _guard: OwnedMutexGuard<()>,
    inner: Arc<Inner>,
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        self.inner.released.notify_one();
    }
}

impl std::fmt::Debug for StackLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StackLocks")
    }
}

impl StackLocks {
    fn entry(&self, stack: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.inner.locks.lock() {
            Ok(l) => l,
            Err(poisoned) => poisoned.into_inner(),
        };
        locks.entry(stack.to_owned()).or_default().clone()
    }

    /// The applier's way: the lock if it is free now.
    pub fn try_lock(&self, stack: &str) -> Option<OwnedMutexGuard<()>> {
        self.entry(stack).try_lock_owned().ok()
    }

    /// A backup's or a restore's way: wait for the lock.
    pub async fn lock(&self, stack: &str) -> StackGuard {
        StackGuard {
            _guard: self.entry(stack).lock_owned().await,
            inner: self.inner.clone(),
        }
    }

    /// Completes when a backup or restore released a stack.
    pub async fn released(&self) {
        self.inner.released.notified().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_held_stack_is_skipped_by_the_applier_and_released_with_a_nudge() {
        let locks = StackLocks::default();
        let guard = locks.lock("shop").await;
        assert!(locks.try_lock("shop").is_none());
        assert!(locks.try_lock("other").is_some());
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.released().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(locks.try_lock("shop").is_some());
    }
}
