//! KIP-848 consumer groups: the `ConsumerGroupHeartbeat` protocol with broker-side
//! assignment, as a sans-I/O state machine.
//!
//! Nothing here does I/O, reads a clock or spawns work: the caller passes the request,
//! the topic metadata ([`TopicLookup`]) and the time (`now_ms`), and calls
//! [`ConsumerGroup::tick`] when [`ConsumerGroup::next_deadline`] is reached. That keeps the
//! protocol testable step by step and lets the broker decide where groups live.
//!
//! How a group moves (KIP-848):
//! - the *group epoch* counts changes of membership, subscriptions and metadata of the
//!   subscribed topics; each change recomputes the *target assignment* with the
//!   server-side assignor, and the *assignment epoch* becomes the group epoch;
//! - each member *reconciles* towards its target, one heartbeat at a time: partitions it
//!   must give up are taken out of its assignment first and it stays at its epoch until
//!   a heartbeat shows it no longer owns them; partitions new to it are handed over only
//!   once no other member still owns them. A member holding exactly its target is at the
//!   assignment epoch. So a partition is never owned by two members at once, which is
//!   what lets members move independently instead of stopping the world like the classic
//!   protocol;
//! - a member's epoch fences it: a heartbeat with an epoch the coordinator did not give
//!   (or an outdated one) is rejected and the member must rejoin with epoch 0.
//!
//! Deviations from Kafka are listed on [`ConsumerGroup`].

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

use super::assignor::{Assignment, Assignor, MemberSubscription};

// Kafka error codes (org.apache.kafka.common.protocol.Errors) used by this protocol.
pub const NONE: i16 = 0;
pub const INVALID_GROUP_ID: i16 = 24;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_REQUEST: i16 = 42;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const UNRELEASED_INSTANCE_ID: i16 = 111;
pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
pub const STALE_MEMBER_EPOCH: i16 = 113;

/// Member epoch of a (re)joining member.
pub const JOIN_GROUP_MEMBER_EPOCH: i32 = 0;
/// Member epoch of a member leaving for good.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for a while (e.g. a restart): it keeps its
/// assignment for the session timeout, to be taken back by the same instance id.
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// The topics the broker knows, as the group needs them.
pub trait TopicLookup {
    /// Topic id and partition count of the topic called `name`, if it exists.
    fn topic(&self, name: &str) -> Option<(Uuid, i32)>;
    /// Name of the topic with id `id`, if it exists (for describing assignments).
    fn topic_name(&self, id: Uuid) -> Option<&str>;
}

/// Group settings (Kafka's `group.consumer.*` broker configs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// `group.consumer.session.timeout.ms`.
    pub session_timeout_ms: i32,
    /// `group.consumer.heartbeat.interval.ms`.
    pub heartbeat_interval_ms: i32,
    /// `group.consumer.max.size`.
    pub max_size: usize,
    /// The assignor used when no member asks for one.
    pub default_assignor: Assignor,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 5_000,
            max_size: i32::MAX as usize,
            default_assignor: Assignor::Uniform,
        }
    }
}

/// A `ConsumerGroupHeartbeat` request, minus the group id. `None` means "not sent"
/// (null on the wire): members only send what changed since their last heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatRequest {
    /// Empty when joining with v0, where the coordinator generates it.
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1 when unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    /// Not supported: a non-empty regex is rejected with `INVALID_REQUEST`.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// Partitions the member owns, per topic id.
    pub owned_partitions: Option<Vec<(Uuid, Vec<i32>)>>,
    /// The request header's client id, for describing the group.
    pub client_id: String,
    /// The client's address, for describing the group.
    pub client_host: String,
}

/// A `ConsumerGroupHeartbeat` response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatResponse {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's full assignment, only when the member needs it (see
    /// [`ConsumerGroup::heartbeat`]); `None` means "unchanged".
    pub assignment: Option<Vec<(Uuid, Vec<i32>)>>,
}

/// Where a member is in its reconciliation (Kafka's `MemberState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Holds its whole target (as far as the member knows).
    Stable,
    /// Must give up partitions and has not acknowledged it yet.
    UnrevokedPartitions,
    /// Waits for partitions that other members have not given up yet.
    UnreleasedPartitions,
}

/// The group state reported by `ConsumerGroupDescribe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl GroupState {
    /// The name Kafka uses on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Stable => "Stable",
        }
    }
}

/// What `ConsumerGroupDescribe` reports of a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor_name: String,
    pub members: Vec<MemberDescription>,
}

/// What `ConsumerGroupDescribe` reports of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Vec<DescribedTopicPartitions>,
    pub target_assignment: Vec<DescribedTopicPartitions>,
}

/// Partitions of one topic, with its name for describe responses (empty if unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescribedTopicPartitions {
    pub topic_id: Uuid,
    pub topic_name: String,
    pub partitions: Vec<i32>,
}

/// A rejected request: a Kafka error code and a message for the client.
#[derive(Debug)]
struct GroupError {
    code: i16,
    message: String,
}

fn error(code: i16, message: impl Into<String>) -> GroupError {
    GroupError {
        code,
        message: message.into(),
    }
}

/// The part of a member the reconciliation changes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reconciliation {
    state: MemberState,
    member_epoch: i32,
    /// Accepted in heartbeats too, since the response that bumped the epoch may be lost.
    previous_member_epoch: i32,
    /// What the member is told it owns.
    assigned: Assignment,
    /// Taken out of `assigned` but possibly still owned until the member acknowledges.
    pending_revocation: Assignment,
}

impl Reconciliation {
    fn joining() -> Self {
        Reconciliation {
            state: MemberState::Stable,
            member_epoch: JOIN_GROUP_MEMBER_EPOCH,
            previous_member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
        }
    }

    fn is_reconciled_to(&self, assignment_epoch: i32) -> bool {
        self.state == MemberState::Stable && self.member_epoch == assignment_epoch
    }

    /// A successor at `epoch`, remembering the current epoch as the previous one.
    fn next(
        &self,
        state: MemberState,
        epoch: i32,
        assigned: Assignment,
        pending: Assignment,
    ) -> Self {
        Reconciliation {
            state,
            member_epoch: epoch,
            previous_member_epoch: self.member_epoch,
            assigned,
            pending_revocation: pending,
        }
    }

    /// Every partition the coordinator counts as this member's: assigned or not yet
    /// acknowledged as revoked.
    fn owned(&self) -> impl Iterator<Item = (Uuid, i32)> + '_ {
        partitions(&self.assigned).chain(partitions(&self.pending_revocation))
    }
}

#[derive(Clone, Debug)]
struct Member {
    member_id: String,
    instance_id: Option<String>,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    subscribed_topic_names: BTreeSet<String>,
    server_assignor: Option<Assignor>,
    rec: Reconciliation,
    /// The assignment last put in a response to this member (`None` before the first),
    /// so that responses carry the assignment only when it changed.
    last_sent: Option<Assignment>,
    session_deadline_ms: i64,
    /// Set while the member has partitions to revoke: it is removed if still so then.
    rebalance_deadline_ms: Option<i64>,
}

impl Member {
    fn new(member_id: String) -> Self {
        Member {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            rebalance_timeout_ms: 0,
            subscribed_topic_names: BTreeSet::new(),
            server_assignor: None,
            rec: Reconciliation::joining(),
            last_sent: None,
            session_deadline_ms: 0,
            rebalance_deadline_ms: None,
        }
    }

    fn expired(&self, now_ms: i64) -> bool {
        self.session_deadline_ms <= now_ms
            || self.rebalance_deadline_ms.is_some_and(|d| d <= now_ms)
    }
}

/// How a heartbeat with epoch >= 0 maps to a member, decided before anything changes.
enum Admission {
    Existing,
    New,
    /// A static member rejoins under a new member id after a temporary leave.
    ReplaceStatic {
        old_member_id: String,
    },
}

/// One KIP-848 consumer group.
///
/// Deviations from Kafka's group coordinator:
/// - `SubscribedTopicRegex` is rejected with `INVALID_REQUEST` (Kafka resolves RE2J
///   regexes asynchronously);
/// - the target assignment is recomputed at once on every epoch bump (including in
///   [`ConsumerGroup::tick`] and [`ConsumerGroup::on_metadata_change`]) rather than
///   lazily on the next heartbeat, so the `Assigning` state is never observed;
/// - a static member replacing its own temporarily-left instance is not refused by
///   `group.consumer.max.size` (it takes the old member's place);
/// - assignors are not rack-aware, and partitions carry no per-partition assignment
///   epoch: offset commits must carry exactly the member's current epoch;
/// - a heartbeat with epoch 0 from a known member is accepted as a rejoin (KAFKA-19233);
/// - a full heartbeat gets the assignment only if its owned partitions differ from it
///   (Kafka sends it on every full heartbeat);
/// - a temporary leave (-2) holds the static member's assignment for one session timeout
///   counted from the leave;
/// - the group epoch saturates at `i32::MAX` instead of overflowing;
/// - error responses echo the request's member id (Kafka sends null) and carry
///   `heartbeat_interval_ms`;
/// - nothing is persisted: the state lives only in this value.
#[derive(Clone, Debug)]
pub struct ConsumerGroup {
    group_id: String,
    config: ConsumerGroupConfig,
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, Member>,
    /// Instance id -> member id of the static members.
    static_members: BTreeMap<String, String>,
    /// Member id -> target assignment, as computed at `assignment_epoch`.
    target: BTreeMap<String, Assignment>,
    /// Subscribed topics that exist: name -> (id, partition count). A change bumps the
    /// group epoch.
    subscribed_topics: BTreeMap<String, (Uuid, i32)>,
    /// Partition -> member counting it as owned ([`Reconciliation::owned`]); a partition
    /// is handed to a member only when it is absent here.
    owners: HashMap<(Uuid, i32), String>,
}

