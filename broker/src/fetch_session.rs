//! KIP-227 incremental fetch sessions.
//!
//! A consumer that fetches many partitions would otherwise send all of them, and get all
//! of them back, on every Fetch. With a session the broker remembers the partitions and
//! their fetch state; an incremental fetch carries only the partitions that changed (new
//! offsets, additions, `forgotten_topics_data` removals), and its response only the
//! partitions with records, a changed high watermark or log start offset, or an error.
//!
//! Request metadata, as Kafka reads it (`session_id`, `session_epoch`):
//! - epoch -1: a full fetch without a session; a non-zero id closes that session.
//! - epoch 0: a full fetch asking for a new session (a non-zero id closes the old one).
//!   The new session's id is in the response, or 0 when the cache has no room.
//! - any other epoch: an incremental fetch of session `id`, which must exist on this
//!   shard (else FETCH_SESSION_ID_NOT_FOUND), expect this epoch (else
//!   INVALID_FETCH_SESSION_EPOCH) and use topic ids exactly when the request version does
//!   (v13+, else FETCH_SESSION_TOPIC_ID_ERROR). Errors are top-level, with no partitions.
//!
//! Sessions live in the cache of the shard that served the connection: a client that
//! reconnects and lands on another shard gets FETCH_SESSION_ID_NOT_FOUND and starts a new
//! session, which every client does on that error.
//!
//! Eviction (`max.incremental.fetch.session.cache.slots`): when the cache is full, a new
//! session takes the slot of the least recently used session idle for at least
//! [`STALE_AFTER`] (Kafka's minimum eviction time); otherwise that of the session with the
//! fewest partitions (least recently used among equals) if the new one has more
//! partitions, as Kafka prefers keeping the sessions that save the most; otherwise the
//! fetch is answered without a session (id 0).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::FetchableTopicResponse;
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use uuid::Uuid;

use crate::errors::ErrorCode;
use crate::log::ReadSlice;

/// Fetch v13 (KIP-516) names topics by id.
pub const FIRST_VERSION_WITH_TOPIC_IDS: i16 = 13;
/// A session idle this long may be evicted by any new session.
const STALE_AFTER: Duration = Duration::from_secs(120);
const FINAL_EPOCH: i32 = -1;
const INITIAL_EPOCH: i32 = 0;

/// A session partition: by topic name before v13 (the id is nil) and by id after (the
/// name is empty), as the requests name them.
type Key = (TopicName, Uuid, i32);

struct Cached {
    /// The client's fetch state, as last sent.
    fetch: FetchPartition,
    /// What the last response said, to leave unchanged partitions out of the next.
    high_watermark: i64,
    log_start_offset: i64,
    /// The last response carried records of this partition.
    returned_records: bool,
}

struct Session {
    /// The epoch the next incremental fetch must carry.
    epoch: i32,
    uses_topic_ids: bool,
    /// In fetch order: partitions that returned records move to the end, so that when
    /// max_bytes cuts a response the others come first next time.
    partitions: IndexMap<Key, Cached>,
    last_used: Instant,
}

/// The sessions of one shard.
pub struct FetchSessionCache {
    slots: usize,
    sessions: HashMap<i32, Session>,
}

/// What [`begin`] decided for a request, for [`finish`].
pub enum Plan {
    /// A full fetch answered without a session.
    Sessionless,
    /// A full fetch whose answer starts a session, if the cache makes room.
    Create,
    /// An incremental fetch of this session; the request's topics were replaced by all of
    /// the session's partitions.
    Incremental(i32),
}

impl FetchSessionCache {
    pub fn new(slots: usize) -> Self {
        FetchSessionCache {
            slots,
            sessions: HashMap::new(),
        }
    }

