//! Where the gate's own tasks run (its deadline timer, its approvers'
//! outboxes): not on any caller's path, and alive whether or not anyone
//! waits.

use std::future::Future;

use tokio::runtime::Handle;

/// The runtime the gate's tasks are spawned on.
#[derive(Debug)]
pub(crate) struct Background {
    handle: Handle,
    /// On a thread of the gate's own: every task holds a clone, and the
    /// thread ends once the gate (which holds this one) and every task
    /// are gone.
    alive: Option<tokio::sync::mpsc::Sender<()>>,
}

impl Background {
    /// The runtime current where the gate is built or, outside any runtime
    /// (a program of plain `fn`s, whose calls each make a runtime that ends
    /// with the call), one on a thread of the gate's own.
    pub(crate) fn start() -> std::io::Result<Self> {
        if let Ok(handle) = Handle::try_current() {
            return Ok(Self::on(handle));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (alive, mut ended) = tokio::sync::mpsc::channel::<()>(1);
        std::thread::Builder::new()
            .name("approval-gate".into())
            .spawn(move || {
                // `recv` gives `None` once every sender is dropped.
                runtime.block_on(async move { while ended.recv().await.is_some() {} });
            })?;
        Ok(Self {
            handle,
            alive: Some(alive),
        })
    }

    /// On `handle`, as the builder was told.
    pub(crate) fn on(handle: Handle) -> Self {
        Self {
            handle,
            alive: None,
        }
    }

    /// Spawns one of the gate's tasks.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.alive.clone();
        self.handle.spawn(async move {
            task.await;
            drop(token);
        });
    }
}
