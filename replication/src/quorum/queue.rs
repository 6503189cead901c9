//! Single-threaded bounded queues and the shutdown signal shared by the quorum's tasks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use event_listener::Event;

/// A bounded FIFO between tasks of one executor.
pub(crate) struct LocalQueue<T> {
    items: RefCell<VecDeque<T>>,
    capacity: usize,
    pushed: Event,
    popped: Event,
}

impl<T> LocalQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        LocalQueue {
            items: RefCell::new(VecDeque::new()),
            capacity,
            pushed: Event::new(),
            popped: Event::new(),
        }
    }

    /// Appends `item`, or hands it back when the queue is full.
    pub(crate) fn try_push(&self, item: T) -> Result<(), T> {
        let mut items = self.items.borrow_mut();
        if items.len() >= self.capacity {
            return Err(item);
        }
        items.push_back(item);
        self.pushed.notify(usize::MAX);
        Ok(())
    }

    /// Appends `item`, waiting for room.
    pub(crate) async fn push(&self, mut item: T) {
        loop {
            let listener = self.popped.listen();
            match self.try_push(item) {
                Ok(()) => return,
                Err(back) => item = back,
            }
            listener.await;
        }
    }

    pub(crate) fn try_pop(&self) -> Option<T> {
        let item = self.items.borrow_mut().pop_front();
        if item.is_some() {
            self.popped.notify(usize::MAX);
        }
        item
    }

    pub(crate) async fn pop(&self) -> T {
        loop {
            let listener = self.pushed.listen();
            if let Some(item) = self.try_pop() {
                return item;
            }
            listener.await;
        }
    }

    /// Resolves once the queue holds an item.
    pub(crate) async fn ready(&self) {
        loop {
            let listener = self.pushed.listen();
            if !self.items.borrow().is_empty() {
                return;
            }
            listener.await;
        }
    }

    /// Empties the queue, returning what it held.
    pub(crate) fn drain(&self) -> Vec<T> {
        let items: Vec<T> = self.items.borrow_mut().drain(..).collect();
        self.popped.notify(usize::MAX);
        items
    }
}

/// Tells every task of a quorum to stop.
#[derive(Default)]
pub(crate) struct Shutdown {
    set: Cell<bool>,
    event: Event,
}

impl Shutdown {
    pub(crate) fn trigger(&self) {
        self.set.set(true);
        self.event.notify(usize::MAX);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    pub(crate) async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.is_set() {
                return;
            }
            listener.await;
        }
    }

    /// Runs `work` until it ends or shutdown is triggered, whichever comes first.
    pub(crate) async fn guard<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(work.await) }, async {
            self.wait().await;
            None
        })
        .await
    }
}
