//! The registry of named queues and topics.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::channel::{QueueConfig, Receiver, Sender, Shared};
use crate::error::BusError;
use crate::stats::{BusStats, QueueStats, TopicStats};
use crate::topic::Topic;

/// A queue of any message type, as the registry keeps it.
trait ErasedQueue: Send + Sync {
    fn stats(&self, name: &str) -> QueueStats;
    fn config(&self) -> QueueConfig;
    fn is_closed(&self) -> bool;
    fn close(&self);
    fn message_type(&self) -> &'static str;
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Send + 'static> ErasedQueue for Shared<T> {
    fn stats(&self, name: &str) -> QueueStats {
        Shared::stats(self, name, type_name::<T>())
    }
    fn config(&self) -> QueueConfig {
        Shared::config(self)
    }
    fn is_closed(&self) -> bool {
        Shared::is_closed(self)
    }
    fn close(&self) {
        Shared::close(self)
    }
    fn message_type(&self) -> &'static str {
        type_name::<T>()
    }
    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

/// A topic of any message type, as the registry keeps it.
trait ErasedTopic: Send + Sync {
    fn stats(&self, name: &str) -> TopicStats;
    fn capacity(&self) -> usize;
    fn message_type(&self) -> &'static str;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Clone + Send + 'static> ErasedTopic for Topic<T> {
    fn stats(&self, name: &str) -> TopicStats {
        Topic::stats(self, name, type_name::<T>())
    }
    fn capacity(&self) -> usize {
        Topic::capacity(self)
    }
    fn message_type(&self) -> &'static str {
        type_name::<T>()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

enum Entry {
    Queue {
        type_id: TypeId,
        queue: Arc<dyn ErasedQueue>,
    },
    Topic {
        type_id: TypeId,
        topic: Box<dyn ErasedTopic>,
    },
}

/// A set of named queues and topics, shared by cloning.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use flowbalancer_bus::{Bus, Overflow, QueueConfig};
///
/// let bus = Bus::new();
/// let config = QueueConfig::new(256).overflow(Overflow::DropOldest);
/// let (tx, rx) = bus.queue::<String>("jobs", config)?;
/// let worker = bus.receiver::<String>("jobs", config)?; // shares the work with `rx`
///
/// tx.send("build".to_string()).await?;
/// assert_eq!(worker.recv().await.as_deref(), Some("build"));
///
/// // Same name, another type: a typed error, not a panic.
/// assert!(bus.queue::<u32>("jobs", config).is_err());
/// assert_eq!(bus.stats().queues[0].sent, 1);
/// # drop(rx);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct Bus {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the queue `name` or looks it up, and returns a new sender and receiver for it.
    ///
    /// A queue closes for good when it is closed explicitly or when its last sender (or last
    /// receiver) is dropped — so keep both halves, or ask for one side only with
    /// [`sender`](Self::sender) / [`receiver`](Self::receiver). Asking for a closed queue by
    /// name creates a fresh one in its place.
    ///
    /// # Errors
    ///
    /// [`BusError::TypeMismatch`] or [`BusError::ConfigMismatch`] when `name` exists with
    /// another message type or config, [`BusError::KindMismatch`] when it is a topic,
    /// [`BusError::Capacity`] for a capacity of 0.
    pub fn queue<T: Send + 'static>(
        &self,
        name: &str,
        config: QueueConfig,
    ) -> Result<(Sender<T>, Receiver<T>), BusError> {
        self.with_queue(name, config, |shared| {
            Some((
                Sender::attach(Arc::clone(shared))?,
                Receiver::attach(Arc::clone(shared))?,
            ))
        })
    }

