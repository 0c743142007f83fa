//! Group commit: deliveries that arrive while storage is busy with earlier
//! ones are handed to it together, in one `storage.deliver` call, so that
//! it can make them durable at once (one directory fsync, one database
//! transaction) before any of them is acknowledged.
//!
//! A delivery waits only while a batch is in flight; an idle server sends
//! each message on its own at once. At most [`MAX_IN_FLIGHT`] batches run
//! at a time and each holds at most [`MAX_BATCH`] messages.
//!
//! If the plugin fails on a batch (a trap, a deadline), which of its
//! messages were stored is unknown; every delivery id stores at most once,
//! so each message is tried again on its own: one message that makes the
//! plugin fail costs only its own delivery, not its batch-mates'.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::plugin::StoragePlugin;
use crate::plugin::storage::{Delivered, Delivery, Failure};

/// Most messages in one `deliver` call.
pub const MAX_BATCH: usize = 64;
/// Most `deliver` calls at once.
pub const MAX_IN_FLIGHT: usize = 2;

type Request = (Delivery, oneshot::Sender<Result<Delivered, Failure>>);

/// Hands deliveries to one storage plugin version in batches.
pub struct Batcher {
    queue: mpsc::UnboundedSender<Request>,
}

impl Batcher {
    /// Starts the batching task for `storage`; it ends when the batcher is
    /// dropped and the queue is empty.
    pub fn new(storage: Arc<StoragePlugin>) -> Batcher {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(storage, rx));
        Batcher { queue }
    }

    /// Stores one message; answers once it is durable (or refused).
    pub async fn deliver(&self, delivery: Delivery) -> Result<Delivered, Failure> {
        let (tx, rx) = oneshot::channel();
        if self.queue.send((delivery, tx)).is_err() {
            return Err(Failure::Temporary("the delivery queue is closed".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(Failure::Temporary("the delivery batch was lost".into())))
    }
}

async fn run(storage: Arc<StoragePlugin>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for a free slot first: what queues up meanwhile forms the
        // next batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let storage = storage.clone();
        tokio::spawn(async move {
            let (deliveries, answers): (Vec<Delivery>, Vec<_>) = batch.into_iter().unzip();
            let results = store(&storage, deliveries).await;
            drop(permit);
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        });
    }
}

/// Stores a batch; after a plugin failure, each message on its own.
async fn store(storage: &StoragePlugin, batch: Vec<Delivery>) -> Vec<Result<Delivered, Failure>> {
    match storage.deliver(&batch).await {
        Ok(results) => results,
        Err(e) if batch.len() == 1 => vec![Err(Failure::Plugin(e))],
        Err(e) => {
            tracing::warn!(
                messages = batch.len(),
                "storage failed on a delivery batch ({e}); trying each message on its own"
            );
            let mut results = Vec::with_capacity(batch.len());
            for delivery in batch {
                results.push(
                    match storage.deliver(std::slice::from_ref(&delivery)).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| {
                            Err(Failure::Temporary("no answer from storage".into()))
                        }),
                        Err(e) => Err(Failure::Plugin(e)),
                    },
                );
            }
            results
        }
    }
}