impl ConsumerGroup {
    pub fn new(group_id: String, config: ConsumerGroupConfig) -> Self {
        ConsumerGroup {
            group_id,
            config,
            group_epoch: 0,
            assignment_epoch: 0,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            target: BTreeMap::new(),
            subscribed_topics: BTreeMap::new(),
            owners: HashMap::new(),
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn group_epoch(&self) -> i32 {
        self.group_epoch
    }

    pub fn assignment_epoch(&self) -> i32 {
        self.assignment_epoch
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether some member subscribes to `topic` (OffsetDelete refuses to delete its
    /// offsets with `GROUP_SUBSCRIBED_TO_TOPIC`).
    pub fn is_subscribed_to_topic(&self, topic: &str) -> bool {
        self.members
            .values()
            .any(|m| m.subscribed_topic_names.contains(topic))
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            GroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.rec.is_reconciled_to(self.assignment_epoch))
        {
            GroupState::Reconciling
        } else {
            GroupState::Stable
        }
    }

    /// Handles a `ConsumerGroupHeartbeat`. Members whose deadline passed are expired
    /// first, so the outcome does not depend on how punctually [`ConsumerGroup::tick`]
    /// runs. Errors come back as a response with `error_code` set; the request changes
    /// nothing in the group then.
    ///
    /// The response carries the member's assignment when the member (re)joins, when the
    /// assignment changed since the last one sent to it, or when the member reports owned
    /// partitions that differ from it (e.g. a response was lost).
    pub fn heartbeat(
        &mut self,
        request: HeartbeatRequest,
        topics: &impl TopicLookup,
        now_ms: i64,
    ) -> HeartbeatResponse {
        self.tick(now_ms);
        match self.handle_heartbeat(&request, topics, now_ms) {
            Ok(response) => response,
            Err(e) => HeartbeatResponse {
                error_code: e.code,
                error_message: Some(e.message),
                member_id: request.member_id,
                member_epoch: 0,
                heartbeat_interval_ms: self.config.heartbeat_interval_ms,
                assignment: None,
            },
        }
    }

    /// Removes the members whose session lapsed or that did not revoke partitions within
    /// their rebalance timeout; their partitions become assignable.
    pub fn tick(&mut self, now_ms: i64) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.expired(now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        if !expired.is_empty() {
            self.remove_members(&expired);
        }
    }

    /// When [`ConsumerGroup::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<i64> {
        self.members
            .values()
            .flat_map(|m| [Some(m.session_deadline_ms), m.rebalance_deadline_ms])
            .flatten()
            .min()
    }

    /// Topics were created or deleted or gained partitions: if any subscribed topic
    /// changed, the group epoch is bumped and a new target assignment computed.
    /// (Heartbeats notice such changes too; this reaches members that are stable.)
    pub fn on_metadata_change(&mut self, topics: &impl TopicLookup) {
        if self.refresh_subscribed_topics(topics) {
            self.bump_group_epoch();
        }
    }

    /// Checks the member id and epoch of an `OffsetCommit` (v9+ sends the member epoch as
    /// the generation). Returns `NONE`, `UNKNOWN_MEMBER_ID` or `STALE_MEMBER_EPOCH`.
    /// A negative epoch (admin clients, manual assignment) may commit to an empty group.
    pub fn validate_offset_commit(&self, member_id: &str, member_epoch: i32) -> i16 {
        if member_epoch < 0 && self.members.is_empty() {
            return NONE;
        }
        match self.members.get(member_id) {
            None => UNKNOWN_MEMBER_ID,
            Some(m) if m.rec.member_epoch != member_epoch => STALE_MEMBER_EPOCH,
            Some(_) => NONE,
        }
    }

    /// The group as `ConsumerGroupDescribe` reports it.
    pub fn describe(&self, topics: &impl TopicLookup) -> GroupDescription {
        let describe_assignment = |a: &Assignment| {
            a.iter()
                .map(|(&topic_id, ps)| DescribedTopicPartitions {
                    topic_id,
                    topic_name: topics.topic_name(topic_id).unwrap_or_default().to_string(),
                    partitions: ps.iter().copied().collect(),
                })
                .collect()
        };
        let members = self
            .members
            .values()
            .map(|m| MemberDescription {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone(),
                rack_id: m.rack_id.clone(),
                member_epoch: m.rec.member_epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                subscribed_topic_names: m.subscribed_topic_names.iter().cloned().collect(),
                subscribed_topic_regex: None,
                assignment: describe_assignment(&m.rec.assigned),
                target_assignment: describe_assignment(self.target_of(&m.member_id)),
            })
            .collect();
        GroupDescription {
            group_id: self.group_id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor_name: self.preferred_assignor().name().to_string(),
            members,
        }
    }

    fn handle_heartbeat(
        &mut self,
        request: &HeartbeatRequest,
        topics: &impl TopicLookup,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        validate_request(request)?;
        if request.member_epoch < 0 {
            return self.leave(request, now_ms);
        }
        let owned = request
            .owned_partitions
            .as_deref()
            .map(assignment_from_wire);
        let member_id = if request.member_id.is_empty() {
            Uuid::new_v4().to_string()
        } else {
            request.member_id.clone()
        };

        // Every check happens before the first change, so a rejected heartbeat changes
        // nothing.
        let admission = self.admit(request, &member_id, owned.as_ref())?;
        let is_new = matches!(admission, Admission::New);
        self.apply_admission(admission, &member_id);

        let subscription_changed = self.update_member(&member_id, request, now_ms);
        let topics_changed = self.refresh_subscribed_topics(topics);
        if is_new || subscription_changed || topics_changed {
            self.bump_group_epoch();
        }
        self.reconcile_member(&member_id, owned.as_ref(), now_ms);
        Ok(self.respond(&member_id, request.member_epoch, owned.as_ref()))
    }

    /// Decides which member a heartbeat is for, or why it is refused.
    fn admit(
        &self,
        request: &HeartbeatRequest,
        member_id: &str,
        owned: Option<&Assignment>,
    ) -> Result<Admission, GroupError> {
        let epoch = request.member_epoch;
        let Some(instance_id) = &request.instance_id else {
            return self.admit_dynamic(member_id, epoch, owned);
        };
        let existing = self
            .static_members
            .get(instance_id)
            .and_then(|id| self.members.get(id));
        match existing {
            None if epoch == JOIN_GROUP_MEMBER_EPOCH => self.admit_dynamic(member_id, epoch, owned),
            None => Err(error(
                UNKNOWN_MEMBER_ID,
                format!("instance id {instance_id} is unknown"),
            )),
            Some(m) if m.member_id == member_id => {
                check_member_epoch(m, epoch, owned)?;
                Ok(Admission::Existing)
            }
            Some(m) if epoch != JOIN_GROUP_MEMBER_EPOCH => Err(error(
                FENCED_INSTANCE_ID,
                format!(
                    "instance id {instance_id} belongs to member {}",
                    m.member_id
                ),
            )),
            Some(m) if m.rec.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH => Err(error(
                UNRELEASED_INSTANCE_ID,
                format!(
                    "instance id {instance_id} is still used by member {}, which must leave first",
                    m.member_id
                ),
            )),
            Some(_) if self.members.contains_key(member_id) => Err(error(
                INVALID_REQUEST,
                format!("member id {member_id} is already used by another member"),
            )),
            Some(m) => Ok(Admission::ReplaceStatic {
                old_member_id: m.member_id.clone(),
            }),
        }
    }

    fn admit_dynamic(
        &self,
        member_id: &str,
        epoch: i32,
        owned: Option<&Assignment>,
    ) -> Result<Admission, GroupError> {
        match self.members.get(member_id) {
            Some(m) => {
                check_member_epoch(m, epoch, owned)?;
                Ok(Admission::Existing)
            }
            None if epoch != JOIN_GROUP_MEMBER_EPOCH => Err(error(
                UNKNOWN_MEMBER_ID,
                format!("member {member_id} is not in the group"),
            )),
            None if self.members.len() >= self.config.max_size => Err(error(
                GROUP_MAX_SIZE_REACHED,
                format!(
                    "the consumer group has reached its maximum size of {} members",
                    self.config.max_size
                ),
            )),
            None => Ok(Admission::New),
        }
    }

    fn apply_admission(&mut self, admission: Admission, member_id: &str) {
        match admission {
            Admission::Existing => {}
            Admission::New => {
                self.members
                    .insert(member_id.to_string(), Member::new(member_id.to_string()));
            }
            Admission::ReplaceStatic { old_member_id } => {
                self.replace_static(&old_member_id, member_id)
            }
        }
    }

    /// A static member that left temporarily comes back under `new_id`: the new member
    /// takes over the old one's subscriptions, assignment and target, so the group does
    /// not rebalance. It starts at epoch 0 and is reconciled to the assignment epoch.
    fn replace_static(&mut self, old_id: &str, new_id: &str) {
        let Some(old) = self.remove_member(old_id) else {
            return;
        };
        let mut member = Member::new(new_id.to_string());
        member.subscribed_topic_names = old.subscribed_topic_names;
        member.server_assignor = old.server_assignor;
        member.rack_id = old.rack_id;
        member.rebalance_timeout_ms = old.rebalance_timeout_ms;
        let rec = Reconciliation {
            assigned: old.rec.assigned,
            ..Reconciliation::joining()
        };
        claim(&mut self.owners, new_id, &rec);
        member.rec = rec;
        self.members.insert(new_id.to_string(), member);
        if let Some(target) = old.target {
            self.target.insert(new_id.to_string(), target);
        }
    }

    /// Takes in what the heartbeat says of the member and renews its session. Returns
    /// whether what drives the assignment (subscriptions, assignor) changed.
    fn update_member(&mut self, member_id: &str, request: &HeartbeatRequest, now_ms: i64) -> bool {
        let session_timeout = i64::from(self.config.session_timeout_ms);
        let Some(m) = self.members.get_mut(member_id) else {
            return false;
        };
        m.session_deadline_ms = now_ms.saturating_add(session_timeout);
        if let Some(instance_id) = &request.instance_id {
            if let Some(old) = m.instance_id.replace(instance_id.clone()) {
                if self
                    .static_members
                    .get(&old)
                    .is_some_and(|id| id == member_id)
                {
                    self.static_members.remove(&old);
                }
            }
            self.static_members
                .insert(instance_id.clone(), member_id.to_string());
        }
        if let Some(rack_id) = &request.rack_id {
            m.rack_id = Some(rack_id.clone());
        }
        if request.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = request.rebalance_timeout_ms;
        }
        m.client_id.clone_from(&request.client_id);
        m.client_host.clone_from(&request.client_host);

        let mut changed = false;
        if let Some(names) = &request.subscribed_topic_names {
            let names: BTreeSet<String> = names.iter().cloned().collect();
            changed |= m.subscribed_topic_names != names;
            m.subscribed_topic_names = names;
        }
        // Validation made sure the name is known.
        if let Some(assignor) = request
            .server_assignor
            .as_deref()
            .and_then(Assignor::from_name)
        {
            changed |= m.server_assignor != Some(assignor);
            m.server_assignor = Some(assignor);
        }
        changed
    }

    /// Re-reads the subscribed topics from `topics`. Returns whether they changed.
    fn refresh_subscribed_topics(&mut self, topics: &impl TopicLookup) -> bool {
        let names: BTreeSet<&String> = self
            .members
            .values()
            .flat_map(|m| &m.subscribed_topic_names)
            .collect();
        let fresh: BTreeMap<String, (Uuid, i32)> = names
            .into_iter()
            .filter_map(|name| topics.topic(name).map(|t| (name.clone(), t)))
            .collect();
        if fresh == self.subscribed_topics {
            return false;
        }
        self.subscribed_topics = fresh;
        true
    }

    fn bump_group_epoch(&mut self) {
        self.group_epoch = self.group_epoch.saturating_add(1);
        self.compute_target_assignment();
    }

    /// Recomputes every member's target with the preferred assignor, starting from the
    /// current targets so that the uniform assignor can keep partitions in place.
    fn compute_target_assignment(&mut self) {
        let topic_counts: BTreeMap<Uuid, i32> = self.subscribed_topics.values().copied().collect();
        let subscriptions: Vec<MemberSubscription<'_>> = self
            .members
            .values()
            .map(|m| MemberSubscription {
                member_id: &m.member_id,
                instance_id: m.instance_id.as_deref(),
                topics: m
                    .subscribed_topic_names
                    .iter()
                    .filter_map(|name| self.subscribed_topics.get(name).map(|t| t.0))
                    .collect(),
                previous: self.target.get(&m.member_id),
            })
            .collect();
        let target = self
            .preferred_assignor()
            .assign(&subscriptions, &topic_counts);
        self.target = target;
        self.assignment_epoch = self.group_epoch;
    }

    /// The assignor most members ask for, else the configured default (as Kafka).
    fn preferred_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for assignor in self.members.values().filter_map(|m| m.server_assignor) {
            *votes.entry(assignor).or_default() += 1;
        }
        votes
            .into_iter()
            .max_by_key(|&(assignor, n)| (n, Reverse(assignor)))
            .map_or(self.config.default_assignor, |(assignor, _)| assignor)
    }