    /// Reads the request's session metadata. For an incremental fetch, applies its changes
    /// to the session and rewrites `request.topics` to every partition of the session, so
    /// the fetch proper (and its long poll) covers them all.
    pub fn begin(&mut self, request: &mut FetchRequest, version: i16) -> Result<Plan, ErrorCode> {
        let (id, epoch) = (request.session_id, request.session_epoch);
        if epoch == FINAL_EPOCH || epoch == INITIAL_EPOCH {
            if id != 0 {
                self.sessions.remove(&id);
            }
            return Ok(if epoch == INITIAL_EPOCH && self.slots > 0 {
                Plan::Create
            } else {
                Plan::Sessionless
            });
        }
        let session = self
            .sessions
            .get_mut(&id)
            .ok_or(ErrorCode::FetchSessionIdNotFound)?;
        if session.epoch != epoch {
            return Err(ErrorCode::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != (version >= FIRST_VERSION_WITH_TOPIC_IDS) {
            return Err(ErrorCode::FetchSessionTopicIdError);
        }
        for topic in std::mem::take(&mut request.topics) {
            for fetch in topic.partitions {
                let key = (topic.topic.clone(), topic.topic_id, fetch.partition);
                match session.partitions.get_mut(&key) {
                    Some(cached) => cached.fetch = fetch,
                    None => {
                        // Unknown watermarks, so the first answer always includes it.
                        session.partitions.insert(
                            key,
                            Cached {
                                fetch,
                                high_watermark: -1,
                                log_start_offset: -1,
                                returned_records: false,
                            },
                        );
                    }
                }
            }
        }
        for forgotten in &request.forgotten_topics_data {
            for &partition in &forgotten.partitions {
                let key = (forgotten.topic.clone(), forgotten.topic_id, partition);
                session.partitions.shift_remove(&key);
            }
        }
        if session.partitions.is_empty() {
            // Nothing left to fetch: Kafka closes such a session and answers sessionless.
            self.sessions.remove(&id);
            return Ok(Plan::Sessionless);
        }
        session.epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = Instant::now();
        request.topics = topics_of(&session.partitions);
        Ok(Plan::Incremental(id))
    }

    /// Completes a fetch's answer: starts the session of a full fetch that asked for one,
    /// or, for an incremental fetch, records the watermarks sent and leaves out the
    /// partitions with nothing new (with their record slots, kept parallel).
    pub fn finish(
        &mut self,
        plan: Plan,
        request: &FetchRequest,
        version: i16,
        response: &mut FetchResponse,
        records: &mut Vec<Vec<Option<ReadSlice>>>,
    ) {
        response.session_id = match plan {
            Plan::Sessionless => 0,
            Plan::Create => self.create(request, version, &response.responses),
            Plan::Incremental(id) => {
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.keep_news(response, records);
                }
                id
            }
        };
    }

    /// Starts a session from a full fetch and its answer; returns its id, or 0 when the
    /// cache has no room for it.
    fn create(
        &mut self,
        request: &FetchRequest,
        version: i16,
        responses: &[FetchableTopicResponse],
    ) -> i32 {
        let mut partitions = IndexMap::new();
        for (topic, answered) in request.topics.iter().zip(responses) {
            for (fetch, data) in topic.partitions.iter().zip(&answered.partitions) {
                let key = (topic.topic.clone(), topic.topic_id, fetch.partition);
                partitions.entry(key).or_insert_with(|| Cached {
                    fetch: fetch.clone(),
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                    returned_records: false,
                });
            }
        }
        if !self.make_room(partitions.len()) {
            return 0;
        }
        let id = loop {
            // Random, as Kafka's: a stale id from an earlier broker run or another shard
            // is unlikely to name a live session. Positive, as 0 means "no session".
            let id = (Uuid::new_v4().as_u128() as i32) & i32::MAX;
            if id != 0 && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions.insert(
            id,
            Session {
                epoch: 1,
                uses_topic_ids: version >= FIRST_VERSION_WITH_TOPIC_IDS,
                partitions,
                last_used: Instant::now(),
            },
        );
        id
    }

    /// Frees a slot for a new session of `size` partitions if the eviction rule allows.
    fn make_room(&mut self, size: usize) -> bool {
        if self.sessions.len() < self.slots {
            return true;
        }
        let now = Instant::now();
        let stale = self
            .sessions
            .iter()
            .filter(|(_, s)| now.duration_since(s.last_used) >= STALE_AFTER)
            .min_by_key(|(_, s)| s.last_used)
            .map(|(&id, _)| id);
        let smallest = || {
            self.sessions
                .iter()
                .min_by_key(|(_, s)| (s.partitions.len(), s.last_used))
                .filter(|(_, s)| s.partitions.len() < size)
                .map(|(&id, _)| id)
        };
        match stale.or_else(smallest) {
            Some(victim) => {
                self.sessions.remove(&victim);
                true
            }
            None => false,
        }
    }
}

impl Session {
    fn keep_news(
        &mut self,
        response: &mut FetchResponse,
        records: &mut Vec<Vec<Option<ReadSlice>>>,
    ) {
        let mut any_records = false;
        let topics = std::mem::take(&mut response.responses);
        let slices = std::mem::take(records);
        for (mut topic, topic_slices) in topics.into_iter().zip(slices) {
            let mut kept = Vec::new();
            let mut kept_slices = Vec::new();
            for (data, slice) in topic.partitions.into_iter().zip(topic_slices) {
                let key = (topic.topic.clone(), topic.topic_id, data.partition_index);
                let has_records = slice.as_ref().is_some_and(|s| s.len > 0);
                any_records |= has_records;
                let changed = match self.partitions.get_mut(&key) {
                    Some(cached) => {
                        let changed = cached.high_watermark != data.high_watermark
                            || cached.log_start_offset != data.log_start_offset;
                        cached.high_watermark = data.high_watermark;
                        cached.log_start_offset = data.log_start_offset;
                        cached.returned_records = has_records;
                        changed
                    }
                    None => true,
                };
                // A consumer sent to another replica (KIP-392) must hear of it.
                let redirected = data.preferred_read_replica.0 >= 0;
                if changed || has_records || redirected || data.error_code != 0 {
                    kept.push(data);
                    kept_slices.push(slice);
                }
            }
            if !kept.is_empty() {
                topic.partitions = kept;
                response.responses.push(topic);
                records.push(kept_slices);
            }
        }
        if any_records {
            // Stable: partitions keep their order within each group.
            self.partitions
                .sort_by(|_, a, _, b| a.returned_records.cmp(&b.returned_records));
        }
    }
}

/// The session's partitions as request topics, consecutive partitions of a topic grouped.
fn topics_of(partitions: &IndexMap<Key, Cached>) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((name, id, _), cached) in partitions {
        match topics.last_mut() {
            Some(last) if last.topic == *name && last.topic_id == *id => {
                last.partitions.push(cached.fetch.clone())
            }
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(name.clone())
                    .with_topic_id(*id)
                    .with_partitions(vec![cached.fetch.clone()]),
            ),
        }
    }
    topics
}