    /// A new sender for the queue `name` (created if needed); see [`queue`](Self::queue).
    ///
    /// # Errors
    ///
    /// As [`queue`](Self::queue).
    pub fn sender<T: Send + 'static>(
        &self,
        name: &str,
        config: QueueConfig,
    ) -> Result<Sender<T>, BusError> {
        self.with_queue(name, config, |shared| Sender::attach(Arc::clone(shared)))
    }

    /// A new receiver for the queue `name` (created if needed); see [`queue`](Self::queue).
    ///
    /// # Errors
    ///
    /// As [`queue`](Self::queue).
    pub fn receiver<T: Send + 'static>(
        &self,
        name: &str,
        config: QueueConfig,
    ) -> Result<Receiver<T>, BusError> {
        self.with_queue(name, config, |shared| Receiver::attach(Arc::clone(shared)))
    }

    fn with_queue<T: Send + 'static, R>(
        &self,
        name: &str,
        config: QueueConfig,
        attach: impl Fn(&Arc<Shared<T>>) -> Option<R>,
    ) -> Result<R, BusError> {
        let mut entries = self.entries.lock();
        if let Some(entry) = entries.get(name) {
            match entry {
                Entry::Topic { .. } => {
                    return Err(BusError::KindMismatch {
                        name: name.to_string(),
                        existing: "topic",
                        requested: "queue",
                    });
                }
                Entry::Queue { type_id, queue } if !queue.is_closed() => {
                    if *type_id != TypeId::of::<T>() {
                        return Err(BusError::TypeMismatch {
                            kind: "queue",
                            name: name.to_string(),
                            existing: queue.message_type(),
                            requested: type_name::<T>(),
                        });
                    }
                    if queue.config() != config {
                        return Err(BusError::ConfigMismatch {
                            name: name.to_string(),
                            existing: queue.config(),
                            requested: config,
                        });
                    }
                    let shared =
                        Arc::clone(queue)
                            .as_any()
                            .downcast::<Shared<T>>()
                            .map_err(|_| BusError::TypeMismatch {
                                kind: "queue",
                                name: name.to_string(),
                                existing: queue.message_type(),
                                requested: type_name::<T>(),
                            })?;
                    if let Some(handles) = attach(&shared) {
                        return Ok(handles);
                    }
                    // Its last sender or receiver left just now: replace it below.
                }
                Entry::Queue { .. } => {}
            }
        }
        let shared = Arc::new(
            Shared::<T>::new(config).map_err(|source| BusError::Capacity {
                name: name.to_string(),
                source,
            })?,
        );
        let handles = attach(&shared).ok_or_else(|| BusError::Capacity {
            name: name.to_string(),
            source: flowbalancer_ringbuf::CapacityError::Zero,
        })?;
        entries.insert(
            name.to_string(),
            Entry::Queue {
                type_id: TypeId::of::<T>(),
                queue: shared,
            },
        );
        Ok(handles)
    }

    /// Creates the broadcast topic `name` or looks it up. `capacity` messages are kept for
    /// slow subscribers; a subscriber further behind lags.
    ///
    /// # Errors
    ///
    /// [`BusError::TypeMismatch`], [`BusError::TopicCapacityMismatch`],
    /// [`BusError::KindMismatch`], or [`BusError::Capacity`] for a capacity of 0 (or above
    /// `usize::MAX / 2`).
    pub fn topic<T: Clone + Send + 'static>(
        &self,
        name: &str,
        capacity: usize,
    ) -> Result<Topic<T>, BusError> {
        if capacity == 0 || capacity > usize::MAX / 2 {
            return Err(BusError::Capacity {
                name: name.to_string(),
                source: if capacity == 0 {
                    flowbalancer_ringbuf::CapacityError::Zero
                } else {
                    flowbalancer_ringbuf::CapacityError::TooLarge {
                        requested: capacity,
                    }
                },
            });
        }
        let mut entries = self.entries.lock();
        match entries.get(name) {
            Some(Entry::Queue { .. }) => Err(BusError::KindMismatch {
                name: name.to_string(),
                existing: "queue",
                requested: "topic",
            }),
            Some(Entry::Topic { type_id, topic }) => {
                if *type_id != TypeId::of::<T>() {
                    return Err(BusError::TypeMismatch {
                        kind: "topic",
                        name: name.to_string(),
                        existing: topic.message_type(),
                        requested: type_name::<T>(),
                    });
                }
                if topic.capacity() != capacity {
                    return Err(BusError::TopicCapacityMismatch {
                        name: name.to_string(),
                        existing: topic.capacity(),
                        requested: capacity,
                    });
                }
                topic
                    .as_any()
                    .downcast_ref::<Topic<T>>()
                    .cloned()
                    .ok_or_else(|| BusError::TypeMismatch {
                        kind: "topic",
                        name: name.to_string(),
                        existing: topic.message_type(),
                        requested: type_name::<T>(),
                    })
            }
            None => {
                let topic = Topic::<T>::new(capacity);
                entries.insert(
                    name.to_string(),
                    Entry::Topic {
                        type_id: TypeId::of::<T>(),
                        topic: Box::new(topic.clone()),
                    },
                );
                Ok(topic)
            }
        }
    }

    /// Closes and forgets the queue or topic `name`; returns whether it existed. Receivers of
    /// a queue drain what is left; subscribers of a topic see the end once every other
    /// publisher handle is gone.
    pub fn remove(&self, name: &str) -> bool {
        match self.entries.lock().remove(name) {
            Some(Entry::Queue { queue, .. }) => {
                queue.close();
                true
            }
            Some(Entry::Topic { .. }) => true,
            None => false,
        }
    }

    /// Counters of every queue and topic, sorted by name.
    pub fn stats(&self) -> BusStats {
        let entries = self.entries.lock();
        let mut stats = BusStats::default();
        for (name, entry) in entries.iter() {
            match entry {
                Entry::Queue { queue, .. } => stats.queues.push(queue.stats(name)),
                Entry::Topic { topic, .. } => stats.topics.push(topic.stats(name)),
            }
        }
        stats.queues.sort_by(|a, b| a.name.cmp(&b.name));
        stats.topics.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.entries.lock();
        let mut names: Vec<&String> = entries.keys().collect();
        names.sort();
        f.debug_struct("Bus").field("names", &names).finish()
    }
}