    fn target_of(&self, member_id: &str) -> &Assignment {
        static EMPTY: Assignment = Assignment::new();
        self.target.get(member_id).unwrap_or(&EMPTY)
    }

    /// Moves the member one step towards its target and arms or disarms its rebalance
    /// timeout: a member told to revoke partitions must do so within it.
    fn reconcile_member(&mut self, member_id: &str, owned: Option<&Assignment>, now_ms: i64) {
        let Some(m) = self.members.get(member_id) else {
            return;
        };
        if m.rec.is_reconciled_to(self.assignment_epoch) {
            return;
        }
        let owners = &self.owners;
        let is_free = |topic: Uuid, partition: i32| {
            owners
                .get(&(topic, partition))
                .is_none_or(|owner| owner == member_id)
        };
        let rec = reconcile(
            &m.rec,
            self.assignment_epoch,
            self.target_of(member_id),
            owned,
            is_free,
        );
        if rec == m.rec {
            return;
        }
        let deadline = (rec.state == MemberState::UnrevokedPartitions)
            .then(|| now_ms.saturating_add(i64::from(m.rebalance_timeout_ms.max(0))));
        self.set_reconciliation(member_id, rec);
        if let Some(m) = self.members.get_mut(member_id) {
            m.rebalance_deadline_ms = deadline;
        }
    }

    fn set_reconciliation(&mut self, member_id: &str, rec: Reconciliation) {
        let Some(m) = self.members.get_mut(member_id) else {
            return;
        };
        release(&mut self.owners, member_id, &m.rec);
        claim(&mut self.owners, member_id, &rec);
        m.rec = rec;
    }

    fn respond(
        &mut self,
        member_id: &str,
        request_epoch: i32,
        owned: Option<&Assignment>,
    ) -> HeartbeatResponse {
        let interval = self.config.heartbeat_interval_ms;
        let Some(m) = self.members.get_mut(member_id) else {
            return HeartbeatResponse {
                error_code: UNKNOWN_MEMBER_ID,
                member_id: member_id.to_string(),
                heartbeat_interval_ms: interval,
                ..HeartbeatResponse::default()
            };
        };
        let send = request_epoch == JOIN_GROUP_MEMBER_EPOCH
            || m.last_sent.as_ref() != Some(&m.rec.assigned)
            || owned.is_some_and(|o| *o != m.rec.assigned);
        if send {
            m.last_sent = Some(m.rec.assigned.clone());
        }
        HeartbeatResponse {
            error_code: NONE,
            error_message: None,
            member_id: m.member_id.clone(),
            member_epoch: m.rec.member_epoch,
            heartbeat_interval_ms: interval,
            assignment: send.then(|| assignment_to_wire(&m.rec.assigned)),
        }
    }

    /// A heartbeat with epoch -1 (leave) or -2 (static member, temporary leave).
    fn leave(
        &mut self,
        request: &HeartbeatRequest,
        now_ms: i64,
    ) -> Result<HeartbeatResponse, GroupError> {
        let member_id = self.leaving_member(request)?;
        if request.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
            self.leave_temporarily(&member_id, now_ms);
        } else {
            self.remove_members(std::slice::from_ref(&member_id));
        }
        Ok(HeartbeatResponse {
            member_id,
            member_epoch: request.member_epoch,
            heartbeat_interval_ms: self.config.heartbeat_interval_ms,
            ..HeartbeatResponse::default()
        })
    }

    fn leaving_member(&self, request: &HeartbeatRequest) -> Result<String, GroupError> {
        let Some(instance_id) = &request.instance_id else {
            return match self.members.contains_key(&request.member_id) {
                true => Ok(request.member_id.clone()),
                false => Err(error(
                    UNKNOWN_MEMBER_ID,
                    format!("member {} is not in the group", request.member_id),
                )),
            };
        };
        match self.static_members.get(instance_id) {
            None => Err(error(
                UNKNOWN_MEMBER_ID,
                format!("instance id {instance_id} is unknown"),
            )),
            Some(id) if *id != request.member_id => Err(error(
                FENCED_INSTANCE_ID,
                format!("instance id {instance_id} belongs to member {id}"),
            )),
            Some(id) => Ok(id.clone()),
        }
    }

    /// The member keeps its assignment (so the group does not rebalance) for one more
    /// session timeout, within which the same instance may come back and take it over.
    /// Partitions pending revocation are released: a leaving client gave them up.
    fn leave_temporarily(&mut self, member_id: &str, now_ms: i64) {
        let session_timeout = i64::from(self.config.session_timeout_ms);
        let Some(m) = self.members.get(member_id) else {
            return;
        };
        let rec = m.rec.next(
            MemberState::Stable,
            LEAVE_GROUP_STATIC_MEMBER_EPOCH,
            m.rec.assigned.clone(),
            Assignment::new(),
        );
        self.set_reconciliation(member_id, rec);
        if let Some(m) = self.members.get_mut(member_id) {
            m.session_deadline_ms = now_ms.saturating_add(session_timeout);
            m.rebalance_deadline_ms = None;
        }
    }

    /// Removes members for good (leave, expiry, fencing): their partitions become
    /// assignable and the group rebalances.
    fn remove_members(&mut self, member_ids: &[String]) {
        for member_id in member_ids {
            self.remove_member(member_id);
        }
        // The departed may have been the only subscribers of some topics.
        self.subscribed_topics.retain(|name, _| {
            self.members
                .values()
                .any(|m| m.subscribed_topic_names.contains(name))
        });
        self.bump_group_epoch();
    }

    /// Removes a member and what is indexed about it, without rebalancing.
    fn remove_member(&mut self, member_id: &str) -> Option<RemovedMember> {
        let member = self.members.remove(member_id)?;
        release(&mut self.owners, member_id, &member.rec);
        if let Some(instance_id) = &member.instance_id {
            if self
                .static_members
                .get(instance_id)
                .is_some_and(|id| id == member_id)
            {
                self.static_members.remove(instance_id);
            }
        }
        let target = self.target.remove(member_id);
        Some(RemovedMember {
            subscribed_topic_names: member.subscribed_topic_names,
            server_assignor: member.server_assignor,
            rack_id: member.rack_id,
            rebalance_timeout_ms: member.rebalance_timeout_ms,
            rec: member.rec,
            target,
        })
    }
}

/// What [`ConsumerGroup::remove_member`] hands back, for static member replacement.
struct RemovedMember {
    subscribed_topic_names: BTreeSet<String>,
    server_assignor: Option<Assignor>,
    rack_id: Option<String>,
    rebalance_timeout_ms: i32,
    rec: Reconciliation,
    target: Option<Assignment>,
}

/// Request checks that need no group state (Kafka's
/// `throwIfConsumerGroupHeartbeatRequestIsInvalid`).
fn validate_request(request: &HeartbeatRequest) -> Result<(), GroupError> {
    let epoch = request.member_epoch;
    let invalid = |message: &str| Err(error(INVALID_REQUEST, message));
    if epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid("MemberEpoch is invalid.");
    }
    if epoch != JOIN_GROUP_MEMBER_EPOCH && request.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if request.instance_id.as_deref() == Some("") {
        return invalid("InstanceId can't be empty.");
    }
    if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && request.instance_id.is_none() {
        return invalid("InstanceId can't be null.");
    }
    if request.rack_id.as_deref() == Some("") {
        return invalid("RackId can't be empty.");
    }
    if request
        .subscribed_topic_regex
        .as_deref()
        .is_some_and(|r| !r.is_empty())
    {
        return invalid("SubscribedTopicRegex is not supported by this broker.");
    }
    if let Some(name) = request.server_assignor.as_deref() {
        if Assignor::from_name(name).is_none() {
            return Err(error(
                UNSUPPORTED_ASSIGNOR,
                format!("ServerAssignor {name} is not supported."),
            ));
        }
    }
    if epoch == JOIN_GROUP_MEMBER_EPOCH {
        if request.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if request.subscribed_topic_names.is_none() {
            return invalid("SubscribedTopicNames must be set in first request.");
        }
        let owns_any = request
            .owned_partitions
            .iter()
            .flatten()
            .any(|(_, ps)| !ps.is_empty());
        if owns_any {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
    }
    Ok(())
}

