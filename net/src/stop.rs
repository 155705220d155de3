//! A shard-local stop signal: set once on shutdown; every task waiting on it wakes.

use glommio::sync::Semaphore;

/// Set once; `wait` returns when it is set. Waiting futures can be dropped at any time.
#[derive(Debug)]
pub struct Stop {
    // A semaphore with no permits: nobody ever acquires it, and closing it wakes every
    // waiter with an error, which is the signal.
    gate: Semaphore,
}

impl Default for Stop {
    fn default() -> Self {
        Self {
            gate: Semaphore::new(0),
        }
    }
}

impl Stop {
    pub fn trigger(&self) {
        self.gate.close();
    }

    pub fn is_set(&self) -> bool {
        self.gate.try_acquire(1).is_err()
    }

    /// Resolves once `trigger` has been called.
    pub async fn wait(&self) {
        while self.gate.acquire(1).await.is_ok() {}
    }

    /// Sleeps for `period`, or less if the stop comes first; true if it came.
    pub async fn sleep(&self, period: std::time::Duration) -> bool {
        use futures_lite::FutureExt;
        async {
            glommio::timer::sleep(period).await;
            false
        }
        .or(async {
            self.wait().await;
            true
        })
        .await
    }
}