/// Accepts the member's current epoch, 0 (a rejoin: the member abandoned everything) and
/// the previous epoch when the member owns no more than its assignment (the response
/// that moved it to the current epoch was lost). Anything else fences it.
fn check_member_epoch(
    member: &Member,
    epoch: i32,
    owned: Option<&Assignment>,
) -> Result<(), GroupError> {
    let current = member.rec.member_epoch;
    let accepted = epoch == JOIN_GROUP_MEMBER_EPOCH
        || epoch == current
        || (epoch < current
            && epoch == member.rec.previous_member_epoch
            && owned.is_some_and(|o| is_subset(o, &member.rec.assigned)));
    if accepted {
        return Ok(());
    }
    Err(error(
        FENCED_MEMBER_EPOCH,
        format!(
            "member epoch {epoch} is fenced (current epoch {current}); the member must abandon \
             all its partitions and rejoin"
        ),
    ))
}

/// One reconciliation step (Kafka's `CurrentAssignmentBuilder`): from the member's state,
/// its target at `target_epoch`, the partitions it reports owning (`None` if not
/// reported) and which partitions no other member owns, the member's next state.
fn reconcile(
    current: &Reconciliation,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    is_free: impl Fn(Uuid, i32) -> bool,
) -> Reconciliation {
    match current.state {
        MemberState::Stable if current.member_epoch == target_epoch => current.clone(),
        // Nothing moves until the member stops reporting the revoked partitions.
        MemberState::UnrevokedPartitions if still_owns_any(owned, &current.pending_revocation) => {
            current.clone()
        }
        _ => next_assignment(current, target_epoch, target, owned, is_free),
    }
}

fn next_assignment(
    current: &Reconciliation,
    target_epoch: i32,
    target: &Assignment,
    owned: Option<&Assignment>,
    is_free: impl Fn(Uuid, i32) -> bool,
) -> Reconciliation {
    // Kept = assigned ∩ target; to revoke = assigned - target; to assign = target - assigned,
    // of which the partitions another member still owns must wait (unreleased).
    let mut kept = Assignment::new();
    let mut revoke = Assignment::new();
    let mut gained = Assignment::new();
    let mut unreleased = false;
    for (topic, p) in partitions(&current.assigned) {
        let into = if contains(target, topic, p) {
            &mut kept
        } else {
            &mut revoke
        };
        insert(into, topic, p);
    }
    for (topic, p) in partitions(target) {
        if contains(&current.assigned, topic, p) {
            continue;
        }
        if is_free(topic, p) {
            insert(&mut gained, topic, p);
        } else {
            unreleased = true;
        }
    }

    if !revoke.is_empty() && still_owns_any(owned, &revoke) {
        // Revocation first: the member stays at its epoch and gets nothing new until it
        // acknowledges, so no partition is ever owned twice.
        return current.next(
            MemberState::UnrevokedPartitions,
            current.member_epoch,
            kept,
            revoke,
        );
    }
    for (topic, p) in partitions(&gained) {
        insert(&mut kept, topic, p);
    }
    let state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    current.next(state, target_epoch, kept, Assignment::new())
}

/// Whether the member may still own some of `revoked`: it does if it did not say.
fn still_owns_any(owned: Option<&Assignment>, revoked: &Assignment) -> bool {
    owned.is_none_or(|o| partitions(o).any(|(t, p)| contains(revoked, t, p)))
}

fn claim(owners: &mut HashMap<(Uuid, i32), String>, member_id: &str, rec: &Reconciliation) {
    for tp in rec.owned() {
        owners.insert(tp, member_id.to_string());
    }
}

fn release(owners: &mut HashMap<(Uuid, i32), String>, member_id: &str, rec: &Reconciliation) {
    for tp in rec.owned() {
        if owners.get(&tp).is_some_and(|owner| owner == member_id) {
            owners.remove(&tp);
        }
    }
}

fn partitions(a: &Assignment) -> impl Iterator<Item = (Uuid, i32)> + '_ {
    a.iter()
        .flat_map(|(&topic, ps)| ps.iter().map(move |&p| (topic, p)))
}

fn contains(a: &Assignment, topic: Uuid, partition: i32) -> bool {
    a.get(&topic).is_some_and(|ps| ps.contains(&partition))
}

fn insert(a: &mut Assignment, topic: Uuid, partition: i32) {
    a.entry(topic).or_default().insert(partition);
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    partitions(a).all(|(t, p)| contains(b, t, p))
}

/// The wire form to an [`Assignment`], merging repeated topics and dropping empty ones.
fn assignment_from_wire(topics: &[(Uuid, Vec<i32>)]) -> Assignment {
    let mut a = Assignment::new();
    for (topic, ps) in topics {
        for &p in ps {
            insert(&mut a, *topic, p);
        }
    }
    a
}

fn assignment_to_wire(a: &Assignment) -> Vec<(Uuid, Vec<i32>)> {
    a.iter()
        .map(|(&topic, ps)| (topic, ps.iter().copied().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    impl<S: BuildHasher> TopicLookup for HashMap<String, (Uuid, i32), S> {
        fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
            self.get(name).copied()
        }
        fn topic_name(&self, id: Uuid) -> Option<&str> {
            self.iter()
                .find(|(_, t)| t.0 == id)
                .map(|(n, _)| n.as_str())
        }
    }

    impl TopicLookup for BTreeMap<String, (Uuid, i32)> {
        fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
            self.get(name).copied()
        }
        fn topic_name(&self, id: Uuid) -> Option<&str> {
            self.iter()
                .find(|(_, t)| t.0 == id)
                .map(|(n, _)| n.as_str())
        }
    }

    type Topics = BTreeMap<String, (Uuid, i32)>;

    const SESSION: i64 = 45_000;

    fn topics(list: &[(&str, u128, i32)]) -> Topics {
        list.iter()
            .map(|&(name, id, count)| (name.to_string(), (Uuid::from_u128(id), count)))
            .collect()
    }

    fn tid(topics: &Topics, name: &str) -> Uuid {
        topics[name].0
    }

    fn group() -> ConsumerGroup {
        ConsumerGroup::new("g".to_string(), ConsumerGroupConfig::default())
    }

    fn asg(list: &[(Uuid, &[i32])]) -> Assignment {
        list.iter()
            .filter(|(_, ps)| !ps.is_empty())
            .map(|&(t, ps)| (t, ps.iter().copied().collect()))
            .collect()
    }

    fn join_request(member_id: &str, subscriptions: &[&str]) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: member_id.to_string(),
            member_epoch: 0,
            rebalance_timeout_ms: 60_000,
            subscribed_topic_names: Some(subscriptions.iter().map(|s| s.to_string()).collect()),
            owned_partitions: Some(Vec::new()),
            client_id: "client".to_string(),
            client_host: "/127.0.0.1".to_string(),
            ..HeartbeatRequest::default()
        }
    }

    /// A lightweight heartbeat: only the member id, epoch and (if given) owned partitions.
    fn heartbeat_request(
        member_id: &str,
        epoch: i32,
        owned: Option<&Assignment>,
    ) -> HeartbeatRequest {
        HeartbeatRequest {
            member_id: member_id.to_string(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned_partitions: owned.map(assignment_to_wire),
            ..HeartbeatRequest::default()
        }
    }

    fn received(response: &HeartbeatResponse) -> Option<Assignment> {
        response.assignment.as_deref().map(assignment_from_wire)
    }

    /// A consumer as the coordinator sees it through its heartbeats: it applies each
    /// assignment it receives at once and reports what it owns.
    #[derive(Clone, Debug)]
    struct Client {
        member_id: String,
        epoch: i32,
        owned: Assignment,
        subscriptions: Vec<String>,
        instance_id: Option<String>,
        assignor: Option<String>,
    }

    impl Client {
        fn new(member_id: &str, subscriptions: &[&str]) -> Self {
            Client {
                member_id: member_id.to_string(),
                epoch: 0,
                owned: Assignment::new(),
                subscriptions: subscriptions.iter().map(|s| s.to_string()).collect(),
                instance_id: None,
                assignor: None,
            }
        }

        fn request(&self) -> HeartbeatRequest {
            if self.epoch == 0 {
                let subs: Vec<&str> = self.subscriptions.iter().map(String::as_str).collect();
                HeartbeatRequest {
                    instance_id: self.instance_id.clone(),
                    server_assignor: self.assignor.clone(),
                    ..join_request(&self.member_id, &subs)
                }
            } else {
                heartbeat_request(&self.member_id, self.epoch, Some(&self.owned))
            }
        }

        fn heartbeat(
            &mut self,
            g: &mut ConsumerGroup,
            topics: &Topics,
            now: i64,
        ) -> HeartbeatResponse {
            let response = g.heartbeat(self.request(), topics, now);
            self.apply(&response);
            response
        }

        fn apply(&mut self, response: &HeartbeatResponse) {
            match response.error_code {
                NONE => {
                    self.member_id.clone_from(&response.member_id);
                    self.epoch = response.member_epoch;
                    if let Some(a) = received(response) {
                        self.owned = a;
                    }
                }
                FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID => {
                    self.epoch = 0;
                    self.owned.clear();
                }
                _ => {}
            }
        }
    }

    /// Heartbeats every client until the group is stable (or gives up).
    fn converge(g: &mut ConsumerGroup, clients: &mut [Client], topics: &Topics, now: i64) {
        for _ in 0..10 {
            for c in clients.iter_mut() {
                c.heartbeat(g, topics, now);
            }
            if g.state() == GroupState::Stable {
                return;
            }
        }
        panic!("group did not converge: {:#?}", g.describe(topics));
    }

    /// No partition is counted as owned by two members, and the ownership index agrees
    /// with the members.
    fn assert_ownership_consistent(g: &ConsumerGroup) {
        let mut seen: HashMap<(Uuid, i32), &str> = HashMap::new();
        for m in g.members.values() {
            for tp in m.rec.owned() {
                if let Some(other) = seen.insert(tp, &m.member_id) {
                    panic!("{tp:?} owned by {other} and {}", m.member_id);
                }
            }
        }
        let index: HashMap<(Uuid, i32), &str> =
            g.owners.iter().map(|(tp, id)| (*tp, id.as_str())).collect();
        assert_eq!(index, seen, "ownership index out of date");
        let mut targeted = BTreeSet::new();
        for a in g.target.values() {
            for tp in partitions(a) {
                assert!(targeted.insert(tp), "{tp:?} targeted twice");
            }
        }
    }

    #[test]
    fn error_codes_match_kafka() {
        use kafka_protocol::error::ResponseError as E;
        let codes = [
            (INVALID_GROUP_ID, E::InvalidGroupId),
            (UNKNOWN_MEMBER_ID, E::UnknownMemberId),
            (INVALID_REQUEST, E::InvalidRequest),
            (GROUP_ID_NOT_FOUND, E::GroupIdNotFound),
            (GROUP_MAX_SIZE_REACHED, E::GroupMaxSizeReached),
            (FENCED_INSTANCE_ID, E::FencedInstanceId),
            (FENCED_MEMBER_EPOCH, E::FencedMemberEpoch),
            (UNRELEASED_INSTANCE_ID, E::UnreleasedInstanceId),
            (UNSUPPORTED_ASSIGNOR, E::UnsupportedAssignor),
            (STALE_MEMBER_EPOCH, E::StaleMemberEpoch),
        ];
        for (code, kafka) in codes {
            assert_eq!(code, kafka.code(), "{kafka:?}");
        }
    }

    #[test]
    fn single_member_gets_every_subscribed_partition() {
        let t = topics(&[("a", 1, 3), ("b", 2, 2), ("other", 3, 5)]);
        let mut g = group();
        let r = g.heartbeat(join_request("", &["a", "b", "missing"]), &t, 0);
        assert_eq!(r.error_code, NONE);
        assert!(
            Uuid::parse_str(&r.member_id).is_ok(),
            "a v0 member gets a generated id"
        );
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.heartbeat_interval_ms, 5_000);
        let expected = asg(&[(tid(&t, "a"), &[0, 1, 2]), (tid(&t, "b"), &[0, 1])]);
        assert_eq!(received(&r), Some(expected.clone()));
        assert_eq!((g.group_epoch(), g.assignment_epoch()), (1, 1));
        assert_eq!(g.state(), GroupState::Stable);

        // Nothing changed: the next heartbeat carries no assignment and no new epoch.
        let r = g.heartbeat(heartbeat_request(&r.member_id, 1, Some(&expected)), &t, 10);
        assert_eq!(
            (r.error_code, r.member_epoch, r.assignment),
            (NONE, 1, None)
        );
        assert_eq!(g.group_epoch(), 1);
    }

    #[test]
    fn client_generated_member_id_is_kept() {
        let t = topics(&[("a", 1, 1)]);
        let mut g = group();
        let id = Uuid::new_v4().to_string();
        let r = g.heartbeat(join_request(&id, &["a"]), &t, 0);
        assert_eq!(r.member_id, id);
        // A retried join (lost response) is the same member, not a second one.
        let r = g.heartbeat(join_request(&id, &["a"]), &t, 1);
        assert_eq!((r.error_code, r.member_epoch), (NONE, 1));
        assert_eq!(g.members.len(), 1);
    }

    #[test]
    fn partitions_move_only_after_the_previous_owner_revokes_them() {
        let t = topics(&[("a", 1, 4)]);
        let a = tid(&t, "a");
        let mut g = group();
        let mut m1 = Client::new("m1", &["a"]);
        m1.heartbeat(&mut g, &t, 0);
        assert_eq!(
            (m1.epoch, m1.owned.clone()),
            (1, asg(&[(a, &[0, 1, 2, 3])]))
        );

        // m2 joins: epoch 2, target m1 = {0,1} and m2 = {2,3}; but m1 still owns 2 and 3.
        let mut m2 = Client::new("m2", &["a"]);
        let r = m2.heartbeat(&mut g, &t, 1);
        assert_eq!(g.group_epoch(), 2);
        assert_eq!((r.member_epoch, received(&r)), (2, Some(Assignment::new())));
        assert_eq!(g.members["m2"].rec.state, MemberState::UnreleasedPartitions);

        // m1 is asked to revoke 2 and 3 and stays at epoch 1 until it does.
        let r = m1.heartbeat(&mut g, &t, 2);
        assert_eq!(
            (r.member_epoch, received(&r)),
            (1, Some(asg(&[(a, &[0, 1])])))
        );
        assert_eq!(g.members["m1"].rec.state, MemberState::UnrevokedPartitions);
        assert_eq!(g.state(), GroupState::Reconciling);

        // Until m1 acknowledges, m2 gets nothing more.
        let r = g.heartbeat(heartbeat_request("m2", 2, Some(&Assignment::new())), &t, 3);
        assert_eq!((r.member_epoch, received(&r)), (2, None));
        let r = g.heartbeat(
            heartbeat_request("m1", 1, Some(&asg(&[(a, &[0, 1, 2, 3])]))),
            &t,
            3,
        );
        assert_eq!(r.member_epoch, 1, "still owns the revoked partitions");
        let r = g.heartbeat(heartbeat_request("m1", 1, None), &t, 3);
        assert_eq!(r.member_epoch, 1, "did not say what it owns");

        // m1 acknowledges (its client applied the assignment): it moves to epoch 2...
        let r = m1.heartbeat(&mut g, &t, 4);
        assert_eq!((r.member_epoch, r.assignment), (2, None));
        assert_eq!(g.members["m1"].rec.state, MemberState::Stable);
        // ...and m2 gets 2 and 3.
        let r = m2.heartbeat(&mut g, &t, 5);
        assert_eq!(
            (r.member_epoch, received(&r)),
            (2, Some(asg(&[(a, &[2, 3])])))
        );
        assert_eq!(g.state(), GroupState::Stable);
        assert_ownership_consistent(&g);
    }

    #[test]
    fn uniform_group_is_balanced_and_sticky() {
        let t = topics(&[("a", 1, 4), ("b", 2, 2)]);
        let mut g = group();
        let mut clients = vec![
            Client::new("m1", &["a", "b"]),
            Client::new("m2", &["a", "b"]),
        ];
        converge(&mut g, &mut clients, &t, 0);
        let before: Vec<Assignment> = clients.iter().map(|c| c.owned.clone()).collect();
        assert!(clients.iter().all(|c| partitions(&c.owned).count() == 3));

        clients.push(Client::new("m3", &["a", "b"]));
        converge(&mut g, &mut clients, &t, 1);
        for (c, before) in clients.iter().zip(&before) {
            assert_eq!(partitions(&c.owned).count(), 2, "{}", c.member_id);
            assert!(
                is_subset(&c.owned, before),
                "{} lost a partition it could keep",
                c.member_id
            );
        }
        assert_eq!(g.describe(&t).assignor_name, "uniform");
        assert_ownership_consistent(&g);
    }

    #[test]
    fn range_assignor_gives_co_partitioned_ranges() {
        let t = topics(&[("a", 1, 4), ("b", 2, 4)]);
        let (a, b) = (tid(&t, "a"), tid(&t, "b"));
        let mut g = group();
        let mut clients = vec![
            Client::new("m1", &["a", "b"]),
            Client::new("m2", &["a", "b"]),
        ];
        for c in &mut clients {
            c.assignor = Some("range".to_string());
        }
        converge(&mut g, &mut clients, &t, 0);
        assert_eq!(clients[0].owned, asg(&[(a, &[0, 1]), (b, &[0, 1])]));
        assert_eq!(clients[1].owned, asg(&[(a, &[2, 3]), (b, &[2, 3])]));
        assert_eq!(g.describe(&t).assignor_name, "range");
    }

    #[test]
    fn leaving_member_gives_its_partitions_to_the_others() {
        let t = topics(&[("a", 1, 4)]);
        let a = tid(&t, "a");
        let mut g = group();
        let mut clients = vec![Client::new("m1", &["a"]), Client::new("m2", &["a"])];
        converge(&mut g, &mut clients, &t, 0);
        let epoch = g.group_epoch();

        let r = g.heartbeat(heartbeat_request("m2", clients[1].epoch, None), &t, 1);
        assert_eq!(r.member_epoch, clients[1].epoch);
        let leave = heartbeat_request("m2", LEAVE_GROUP_MEMBER_EPOCH, None);
        let r = g.heartbeat(leave.clone(), &t, 1);
        assert_eq!(
            (r.error_code, r.member_id.as_str(), r.member_epoch),
            (NONE, "m2", -1)
        );
        assert_eq!(g.group_epoch(), epoch + 1);
        assert_eq!(g.heartbeat(leave, &t, 1).error_code, UNKNOWN_MEMBER_ID);

        let r = clients[0].heartbeat(&mut g, &t, 2);
        assert_eq!(
            (r.member_epoch, received(&r)),
            (epoch + 1, Some(asg(&[(a, &[0, 1, 2, 3])])))
        );
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn expired_session_gives_partitions_to_the_others() {
        let t = topics(&[("a", 1, 2)]);
        let mut g = group();
        let mut clients = vec![Client::new("m1", &["a"]), Client::new("m2", &["a"])];
        converge(&mut g, &mut clients, &t, 0);
        assert_eq!(g.next_deadline(), Some(SESSION));

        // m1 keeps heartbeating, m2 goes silent.
        clients[0].heartbeat(&mut g, &t, 30_000);
        assert_eq!(g.next_deadline(), Some(SESSION));
        g.tick(SESSION - 1);
        assert_eq!(g.members.len(), 2);
        let epoch = g.group_epoch();
        g.tick(SESSION);
        assert_eq!(g.members.keys().collect::<Vec<_>>(), vec!["m1"]);
        assert_eq!(g.group_epoch(), epoch + 1);
        assert_eq!(g.next_deadline(), Some(30_000 + SESSION));

        let r = clients[0].heartbeat(&mut g, &t, SESSION + 1);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 2);

        // The expired member learns it on its next heartbeat and rejoins.
        let r = clients[1].heartbeat(&mut g, &t, SESSION + 2);
        assert_eq!(r.error_code, UNKNOWN_MEMBER_ID);
        converge(&mut g, &mut clients, &t, SESSION + 3);
        assert!(clients.iter().all(|c| partitions(&c.owned).count() == 1));
    }

    #[test]
    fn member_that_does_not_revoke_in_time_is_removed() {
        let t = topics(&[("a", 1, 2)]);
        let config = ConsumerGroupConfig {
            session_timeout_ms: 100_000,
            ..ConsumerGroupConfig::default()
        };
        let mut g = ConsumerGroup::new("g".to_string(), config);
        let mut m1 = Client::new("m1", &["a"]);
        m1.heartbeat(&mut g, &t, 0);
        let mut m2 = Client::new("m2", &["a"]);
        m2.heartbeat(&mut g, &t, 0);
        // m1 is told to revoke but never acknowledges.
        let r = g.heartbeat(heartbeat_request("m1", 1, Some(&m1.owned)), &t, 1_000);
        assert_eq!(g.members["m1"].rec.state, MemberState::UnrevokedPartitions);
        assert_eq!(r.member_epoch, 1);
        assert_eq!(g.next_deadline(), Some(61_000));
        g.tick(61_000);
        assert!(!g.members.contains_key("m1"));
        let r = m2.heartbeat(&mut g, &t, 61_001);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 2);
    }

    #[test]
    fn epochs_are_fenced() {
        let t = topics(&[("a", 1, 2)]);
        let a = tid(&t, "a");
        let mut g = group();
        let mut m1 = Client::new("m1", &["a"]);
        m1.heartbeat(&mut g, &t, 0);
        let mut m2 = Client::new("m2", &["a"]);
        m2.heartbeat(&mut g, &t, 0);
        let mut clients = vec![m1, m2];
        converge(&mut g, &mut clients, &t, 1);
        // m1 went 1 -> 2; m2 joined at 2.
        assert_eq!(
            (
                g.members["m1"].rec.member_epoch,
                g.members["m1"].rec.previous_member_epoch
            ),
            (2, 1)
        );
        let owned = clients[0].owned.clone();

        let fenced = |g: &mut ConsumerGroup, epoch, owned: Option<&Assignment>| {
            g.heartbeat(heartbeat_request("m1", epoch, owned), &t, 2)
                .error_code
        };
        assert_eq!(
            fenced(&mut g, 3, Some(&owned)),
            FENCED_MEMBER_EPOCH,
            "ahead of the coordinator"
        );
        assert_eq!(fenced(&mut g, i32::MAX, None), FENCED_MEMBER_EPOCH);
        // The previous epoch passes when the member owns no more than its assignment (the
        // response moving it to epoch 2 was lost)...
        assert_eq!(fenced(&mut g, 1, Some(&owned)), NONE);
        // ...but not when it owns more, or does not say.
        assert_eq!(
            fenced(&mut g, 1, Some(&asg(&[(a, &[0, 1])]))),
            FENCED_MEMBER_EPOCH
        );
        assert_eq!(fenced(&mut g, 1, None), FENCED_MEMBER_EPOCH);
        assert_eq!(
            g.heartbeat(heartbeat_request("nobody", 1, None), &t, 2)
                .error_code,
            UNKNOWN_MEMBER_ID
        );

        // A fenced member rejoins with epoch 0 under the same id and gets its partitions.
        let r = g.heartbeat(join_request("m1", &["a"]), &t, 3);
        assert_eq!(
            (r.error_code, r.member_epoch, received(&r)),
            (NONE, 2, Some(owned))
        );
    }

    #[test]
    fn static_member_keeps_its_assignment_across_a_restart() {
        let t = topics(&[("a", 1, 6)]);
        let mut g = group();
        let mut s = Client::new("s1", &["a"]);
        s.instance_id = Some("instance".to_string());
        let mut clients = vec![s, Client::new("d1", &["a"])];
        converge(&mut g, &mut clients, &t, 0);
        let (owned, epoch) = (clients[0].owned.clone(), g.group_epoch());

        let mut leave = heartbeat_request("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None);
        leave.instance_id = Some("instance".to_string());
        let r = g.heartbeat(leave, &t, 1_000);
        assert_eq!((r.error_code, r.member_epoch), (NONE, -2));
        assert_eq!(g.group_epoch(), epoch, "no rebalance");
        // The dynamic member does not get the static member's partitions meanwhile.
        let r = clients[1].heartbeat(&mut g, &t, 2_000);
        assert_eq!(r.assignment, None);

        // The restarted instance comes back with a new member id and the same partitions,
        // without a rebalance and without waiting for anyone.
        clients[0].member_id = "s2".to_string();
        clients[0].epoch = 0;
        clients[0].owned.clear();
        let r = clients[0].heartbeat(&mut g, &t, 3_000);
        assert_eq!(
            (r.error_code, r.member_id.as_str(), r.member_epoch),
            (NONE, "s2", epoch)
        );
        assert_eq!(received(&r), Some(owned));
        assert_eq!(g.group_epoch(), epoch, "no rebalance");
        assert!(!g.members.contains_key("s1"));
        assert_eq!(g.state(), GroupState::Stable);

        // Now the instance id is in use: another process with it is refused...
        let mut other = join_request("s3", &["a"]);
        other.instance_id = Some("instance".to_string());
        assert_eq!(
            g.heartbeat(other, &t, 3_000).error_code,
            UNRELEASED_INSTANCE_ID
        );
        // ...and the old member id is fenced for it.
        let mut old = heartbeat_request("s1", epoch, None);
        old.instance_id = Some("instance".to_string());
        assert_eq!(g.heartbeat(old, &t, 3_000).error_code, FENCED_INSTANCE_ID);
        assert_ownership_consistent(&g);
    }

    #[test]
    fn static_member_coming_back_to_a_changed_group_gets_its_new_target() {
        let t = topics(&[("a", 1, 4)]);
        let mut g = group();
        let mut s = Client::new("s1", &["a"]);
        s.instance_id = Some("instance".to_string());
        let mut clients = vec![s];
        converge(&mut g, &mut clients, &t, 0);
        let mut leave = heartbeat_request("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None);
        leave.instance_id = Some("instance".to_string());
        g.heartbeat(leave, &t, 1);

        // A member joins while the static member is away: it must wait for the
        // partitions the static member still holds.
        clients.push(Client::new("d1", &["a"]));
        let r = clients[1].heartbeat(&mut g, &t, 2);
        assert_eq!(received(&r), Some(Assignment::new()));

        // Back, the static member keeps its share and releases the rest at once (a
        // restarted client owns nothing), so the other member gets it.
        clients[0].member_id = "s2".to_string();
        clients[0].epoch = 0;
        clients[0].owned.clear();
        let r = clients[0].heartbeat(&mut g, &t, 3);
        assert_eq!(received(&r).as_ref(), Some(&g.target["s2"]));
        assert_eq!(partitions(&clients[0].owned).count(), 2);
        let r = clients[1].heartbeat(&mut g, &t, 4);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 2);
        assert_eq!(g.state(), GroupState::Stable);
    }

    #[test]
    fn static_member_that_stays_away_loses_its_partitions() {
        let t = topics(&[("a", 1, 2)]);
        let mut g = group();
        let mut s = Client::new("s1", &["a"]);
        s.instance_id = Some("instance".to_string());
        let mut clients = vec![s, Client::new("d1", &["a"])];
        converge(&mut g, &mut clients, &t, 0);
        let mut leave = heartbeat_request("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None);
        leave.instance_id = Some("instance".to_string());
        g.heartbeat(leave, &t, 10_000);
        clients[1].heartbeat(&mut g, &t, 40_000);
        g.tick(10_000 + SESSION);
        assert_eq!(g.members.keys().collect::<Vec<_>>(), vec!["d1"]);
        let r = clients[1].heartbeat(&mut g, &t, 10_000 + SESSION);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 2);
    }

    #[test]
    fn static_member_leaving_for_good_rebalances() {
        let t = topics(&[("a", 1, 2)]);
        let mut g = group();
        let mut s = Client::new("s1", &["a"]);
        s.instance_id = Some("instance".to_string());
        s.heartbeat(&mut g, &t, 0);
        let mut leave = heartbeat_request("s1", LEAVE_GROUP_MEMBER_EPOCH, None);
        leave.instance_id = Some("instance".to_string());
        assert_eq!(g.heartbeat(leave, &t, 1).error_code, NONE);
        assert!(g.is_empty());
        assert_eq!(g.state(), GroupState::Empty);
        assert_eq!((g.group_epoch(), g.assignment_epoch()), (2, 2));
        // The instance id is free again.
        let mut s2 = Client::new("s2", &["a"]);
        s2.instance_id = Some("instance".to_string());
        assert_eq!(s2.heartbeat(&mut g, &t, 2).error_code, NONE);
    }

    #[test]
    fn metadata_changes_reach_the_members() {
        let mut t = topics(&[("a", 1, 1)]);
        let mut g = group();
        let mut clients = vec![Client::new("m1", &["a", "b"])];
        converge(&mut g, &mut clients, &t, 0);
        let epoch = g.group_epoch();

        // Partitions added, broker tells the group.
        t.insert("a".to_string(), (Uuid::from_u128(1), 3));
        g.on_metadata_change(&t);
        assert_eq!(g.group_epoch(), epoch + 1);
        g.on_metadata_change(&t);
        assert_eq!(g.group_epoch(), epoch + 1, "no change, no bump");
        let r = clients[0].heartbeat(&mut g, &t, 1);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 3);

        // A subscribed topic is created: seen on the next heartbeat even without a call.
        t.insert("b".to_string(), (Uuid::from_u128(2), 2));
        let r = clients[0].heartbeat(&mut g, &t, 2);
        assert_eq!(r.member_epoch, epoch + 2);
        assert_eq!(partitions(&received(&r).unwrap()).count(), 5);

        // A topic nobody subscribes to changes nothing.
        t.insert("c".to_string(), (Uuid::from_u128(3), 2));
        g.on_metadata_change(&t);
        assert_eq!(g.group_epoch(), epoch + 2);

        // A subscribed topic is deleted: its partitions are revoked.
        t.remove("a");
        g.on_metadata_change(&t);
        let r = clients[0].heartbeat(&mut g, &t, 3);
        assert_eq!(received(&r), Some(asg(&[(Uuid::from_u128(2), &[0, 1])])));
        converge(&mut g, &mut clients, &t, 4);
        assert_ownership_consistent(&g);
    }

    #[test]
    fn subscription_change_rebalances() {
        let t = topics(&[("a", 1, 2), ("b", 2, 2)]);
        let mut g = group();
        let mut clients = vec![Client::new("m1", &["a"])];
        converge(&mut g, &mut clients, &t, 0);
        let mut r = heartbeat_request("m1", clients[0].epoch, Some(&clients[0].owned));
        r.subscribed_topic_names = Some(vec!["b".to_string()]);
        let r = g.heartbeat(r, &t, 1);
        // Revocation of "a" first (the member still owns it), "b" only afterwards.
        assert_eq!(received(&r), Some(Assignment::new()));
        clients[0].apply(&r);
        converge(&mut g, &mut clients, &t, 2);
        assert_eq!(clients[0].owned, asg(&[(tid(&t, "b"), &[0, 1])]));
    }

    #[test]
    fn offset_commits_are_validated_against_member_epochs() {
        let t = topics(&[("a", 1, 1)]);
        let mut g = group();
        assert_eq!(
            g.validate_offset_commit("", -1),
            NONE,
            "empty group, manual assignment"
        );
        assert_eq!(g.validate_offset_commit("m1", 1), UNKNOWN_MEMBER_ID);
        assert!(!g.is_subscribed_to_topic("a"));
        Client::new("m1", &["a"]).heartbeat(&mut g, &t, 0);
        assert_eq!(g.validate_offset_commit("m1", 1), NONE);
        assert!(g.is_subscribed_to_topic("a"));
        assert!(!g.is_subscribed_to_topic("b"));
        assert_eq!(g.validate_offset_commit("m1", 0), STALE_MEMBER_EPOCH);
        assert_eq!(g.validate_offset_commit("m1", 2), STALE_MEMBER_EPOCH);
        assert_eq!(g.validate_offset_commit("", -1), UNKNOWN_MEMBER_ID);
        assert_eq!(g.validate_offset_commit("m2", 1), UNKNOWN_MEMBER_ID);
    }

    #[test]
    fn invalid_requests_are_refused_without_changing_the_group() {
        let t = topics(&[("a", 1, 1)]);
        let mut g = group();
        let cases: Vec<(HeartbeatRequest, i16)> = vec![
            (
                HeartbeatRequest {
                    subscribed_topic_regex: Some("a.*".to_string()),
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (
                HeartbeatRequest {
                    server_assignor: Some("cooperative-sticky".to_string()),
                    ..join_request("m", &["a"])
                },
                UNSUPPORTED_ASSIGNOR,
            ),
            (
                HeartbeatRequest {
                    subscribed_topic_names: None,
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (
                HeartbeatRequest {
                    rebalance_timeout_ms: -1,
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (
                HeartbeatRequest {
                    owned_partitions: Some(vec![(Uuid::from_u128(1), vec![0])]),
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (
                HeartbeatRequest {
                    instance_id: Some(String::new()),
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (
                HeartbeatRequest {
                    rack_id: Some(String::new()),
                    ..join_request("m", &["a"])
                },
                INVALID_REQUEST,
            ),
            (heartbeat_request("m", -3, None), INVALID_REQUEST),
            (heartbeat_request("m", i32::MIN, None), INVALID_REQUEST),
            (
                heartbeat_request("m", LEAVE_GROUP_STATIC_MEMBER_EPOCH, None),
                INVALID_REQUEST,
            ),
            (heartbeat_request("", 3, None), INVALID_REQUEST),
            (
                heartbeat_request("", LEAVE_GROUP_MEMBER_EPOCH, None),
                INVALID_REQUEST,
            ),
        ];
        for (request, code) in cases {
            let r = g.heartbeat(request.clone(), &t, 0);
            assert_eq!(r.error_code, code, "{request:?}");
            assert!(r.error_message.is_some());
            assert_eq!(r.heartbeat_interval_ms, 5_000);
            assert!(g.is_empty());
            assert_eq!(g.group_epoch(), 0);
        }
    }

    #[test]
    fn group_size_is_capped() {
        let t = topics(&[("a", 1, 1)]);
        let config = ConsumerGroupConfig {
            max_size: 1,
            ..ConsumerGroupConfig::default()
        };
        let mut g = ConsumerGroup::new("g".to_string(), config);
        assert_eq!(
            Client::new("m1", &["a"])
                .heartbeat(&mut g, &t, 0)
                .error_code,
            NONE
        );
        assert_eq!(
            g.heartbeat(join_request("m2", &["a"]), &t, 0).error_code,
            GROUP_MAX_SIZE_REACHED
        );
        // Existing members may still rejoin.
        assert_eq!(
            g.heartbeat(join_request("m1", &["a"]), &t, 0).error_code,
            NONE
        );
    }

    #[test]
    fn describe_reports_members_and_assignments() {
        let t = topics(&[("a", 1, 2)]);
        let mut g = group();
        assert_eq!(g.describe(&t).state, GroupState::Empty);
        let mut m1 = Client::new("m1", &["a"]);
        m1.heartbeat(&mut g, &t, 0);
        let mut request = join_request("m2", &["a"]);
        request.rack_id = Some("rack-1".to_string());
        request.client_id = "consumer-2".to_string();
        g.heartbeat(request, &t, 0);

        let d = g.describe(&t);
        assert_eq!(
            (
                d.group_id.as_str(),
                d.state,
                d.group_epoch,
                d.assignment_epoch
            ),
            ("g", GroupState::Reconciling, 2, 2)
        );
        assert_eq!(d.state.as_str(), "Reconciling");
        assert_eq!(d.assignor_name, "uniform");
        let m1d = &d.members[0];
        assert_eq!((m1d.member_id.as_str(), m1d.member_epoch), ("m1", 1));
        assert_eq!(m1d.assignment[0].partitions, vec![0, 1]);
        assert_eq!(m1d.assignment[0].topic_name, "a");
        assert_eq!(m1d.target_assignment[0].partitions, vec![0]);
        let m2d = &d.members[1];
        assert_eq!(
            (
                m2d.member_epoch,
                m2d.client_id.as_str(),
                m2d.client_host.as_str()
            ),
            (2, "consumer-2", "/127.0.0.1")
        );
        assert_eq!(m2d.rack_id.as_deref(), Some("rack-1"));
        assert_eq!(m2d.subscribed_topic_names, vec!["a".to_string()]);
        assert!(m2d.assignment.is_empty());
        assert_eq!(m2d.target_assignment[0].partitions, vec![1]);
    }

    /// A small deterministic generator (xorshift64*), so that failures replay by seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
    }

    /// A simulated consumer for the property test. Unlike [`Client`], it may apply an
    /// assignment later than it receives it, lose responses, leave, and go silent.
    #[derive(Debug)]
    struct SimClient {
        member_id: String,
        instance_id: Option<String>,
        subscriptions: Vec<String>,
        assignor: Option<String>,
        epoch: i32,
        owned: Assignment,
        /// Received but not applied yet.
        pending: Option<Assignment>,
        /// After a lost response the next heartbeat is a full one (as Kafka clients do).
        full_next: bool,
        /// A static member that left temporarily.
        away: bool,
        /// Removed by the coordinator without knowing it (session or rebalance timeout).
        zombie: bool,
    }

    /// How often the interesting cases happened, so the test cannot silently stop
    /// exercising them.
    #[derive(Debug, Default)]
    struct Stats {
        revocations: usize,
        unreleased: usize,
        fenced: usize,
        unknown: usize,
        lost_responses: usize,
        static_rejoins: usize,
        expiries: usize,
    }

    struct Sim {
        stats: Stats,
        rng: Rng,
        group: ConsumerGroup,
        topics: Topics,
        clients: Vec<SimClient>,
        now: i64,
        next_id: u32,
    }

    const TOPIC_NAMES: [&str; 3] = ["a", "b", "c"];

    impl Sim {
        fn new(seed: u64) -> Self {
            let config = ConsumerGroupConfig {
                max_size: 8,
                ..ConsumerGroupConfig::default()
            };
            Sim {
                stats: Stats::default(),
                rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
                group: ConsumerGroup::new("g".to_string(), config),
                topics: topics(&[("a", 1, 3), ("b", 2, 5)]),
                clients: Vec::new(),
                now: 0,
                next_id: 0,
            }
        }

        fn add_client(&mut self) {
            self.next_id += 1;
            let n = self.next_id;
            let subscriptions = match self.rng.below(3) {
                0 => vec!["a", "b", "c"],
                1 => vec!["a"],
                _ => vec!["b", "c"],
            };
            let instance_id = self.rng.chance(30).then(|| format!("instance-{n}"));
            let assignor =
                [None, Some("uniform"), Some("range")][self.rng.below(3)].map(str::to_string);
            let member_id = self.fresh_member_id();
            self.clients.push(SimClient {
                member_id,
                instance_id,
                subscriptions: subscriptions.into_iter().map(str::to_string).collect(),
                assignor,
                epoch: 0,
                owned: Assignment::new(),
                pending: None,
                full_next: true,
                away: false,
                zombie: false,
            });
        }

        /// Half the clients let the coordinator generate the id (v0), half make one (v1).
        fn fresh_member_id(&mut self) -> String {
            if self.rng.chance(50) {
                String::new()
            } else {
                Uuid::from_u128(u128::from(self.rng.next())).to_string()
            }
        }

        fn request(&mut self, i: usize) -> HeartbeatRequest {
            let c = &self.clients[i];
            if c.epoch == 0 {
                return HeartbeatRequest {
                    instance_id: c.instance_id.clone(),
                    server_assignor: c.assignor.clone(),
                    ..join_request(
                        &c.member_id,
                        &c.subscriptions
                            .iter()
                            .map(String::as_str)
                            .collect::<Vec<_>>(),
                    )
                };
            }
            let full = c.full_next || self.rng.chance(30);
            HeartbeatRequest {
                instance_id: c.instance_id.clone(),
                subscribed_topic_names: full.then(|| c.subscriptions.clone()),
                rebalance_timeout_ms: if full { 60_000 } else { -1 },
                owned_partitions: (full || self.rng.chance(70))
                    .then(|| assignment_to_wire(&c.owned)),
                ..heartbeat_request(&c.member_id, c.epoch, None)
            }
        }

        fn heartbeat(&mut self, i: usize, lose_response: bool) {
            if self.clients[i].away {
                return;
            }
            let request = self.request(i);
            let rejoin_static = request.member_epoch == 0 && request.instance_id.is_some();
            let response = self.group.heartbeat(request, &self.topics, self.now);
            self.count(&response, rejoin_static);
            let c = &mut self.clients[i];
            if lose_response {
                self.stats.lost_responses += 1;
                // The client will resend everything, and must not apply an assignment it
                // may already have reported as not owned.
                c.full_next = true;
                c.pending = None;
                return;
            }
            c.full_next = false;
            match response.error_code {
                NONE => {
                    c.member_id = response.member_id.clone();
                    c.epoch = response.member_epoch;
                    if let Some(a) = response.assignment.as_deref() {
                        c.pending = Some(assignment_from_wire(a));
                    }
                }
                FENCED_MEMBER_EPOCH | UNKNOWN_MEMBER_ID => {
                    c.epoch = 0;
                    c.owned.clear();
                    c.pending = None;
                    c.zombie = false;
                    c.full_next = true;
                }
                // Group full, or a static instance not released yet: retry later.
                GROUP_MAX_SIZE_REACHED | UNRELEASED_INSTANCE_ID => {}
                code => panic!("unexpected error {code}: {response:?}"),
            }
        }

        fn count(&mut self, response: &HeartbeatResponse, rejoin_static: bool) {
            let stats = &mut self.stats;
            match response.error_code {
                FENCED_MEMBER_EPOCH => stats.fenced += 1,
                UNKNOWN_MEMBER_ID => stats.unknown += 1,
                _ => {}
            }
            if let Some(m) = self.group.members.get(&response.member_id) {
                match m.rec.state {
                    MemberState::UnrevokedPartitions => stats.revocations += 1,
                    MemberState::UnreleasedPartitions => stats.unreleased += 1,
                    MemberState::Stable => {}
                }
                if rejoin_static && response.error_code == NONE && !m.rec.assigned.is_empty() {
                    stats.static_rejoins += 1;
                }
            }
        }

        fn apply(&mut self, i: usize) {
            let c = &mut self.clients[i];
            if let Some(a) = c.pending.take() {
                c.owned = a;
            }
        }

        fn leave(&mut self, i: usize) {
            let c = &self.clients[i];
            if c.epoch <= 0 || c.away {
                return;
            }
            let temporary = c.instance_id.is_some() && self.rng.chance(60);
            let epoch = if temporary {
                LEAVE_GROUP_STATIC_MEMBER_EPOCH
            } else {
                LEAVE_GROUP_MEMBER_EPOCH
            };
            let request = HeartbeatRequest {
                instance_id: c.instance_id.clone(),
                ..heartbeat_request(&c.member_id, epoch, None)
            };
            self.group.heartbeat(request, &self.topics, self.now);
            if temporary {
                let c = &mut self.clients[i];
                c.away = true;
                c.owned.clear();
                c.pending = None;
            } else {
                self.clients.remove(i);
            }
        }

        /// A static member back from a restart, under a new member id.
        fn come_back(&mut self, i: usize) {
            if !self.clients[i].away {
                return;
            }
            let member_id = self.fresh_member_id();
            let c = &mut self.clients[i];
            c.away = false;
            c.member_id = member_id;
            c.epoch = 0;
            c.full_next = true;
        }

        fn change_metadata(&mut self) {
            let name = TOPIC_NAMES[self.rng.below(TOPIC_NAMES.len())];
            match self.topics.get(name).copied() {
                Some((id, count)) if self.rng.chance(70) => {
                    let added = 1 + self.rng.below(3) as i32;
                    self.topics.insert(name.to_string(), (id, count + added));
                }
                Some(_) => {
                    self.topics.remove(name);
                }
                None => {
                    let id = Uuid::from_u128(u128::from(self.rng.next()));
                    let count = 1 + self.rng.below(4) as i32;
                    self.topics.insert(name.to_string(), (id, count));
                }
            }
            if self.rng.chance(50) {
                self.group.on_metadata_change(&self.topics);
            }
        }

        /// A request no well-behaved client sends, under ids no simulated client uses.
        fn garbage(&mut self) {
            let epochs = [i32::MIN, -3, -2, -1, 0, 1, 2, 7, i32::MAX];
            let request = HeartbeatRequest {
                member_id: ["", "garbage-1", "garbage-2"][self.rng.below(3)].to_string(),
                member_epoch: epochs[self.rng.below(epochs.len())],
                instance_id: [None, Some("garbage-instance"), Some("")][self.rng.below(3)]
                    .map(str::to_string),
                rack_id: [None, Some("r"), Some("")][self.rng.below(3)].map(str::to_string),
                rebalance_timeout_ms: [-1, 0, -5, i32::MAX][self.rng.below(4)],
                subscribed_topic_names: self
                    .rng
                    .chance(50)
                    .then(|| vec!["a".to_string(), String::new()]),
                subscribed_topic_regex: self.rng.chance(10).then(|| ".*".to_string()),
                server_assignor: [None, Some("range"), Some("bogus")][self.rng.below(3)]
                    .map(str::to_string),
                owned_partitions: self
                    .rng
                    .chance(50)
                    .then(|| vec![(Uuid::nil(), vec![-1, i32::MAX, 0, 0])]),
                client_id: String::new(),
                client_host: String::new(),
            };
            self.group.heartbeat(request, &self.topics, self.now);
        }

        fn tick(&mut self) {
            self.now += [0, 1_000, 10_000, 30_000][self.rng.below(4)];
            let before = self.group.members.len();
            self.group.tick(self.now);
            self.stats.expiries += before - self.group.members.len();
            self.mark_zombies();
        }

        /// Clients whose member the coordinator removed while they thought they were in.
        fn mark_zombies(&mut self) {
            for c in &mut self.clients {
                if c.epoch > 0 && !c.away && !self.group.members.contains_key(&c.member_id) {
                    c.zombie = true;
                }
            }
        }

        fn step(&mut self) {
            if self.clients.len() < 6 && self.rng.chance(10) {
                self.add_client();
            }
            if self.clients.is_empty() {
                return;
            }
            let i = self.rng.below(self.clients.len());
            match self.rng.below(100) {
                0..=44 => {
                    let lose = self.rng.chance(10);
                    self.heartbeat(i, lose);
                }
                45..=69 => self.apply(i),
                70..=74 => self.leave(i),
                75..=79 => self.come_back(i),
                80..=87 => self.tick(),
                88..=92 => self.change_metadata(),
                _ => self.garbage(),
            }
            self.mark_zombies();
        }

        /// Safety: the coordinator never counts a partition as owned by two members, and
        /// what live clients own is what the coordinator counts as theirs, so no two
        /// clients ever own the same partition.
        fn check_safety(&self) {
            assert_ownership_consistent(&self.group);
            let mut owned_by_clients: HashMap<(Uuid, i32), &str> = HashMap::new();
            for c in self.clients.iter().filter(|c| !c.zombie && !c.away) {
                if c.owned.is_empty() {
                    continue;
                }
                let member = self.group.members.get(&c.member_id).unwrap_or_else(|| {
                    panic!("{} owns partitions but is not a member", c.member_id)
                });
                for tp in partitions(&c.owned) {
                    assert!(
                        member.rec.owned().any(|owned| owned == tp),
                        "{} owns {tp:?} without the coordinator knowing",
                        c.member_id
                    );
                    if let Some(other) = owned_by_clients.insert(tp, &c.member_id) {
                        panic!("{tp:?} owned by clients {other} and {}", c.member_id);
                    }
                }
            }
        }

        /// Liveness: once every client heartbeats and applies what it gets, and members
        /// nobody runs have expired, the group is stable with every subscribed partition
        /// assigned to exactly one member, which owns it.
        fn check_liveness(&mut self) {
            for i in 0..self.clients.len() {
                self.come_back(i);
            }
            // Every client heartbeats across a session timeout: orphans (members whose
            // join response was lost, or created by garbage) expire, clients do not.
            for _ in 0..3 {
                for i in 0..self.clients.len() {
                    self.apply(i);
                    self.heartbeat(i, false);
                }
                self.now += SESSION / 2 + 1;
                self.group.tick(self.now);
            }
            for _ in 0..20 {
                for i in 0..self.clients.len() {
                    self.apply(i);
                    self.heartbeat(i, false);
                    self.apply(i);
                }
                self.check_safety();
                if self.group.state() == GroupState::Stable
                    && self
                        .clients
                        .iter()
                        .all(|c| c.epoch > 0 && c.pending.is_none())
                {
                    break;
                }
            }
            assert_eq!(
                self.group.state(),
                GroupState::Stable,
                "{:#?}",
                self.group.describe(&self.topics)
            );
            assert_eq!(self.group.members.len(), self.clients.len());

            let subscribed: BTreeSet<&str> = self
                .clients
                .iter()
                .flat_map(|c| c.subscriptions.iter().map(String::as_str))
                .collect();
            let expected: BTreeSet<(Uuid, i32)> = subscribed
                .iter()
                .filter_map(|name| self.topics.get(*name))
                .flat_map(|&(id, count)| (0..count).map(move |p| (id, p)))
                .collect();
            let mut assigned = BTreeSet::new();
            for c in &self.clients {
                let member = &self.group.members[&c.member_id];
                assert_eq!(c.owned, member.rec.assigned, "{}", c.member_id);
                assert_eq!(&member.rec.assigned, self.group.target_of(&c.member_id));
                assert_eq!(c.epoch, self.group.assignment_epoch());
                assigned.extend(partitions(&c.owned));
            }
            assert_eq!(assigned, expected);
        }
    }

    #[test]
    fn random_histories_are_safe_and_converge() {
        let mut total = Stats::default();
        for seed in 0..200 {
            let mut sim = Sim::new(seed);
            for _ in 0..300 {
                sim.step();
                sim.check_safety();
            }
            sim.check_liveness();
            let s = sim.stats;
            total.revocations += s.revocations;
            total.unreleased += s.unreleased;
            total.fenced += s.fenced;
            total.unknown += s.unknown;
            total.lost_responses += s.lost_responses;
            total.static_rejoins += s.static_rejoins;
            total.expiries += s.expiries;
        }
        let Stats {
            revocations,
            unreleased,
            fenced,
            unknown,
            lost_responses,
            static_rejoins,
            expiries,
        } = total;
        for (what, n) in [
            ("revocations", revocations),
            ("unreleased", unreleased),
            ("fenced", fenced),
            ("unknown", unknown),
            ("lost responses", lost_responses),
            ("static rejoins", static_rejoins),
            ("expiries", expiries),
        ] {
            assert!(
                n >= 20,
                "only {n} {what}: the simulation no longer exercises them"
            );
        }
    }
}
