//! The classic (JoinGroup/SyncGroup) consumer-group coordinator: one group's state machine.
//!
//! It follows Apache Kafka's `GroupCoordinator`/`ClassicGroup` semantics and is sans-I/O: no
//! async, no clock, no I/O. Time comes in as `now_ms` arguments, and only [`ClassicGroup::tick`]
//! applies deadlines, so the caller must call `tick` at [`ClassicGroup::next_deadline`] (which
//! may already have passed, e.g. with a zero initial rebalance delay).
//!
//! JoinGroup and SyncGroup requests are answered when the rebalance allows, not necessarily
//! when they arrive. The caller names each one with a `request_id` of its choosing; every
//! method returns the [`Effect`]s (completed requests) it caused, which may include the request
//! just passed in or others parked earlier. Every request id passed in is answered exactly once,
//! provided the caller keeps calling `tick`: a parked request always belongs to a member, and
//! members whose requests cannot progress are eventually removed (rebalance timeout, session
//! expiry), which answers what they had parked.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use indexmap::IndexMap;

// Kafka error codes used by the classic protocol (checked against kafka-protocol in the tests).
pub const NONE: i16 = 0;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
pub const NOT_COORDINATOR: i16 = 16;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
pub const FENCED_INSTANCE_ID: i16 = 82;

/// The generation id of error responses and of a member that has none (Kafka's
/// `JoinGroupRequest.UNKNOWN_GENERATION_ID`).
pub const NO_GENERATION: i32 = -1;

/// Kafka's `NewMemberJoinTimeoutMs`. A new member's JoinGroup is parked for the whole
/// rebalance, and a client that gave up on it (request timeout) simply retries with another
/// new member, so without this limit a long rebalance would collect defunct members.
const NEW_MEMBER_JOIN_TIMEOUT_MS: i64 = 300_000;

/// Broker settings for classic groups (Kafka's `group.*` broker configs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`
    pub initial_rebalance_delay_ms: i64,
    /// `group.min.session.timeout.ms`
    pub min_session_timeout_ms: i32,
    /// `group.max.session.timeout.ms`
    pub max_session_timeout_ms: i32,
    /// `group.max.size`
    pub max_size: usize,
}

impl Default for GroupConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        Self {
            initial_rebalance_delay_ms: 3_000,
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            max_size: usize::MAX,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRequest {
    /// Empty for a member joining for the first time.
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: the caller passes the session timeout, as Kafka does.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (protocol name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a dynamic member without a member id gets MEMBER_ID_REQUIRED first.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader can be told to skip the assignment.
    pub supports_skip_assignment: bool,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the group's protocol.
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error_code: i16,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member for the leader, empty for followers.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(member_id: String, error_code: i16) -> Self {
        Self {
            error_code,
            generation_id: NO_GENERATION,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id,
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub generation_id: i32,
    /// SyncGroup v5+; checked only when present.
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    /// (member id, assignment); only the leader's are used.
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub error_code: i16,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error_code: i16) -> Self {
        Self {
            error_code,
            protocol_type: None,
            protocol_name: None,
            assignment: Bytes::new(),
        }
    }
}

/// The completion of a parked (or just received) request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Join {
        request_id: u64,
        response: JoinResponse,
    },
    Sync {
        request_id: u64,
        response: SyncResponse,
    },
}

impl Effect {
    pub fn request_id(&self) -> u64 {
        match self {
            Effect::Join { request_id, .. } | Effect::Sync { request_id, .. } => *request_id,
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Metadata for the group's current protocol (empty when there is none).
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug)]
struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// The JoinGroup waiting for the rebalance to complete.
    pending_join: Option<u64>,
    /// The SyncGroup waiting for the leader's assignment.
    pending_sync: Option<u64>,
    session_deadline: i64,
    /// Joined during the current rebalance: not yet given a generation.
    is_new: bool,
}

impl Member {
    fn from_request(member_id: String, request: JoinRequest, request_id: u64, now_ms: i64) -> Self {
        Self {
            member_id,
            group_instance_id: request.group_instance_id,
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: Bytes::new(),
            pending_join: Some(request_id),
            pending_sync: None,
            session_deadline: now_ms.saturating_add(NEW_MEMBER_JOIN_TIMEOUT_MS),
            is_new: true,
        }
    }

    fn is_awaiting_join(&self) -> bool {
        self.pending_join.is_some()
    }

    fn refresh_session(&mut self, now_ms: i64) {
        self.session_deadline = now_ms.saturating_add(i64::from(self.session_timeout_ms));
    }

    /// When the member expires, if its session is running. An existing member waiting on the
    /// rebalance cannot heartbeat meaningfully, so the rebalance and sync timeouts bound it
    /// instead (Kafka's `hasSatisfiedHeartbeat`); a new member is bounded by its join timeout.
    fn session_deadline(&self) -> Option<i64> {
        let waiting = self.pending_join.is_some() || self.pending_sync.is_some();
        (self.is_new || !waiting).then_some(self.session_deadline)
    }

    fn metadata(&self, protocol: Option<&str>) -> Bytes {
        protocol
            .and_then(|wanted| self.protocols.iter().find(|(name, _)| name == wanted))
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Same protocols, same order, same metadata: rejoining changes nothing.
    fn matches(&self, protocols: &[(String, Bytes)]) -> bool {
        self.protocols == protocols
    }

    fn supports(&self, protocol: &str) -> bool {
        self.protocols.iter().any(|(name, _)| name == protocol)
    }

    /// The member's preferred protocol among those every member supports.
    fn vote<'a>(&'a self, candidates: &HashSet<&str>) -> Option<&'a str> {
        self.protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .find(|name| candidates.contains(name))
    }

    fn update(&mut self, request: JoinRequest) {
        self.session_timeout_ms = request.session_timeout_ms;
        self.rebalance_timeout_ms = request.rebalance_timeout_ms;
        self.protocols = request.protocols;
    }
}

/// Kafka's `InitialDelayedJoin`: the first rebalance of an empty group waits for the other
/// members that are starting at the same time, so they land in one generation.
#[derive(Debug)]
struct InitialDelay {
    /// The delay currently running.
    delay_ms: i64,
    /// How much longer the rebalance may still be extended.
    remaining_ms: i64,
    /// A member joined during the current delay, so extend it once more.
    new_member_added: bool,
}

/// One classic consumer group.
#[derive(Debug)]
pub struct ClassicGroup {
    group_id: String,
    config: GroupConfig,
    state: GroupState,
    generation_id: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order, which makes leader succession and the leader's member list
    /// deterministic.
    members: IndexMap<String, Member>,
    /// group.instance.id -> member id.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED -> when they lapse if unused.
    pending_members: HashMap<String, i64>,
    /// When the PreparingRebalance phase ends at the latest.
    rebalance_deadline: Option<i64>,
    /// Set while the rebalance is an initial one (the group was Empty).
    initial_delay: Option<InitialDelay>,
    /// Members given the current generation that have not sent SyncGroup yet.
    pending_sync: HashSet<String>,
    /// When members in `pending_sync` are removed (Kafka's `DelayedSync`).
    sync_deadline: Option<i64>,
}

impl ClassicGroup {
    pub fn new(group_id: String, config: GroupConfig) -> Self {
        Self {
            group_id,
            config,
            state: GroupState::Empty,
            generation_id: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_members: HashMap::new(),
            rebalance_deadline: None,
            initial_delay: None,
            pending_sync: HashSet::new(),
            sync_deadline: None,
        }
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation_id(&self) -> i32 {
        self.generation_id
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol_name(&self) -> Option<&str> {
        self.protocol_name.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// Whether the group is in the Empty state (no members; offsets may be committed by
    /// non-members and the group may be deleted).
    pub fn is_empty(&self) -> bool {
        self.state == GroupState::Empty
    }

    pub fn num_members(&self) -> usize {
        self.members.len()
    }

    pub fn members(&self) -> impl Iterator<Item = MemberDescription> + '_ {
        let protocol = self.protocol_name.as_deref();
        self.members.values().map(move |member| MemberDescription {
            member_id: member.member_id.clone(),
            group_instance_id: member.group_instance_id.clone(),
            client_id: member.client_id.clone(),
            client_host: member.client_host.clone(),
            metadata: member.metadata(protocol),
            assignment: member.assignment.clone(),
        })
    }

    /// The earliest time at which [`ClassicGroup::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<i64> {
        let rebalance = self
            .rebalance_deadline
            .filter(|_| self.state == GroupState::PreparingRebalance);
        let sync = self.sync_deadline.filter(|_| !self.pending_sync.is_empty());
        let pending = self.pending_members.values().copied().min();
        let session = self
            .members
            .values()
            .filter_map(Member::session_deadline)
            .min();
        [rebalance, sync, pending, session]
            .into_iter()
            .flatten()
            .min()
    }

    // ---- JoinGroup ----

    pub fn join(&mut self, request_id: u64, request: JoinRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(response) = self.join_inner(request_id, request, now_ms, &mut effects) {
            effects.push(Effect::Join {
                request_id,
                response,
            });
        }
        effects
    }

    /// Returns the response if the request is answered at once; otherwise it is parked on its
    /// member (or already answered through `effects` by a rebalance it completed).
    fn join_inner(
        &mut self,
        request_id: u64,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Option<JoinResponse> {
        let session_timeout = request.session_timeout_ms;
        if session_timeout < self.config.min_session_timeout_ms
            || session_timeout > self.config.max_session_timeout_ms
        {
            return Some(JoinResponse::error(
                request.member_id,
                INVALID_SESSION_TIMEOUT,
            ));
        }
        if !self.accepts_joining_member(&request.member_id) {
            // Kafka also drops an existing member turned away here: it is the last to rejoin
            // a group that is over its size, so the group shrinks back to the limit.
            self.remove_member_and_update(&request.member_id, now_ms, effects);
            return Some(JoinResponse::error(String::new(), GROUP_MAX_SIZE_REACHED));
        }
        if self.state == GroupState::Dead {
            return Some(JoinResponse::error(
                request.member_id,
                COORDINATOR_NOT_AVAILABLE,
            ));
        }
        if !self.supports_protocols(&request) {
            return Some(JoinResponse::error(
                request.member_id,
                INCONSISTENT_GROUP_PROTOCOL,
            ));
        }
        let response = if request.member_id.is_empty() {
            self.join_new_member(request_id, request, now_ms, effects)
        } else {
            self.join_known_member(request_id, request, now_ms, effects)
        };
        if self.state == GroupState::PreparingRebalance {
            self.maybe_complete_join(now_ms, effects);
        }
        response
    }

    /// Kafka's `acceptJoiningMember`. While preparing a rebalance only members that already
    /// rejoined are counted, so the members rejoining last are the ones turned away.
    fn accepts_joining_member(&self, member_id: &str) -> bool {
        let max = self.config.max_size;
        let member = self.members.get(member_id);
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                member.is_some_and(Member::is_awaiting_join) || self.num_awaiting_join() < max
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                member.is_some() || self.members.len() < max
            }
        }
    }

    fn num_awaiting_join(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.is_awaiting_join())
            .count()
    }

    /// Whether the request's protocol type matches the group's and one of its protocols is
    /// supported by every other member. The member being replaced (a known member rejoining,
    /// or the previous incarnation of a static member) does not count: its protocols are
    /// about to be replaced.
    fn supports_protocols(&self, request: &JoinRequest) -> bool {
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return false;
        }
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(request.protocol_type.as_str()) {
            return false;
        }
        let replaced = if request.member_id.is_empty() {
            request
                .group_instance_id
                .as_ref()
                .and_then(|instance| self.static_members.get(instance))
                .map(String::as_str)
        } else {
            Some(request.member_id.as_str())
        };
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| Some(m.member_id.as_str()) != replaced)
            .collect();
        request
            .protocols
            .iter()
            .any(|(name, _)| others.iter().all(|m| m.supports(name)))
    }

    fn join_new_member(
        &mut self,
        request_id: u64,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Option<JoinResponse> {
        let prefix = request
            .group_instance_id
            .as_deref()
            .unwrap_or(&request.client_id);
        let member_id = format!("{prefix}-{}", uuid::Uuid::new_v4());
        if let Some(instance) = &request.group_instance_id {
            if let Some(old_member_id) = self.static_members.get(instance).cloned() {
                return self.replace_static_member(
                    request_id,
                    request,
                    old_member_id,
                    member_id,
                    now_ms,
                    effects,
                );
            }
        } else if request.require_known_member_id {
            // The client must come back with this id. Until it does (or its session timeout
            // lapses) a rebalance waits for it, so it lands in the coming generation.
            let deadline = now_ms.saturating_add(i64::from(request.session_timeout_ms));
            self.pending_members.insert(member_id.clone(), deadline);
            return Some(JoinResponse::error(member_id, MEMBER_ID_REQUIRED));
        }
        self.add_member_and_rebalance(request_id, request, member_id, now_ms, effects);
        None
    }

    fn join_known_member(
        &mut self,
        request_id: u64,
        request: JoinRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Option<JoinResponse> {
        if request.group_instance_id.is_none()
            && self.pending_members.contains_key(&request.member_id)
        {
            let member_id = request.member_id.clone();
            self.add_member_and_rebalance(request_id, request, member_id, now_ms, effects);
            return None;
        }
        let member_id = request.member_id.clone();
        if let Some(error) = self.validate_member(&member_id, request.group_instance_id.as_deref())
        {
            return Some(JoinResponse::error(member_id, error));
        }
        let (is_leader, unchanged) = match self.members.get_mut(&member_id) {
            Some(member) => {
                member.refresh_session(now_ms);
                (
                    self.leader.as_deref() == Some(member_id.as_str()),
                    member.matches(&request.protocols),
                )
            }
            None => return Some(JoinResponse::error(member_id, UNKNOWN_MEMBER_ID)),
        };
        match self.state {
            GroupState::PreparingRebalance => {}
            // The member probably missed its JoinGroup response: repeat it.
            GroupState::CompletingRebalance if unchanged => {
                return Some(self.current_generation_response(&member_id));
            }
            // The leader's rejoin forces a rebalance: that is how it reacts to changes that
            // do not show in member metadata, such as new partitions.
            GroupState::Stable if unchanged && !is_leader => {
                return Some(self.current_generation_response(&member_id));
            }
            GroupState::CompletingRebalance | GroupState::Stable => {}
            GroupState::Empty | GroupState::Dead => {
                return Some(JoinResponse::error(member_id, UNKNOWN_MEMBER_ID));
            }
        }
        self.park_join(&member_id, request_id, effects);
        if let Some(member) = self.members.get_mut(&member_id) {
            member.update(request);
        }
        self.maybe_prepare_rebalance(now_ms, effects);
        None
    }

    /// Kafka's `addMemberAndRebalance`.
    fn add_member_and_rebalance(
        &mut self,
        request_id: u64,
        request: JoinRequest,
        member_id: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        // Only a group's very first rebalance is stretched by late joiners, as in Kafka.
        if self.state == GroupState::PreparingRebalance && self.generation_id == 0 {
            if let Some(delay) = &mut self.initial_delay {
                delay.new_member_added = true;
            }
        }
        if self.members.is_empty() {
            self.protocol_type = Some(request.protocol_type.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), member_id.clone());
        }
        self.pending_members.remove(&member_id);
        let member = Member::from_request(member_id.clone(), request, request_id, now_ms);
        self.members.insert(member_id, member);
        self.maybe_prepare_rebalance(now_ms, effects);
    }

    /// A known group.instance.id joins without a member id: the restarted static member
    /// takes over its previous incarnation's slot under a new member id (Kafka's
    /// `updateStaticMemberAndRebalance`). Whoever still uses the old member id is fenced.
    fn replace_static_member(
        &mut self,
        request_id: u64,
        request: JoinRequest,
        old_member_id: String,
        new_member_id: String,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Option<JoinResponse> {
        let Some((index, _, mut member)) = self.members.shift_remove_full(&old_member_id) else {
            return Some(JoinResponse::error(String::new(), UNKNOWN_MEMBER_ID));
        };
        answer_pending(&mut member, FENCED_INSTANCE_ID, effects);
        let old_leader = self.leader.clone();
        if old_leader.as_deref() == Some(old_member_id.as_str()) {
            self.leader = Some(new_member_id.clone());
        }
        if let Some(instance) = &request.group_instance_id {
            self.static_members
                .insert(instance.clone(), new_member_id.clone());
        }
        if self.pending_sync.remove(&old_member_id) {
            self.pending_sync.insert(new_member_id.clone());
        }
        let supports_skip_assignment = request.supports_skip_assignment;
        member.member_id = new_member_id.clone();
        member.update(request);
        member.refresh_session(now_ms);
        self.members
            .shift_insert(index, new_member_id.clone(), member);

        // Kafka compares the protocol the group would select, not the member's metadata: a
        // restarted consumer's metadata differs anyway (it no longer lists owned partitions).
        if self.state == GroupState::Stable && self.select_protocol() == self.protocol_name {
            return Some(self.static_rejoin_response(
                &new_member_id,
                old_leader,
                supports_skip_assignment,
            ));
        }
        self.park_join(&new_member_id, request_id, effects);
        // In CompletingRebalance the leader may already have computed an assignment naming
        // the old member id, which would leave the new one without partitions: start over.
        // (Empty cannot occur, a static member being known, and Dead was turned away.)
        if self.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(now_ms, effects);
        }
        None
    }

    /// The answer to a static member that rejoined a Stable group without a rebalance: it
    /// keeps its assignment, which it fetches with SyncGroup.
    fn static_rejoin_response(
        &self,
        member_id: &str,
        old_leader: Option<String>,
        supports_skip_assignment: bool,
    ) -> JoinResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        // A v9+ leader learns it leads (to keep watching metadata) but must not assign: the
        // group is Stable and would ignore a new assignment. Older clients are told the old
        // leader id so they do not consider themselves leader at all.
        let skip_assignment = supports_skip_assignment && is_leader;
        let leader = if supports_skip_assignment {
            self.leader.clone()
        } else {
            old_leader
        };
        JoinResponse {
            error_code: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: leader.unwrap_or_default(),
            skip_assignment,
            member_id: member_id.to_string(),
            members: if skip_assignment {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    /// The current generation as the member's JoinGroup response; the leader gets the members.
    fn current_generation_response(&self, member_id: &str) -> JoinResponse {
        let is_leader = self.leader.as_deref() == Some(member_id);
        JoinResponse {
            error_code: NONE,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: if is_leader {
                self.joined_members()
            } else {
                Vec::new()
            },
        }
    }

    fn joined_members(&self) -> Vec<JoinedMember> {
        let protocol = self.protocol_name.as_deref();
        self.members
            .values()
            .map(|m| JoinedMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(protocol),
            })
            .collect()
    }

    /// Parks a JoinGroup on its member. A JoinGroup it replaces (the client gave up on it and
    /// retried) is answered REBALANCE_IN_PROGRESS, which makes a client still listening retry.
    fn park_join(&mut self, member_id: &str, request_id: u64, effects: &mut Vec<Effect>) {
        if let Some(member) = self.members.get_mut(member_id) {
            if let Some(old) = member.pending_join.replace(request_id) {
                effects.push(Effect::Join {
                    request_id: old,
                    response: JoinResponse::error(member_id.to_string(), REBALANCE_IN_PROGRESS),
                });
            }
        }
    }

    // ---- Rebalance ----

    fn maybe_prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if matches!(
            self.state,
            GroupState::Empty | GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now_ms, effects);
        }
    }

    fn prepare_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being computed is for a generation that will never be Stable.
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
                if let Some(request_id) = member.pending_sync.take() {
                    effects.push(Effect::Sync {
                        request_id,
                        response: SyncResponse::error(REBALANCE_IN_PROGRESS),
                    });
                }
            }
        }
        self.pending_sync.clear();
        self.sync_deadline = None;
        let timeout = self.rebalance_timeout_ms();
        let was_empty = self.state == GroupState::Empty;
        self.state = GroupState::PreparingRebalance;
        if was_empty {
            let delay = self.config.initial_rebalance_delay_ms.max(0);
            self.initial_delay = Some(InitialDelay {
                delay_ms: delay,
                remaining_ms: timeout.saturating_sub(delay).max(0),
                new_member_added: false,
            });
            self.rebalance_deadline = Some(now_ms.saturating_add(delay));
        } else {
            self.initial_delay = None;
            self.rebalance_deadline = Some(now_ms.saturating_add(timeout));
            self.maybe_complete_join(now_ms, effects);
        }
    }

    /// The longest rebalance timeout of the members, at least 1 ms so that a deadline always
    /// lies in the future and `tick` cannot be asked to spin at one instant.
    fn rebalance_timeout_ms(&self) -> i64 {
        let longest = self.members.values().map(|m| m.rebalance_timeout_ms).max();
        i64::from(longest.unwrap_or(0)).max(1)
    }

    /// Ends the join phase early once every member has rejoined and every member id handed
    /// out has been used. An initial rebalance never ends early: its point is to wait.
    fn maybe_complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let all_joined =
            self.members.values().all(Member::is_awaiting_join) && self.pending_members.is_empty();
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay.is_none()
            && all_joined
        {
            self.complete_join(now_ms, effects);
        }
    }

    /// Kafka's `onCompleteJoin`: starts the next generation and answers the parked joins.
    fn complete_join(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        self.initial_delay = None;
        // Dynamic members that did not rejoin are gone. A static member keeps its slot until
        // its session expires, so a quick restart does not cost it its partitions.
        let departed: Vec<String> = self
            .members
            .values()
            .filter(|m| !m.is_awaiting_join() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in departed {
            self.detach_member(&member_id, effects);
        }
        if !self.elect_joined_leader() && !self.members.is_empty() {
            // Only static members that have not rejoined are left: a generation without a
            // leader to assign is useless, so wait for them (or their session expiry).
            self.rebalance_deadline = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));
            return;
        }
        self.rebalance_deadline = None;
        // Wrapping as Kafka's Java int does, rather than panicking after 2^31 rebalances.
        self.generation_id = self.generation_id.wrapping_add(1);
        if self.members.is_empty() {
            self.protocol_name = None;
            self.state = GroupState::Empty;
            return;
        }
        self.protocol_name = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        self.pending_sync = self.members.keys().cloned().collect();
        self.sync_deadline = Some(now_ms.saturating_add(self.rebalance_timeout_ms()));

        let mut parked = Vec::new();
        for member in self.members.values_mut() {
            member.is_new = false;
            member.refresh_session(now_ms);
            if let Some(request_id) = member.pending_join.take() {
                parked.push((request_id, member.member_id.clone()));
            }
        }
        for (request_id, member_id) in parked {
            let response = self.current_generation_response(&member_id);
            effects.push(Effect::Join {
                request_id,
                response,
            });
        }
    }

    /// Keeps the leader if it rejoined, else promotes the first member that did. False if
    /// no member rejoined.
    fn elect_joined_leader(&mut self) -> bool {
        let leader_joined = self
            .leader
            .as_ref()
            .and_then(|leader| self.members.get(leader))
            .is_some_and(Member::is_awaiting_join);
        if leader_joined {
            return true;
        }
        match self.members.values().find(|m| m.is_awaiting_join()) {
            Some(member) => {
                self.leader = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    /// The protocol with the most votes, each member voting for its most preferred protocol
    /// among those all members support (Kafka's `selectProtocol`). Ties, which Kafka breaks
    /// arbitrarily, go to the protocol voted by the earliest member.
    fn select_protocol(&self) -> Option<String> {
        let mut members = self.members.values();
        let first = members.next()?;
        let candidates: HashSet<&str> = first
            .protocols
            .iter()
            .map(|(name, _)| name.as_str())
            .filter(|name| members.clone().all(|m| m.supports(name)))
            .collect();
        let mut votes: IndexMap<&str, usize> = IndexMap::new();
        for vote in self.members.values().filter_map(|m| m.vote(&candidates)) {
            *votes.entry(vote).or_default() += 1;
        }
        let most = votes.values().copied().max()?;
        votes
            .into_iter()
            .find(|&(_, count)| count == most)
            .map(|(name, _)| name.to_string())
    }

    // ---- SyncGroup ----

    pub fn sync(&mut self, request_id: u64, request: SyncRequest, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        if let Some(response) = self.sync_inner(request_id, request, now_ms, &mut effects) {
            effects.push(Effect::Sync {
                request_id,
                response,
            });
        }
        effects
    }

    fn sync_inner(
        &mut self,
        request_id: u64,
        request: SyncRequest,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> Option<SyncResponse> {
        let member_id = request.member_id.as_str();
        if let Some(error) = self.validate_member_generation(
            member_id,
            request.group_instance_id.as_deref(),
            request.generation_id,
        ) {
            return Some(SyncResponse::error(error));
        }
        let inconsistent =
            |asked: &Option<String>, actual: &Option<String>| asked.is_some() && asked != actual;
        if inconsistent(&request.protocol_type, &self.protocol_type)
            || inconsistent(&request.protocol_name, &self.protocol_name)
        {
            return Some(SyncResponse::error(INCONSISTENT_GROUP_PROTOCOL));
        }
        let error = match self.state {
            GroupState::Empty => UNKNOWN_MEMBER_ID,
            GroupState::Dead => COORDINATOR_NOT_AVAILABLE,
            // The member must rejoin first; its generation is about to end.
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        };
        if error != NONE {
            return Some(SyncResponse::error(error));
        }
        let Some(member) = self.members.get_mut(member_id) else {
            return Some(SyncResponse::error(UNKNOWN_MEMBER_ID));
        };
        member.refresh_session(now_ms);
        let stable_assignment =
            (self.state == GroupState::Stable).then(|| member.assignment.clone());
        if stable_assignment.is_none() {
            // Parked until the leader's assignment arrives. A SyncGroup this one replaces
            // (the client gave up on it) is answered like a superseded JoinGroup.
            if let Some(old) = member.pending_sync.replace(request_id) {
                effects.push(Effect::Sync {
                    request_id: old,
                    response: SyncResponse::error(REBALANCE_IN_PROGRESS),
                });
            }
        }
        self.mark_synced(member_id);
        match stable_assignment {
            Some(assignment) => Some(SyncResponse {
                error_code: NONE,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                assignment,
            }),
            None => {
                if self.leader.as_deref() == Some(member_id) {
                    self.apply_assignment(request.assignments, now_ms, effects);
                }
                None
            }
        }
    }

    fn mark_synced(&mut self, member_id: &str) {
        self.pending_sync.remove(member_id);
        if self.pending_sync.is_empty() {
            self.sync_deadline = None;
        }
    }

    /// Stores the leader's assignment (members it left out get an empty one, ids it made up
    /// are ignored), answers the parked syncs, and makes the group Stable.
    fn apply_assignment(
        &mut self,
        assignments: Vec<(String, Bytes)>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
        for member in self.members.values_mut() {
            member.assignment = assignments.remove(&member.member_id).unwrap_or_default();
            if let Some(request_id) = member.pending_sync.take() {
                member.refresh_session(now_ms);
                effects.push(Effect::Sync {
                    request_id,
                    response: SyncResponse {
                        error_code: NONE,
                        protocol_type: self.protocol_type.clone(),
                        protocol_name: self.protocol_name.clone(),
                        assignment: member.assignment.clone(),
                    },
                });
            }
        }
        self.state = GroupState::Stable;
    }

    // ---- Heartbeat, LeaveGroup, offset commits ----

    pub fn heartbeat(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> i16 {
        if let Some(error) =
            self.validate_member_generation(member_id, group_instance_id, generation_id)
        {
            return error;
        }
        let code = match self.state {
            GroupState::Empty => return UNKNOWN_MEMBER_ID,
            GroupState::Dead => return COORDINATOR_NOT_AVAILABLE,
            // Tells the member to rejoin.
            GroupState::PreparingRebalance => REBALANCE_IN_PROGRESS,
            // A member may heartbeat between its JoinGroup and SyncGroup responses.
            GroupState::CompletingRebalance | GroupState::Stable => NONE,
        };
        if let Some(member) = self.members.get_mut(member_id) {
            member.refresh_session(now_ms);
        }
        code
    }

    /// LeaveGroup: `(member id, group instance id)` per leaving member; a member id may be
    /// empty when the instance id names the member (administrative removal). Returns an
    /// error code per member, in order, and the requests the departures completed.
    pub fn leave(
        &mut self,
        members: &[(String, Option<String>)],
        now_ms: i64,
    ) -> (Vec<i16>, Vec<Effect>) {
        let mut effects = Vec::new();
        let codes = members
            .iter()
            .map(|(member_id, instance)| {
                self.leave_one(member_id, instance.as_deref(), now_ms, &mut effects)
            })
            .collect();
        (codes, effects)
    }

    fn leave_one(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if member_id.is_empty() {
            let current = group_instance_id
                .and_then(|i| self.static_members.get(i))
                .cloned();
            return match current {
                Some(current) => {
                    self.remove_member_and_update(&current, now_ms, effects);
                    NONE
                }
                None => UNKNOWN_MEMBER_ID,
            };
        }
        if self.pending_members.remove(member_id).is_some() {
            self.maybe_complete_join(now_ms, effects);
            return NONE;
        }
        if let Some(error) = self.validate_member(member_id, group_instance_id) {
            return error;
        }
        self.remove_member_and_update(member_id, now_ms, effects);
        NONE
    }

    /// OffsetCommit: whether the committer may commit for this group. Generation -1 with
    /// neither member nor instance id is a simple consumer or admin client, allowed only while
    /// the group is Empty. A valid member's commit refreshes its session.
    pub fn validate_offset_commit(
        &mut self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
        now_ms: i64,
    ) -> i16 {
        if self.state == GroupState::Dead {
            return COORDINATOR_NOT_AVAILABLE;
        }
        if generation_id < 0 && member_id.is_empty() && group_instance_id.is_none() {
            return if self.state == GroupState::Empty {
                NONE
            } else {
                UNKNOWN_MEMBER_ID
            };
        }
        if let Some(error) =
            self.validate_member_generation(member_id, group_instance_id, generation_id)
        {
            return error;
        }
        match self.state {
            // The member has its generation but not its assignment yet: committing now could
            // be for partitions it is about to lose.
            GroupState::CompletingRebalance => REBALANCE_IN_PROGRESS,
            // Commits are still allowed while preparing: the heartbeat tells the member to rejoin.
            _ => {
                if let Some(member) = self.members.get_mut(member_id) {
                    member.refresh_session(now_ms);
                }
                NONE
            }
        }
    }

    /// Kafka's `validateCurrentMember`: with an instance id, it must map to this member id
    /// (another one means a newer incarnation fenced this one); without, the member must exist.
    fn validate_member(&self, member_id: &str, group_instance_id: Option<&str>) -> Option<i16> {
        match group_instance_id {
            Some(instance) => match self.static_members.get(instance) {
                Some(current) if current != member_id => Some(FENCED_INSTANCE_ID),
                Some(_) if self.members.contains_key(member_id) => None,
                _ => Some(UNKNOWN_MEMBER_ID),
            },
            None if self.members.contains_key(member_id) => None,
            None => Some(UNKNOWN_MEMBER_ID),
        }
    }

    fn validate_member_generation(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation_id: i32,
    ) -> Option<i16> {
        if self.state == GroupState::Dead {
            return Some(COORDINATOR_NOT_AVAILABLE);
        }
        self.validate_member(member_id, group_instance_id)
            .or_else(|| (generation_id != self.generation_id).then_some(ILLEGAL_GENERATION))
    }

    // ---- Time ----

    /// Applies every deadline up to `now_ms`: lapsed member ids from MEMBER_ID_REQUIRED,
    /// expired sessions, members that never sent SyncGroup, and the end of the join phase.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.expire_pending_members(now_ms, &mut effects);
        self.expire_sessions(now_ms, &mut effects);
        self.expire_pending_sync(now_ms, &mut effects);
        self.expire_rebalance(now_ms, &mut effects);
        effects
    }

    fn expire_pending_members(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let before = self.pending_members.len();
        self.pending_members
            .retain(|_, deadline| *deadline > now_ms);
        if self.pending_members.len() != before {
            self.maybe_complete_join(now_ms, effects);
        }
    }

    fn expire_sessions(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline().is_some_and(|d| d <= now_ms))
            .map(|m| m.member_id.clone())
            .collect();
        for member_id in expired {
            // An earlier removal may have completed a rebalance, which restarts sessions.
            let still_expired = self
                .members
                .get(&member_id)
                .and_then(Member::session_deadline)
                .is_some_and(|d| d <= now_ms);
            if still_expired {
                self.remove_member_and_update(&member_id, now_ms, effects);
            }
        }
    }

    /// Members that got a generation but never asked for their assignment are removed, so a
    /// member that crashed between JoinGroup and SyncGroup cannot hold its partitions idle.
    fn expire_pending_sync(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let Some(deadline) = self.sync_deadline else {
            return;
        };
        if deadline > now_ms {
            return;
        }
        self.sync_deadline = None;
        let stalled: Vec<String> = self.pending_sync.drain().collect();
        let syncing = matches!(
            self.state,
            GroupState::CompletingRebalance | GroupState::Stable
        );
        if stalled.is_empty() || !syncing {
            return;
        }
        for member_id in &stalled {
            self.detach_member(member_id, effects);
        }
        self.prepare_rebalance(now_ms, effects);
    }

    fn expire_rebalance(&mut self, now_ms: i64, effects: &mut Vec<Effect>) {
        let due = self.rebalance_deadline.is_some_and(|d| d <= now_ms);
        if self.state != GroupState::PreparingRebalance || !due {
            return;
        }
        match &mut self.initial_delay {
            Some(delay) if delay.new_member_added && delay.remaining_ms != 0 => {
                // Members are still arriving: wait one more delay, within the rebalance timeout.
                let next = self
                    .config
                    .initial_rebalance_delay_ms
                    .min(delay.remaining_ms)
                    .max(0);
                delay.remaining_ms = delay.remaining_ms.saturating_sub(delay.delay_ms).max(0);
                delay.delay_ms = next;
                delay.new_member_added = false;
                self.rebalance_deadline = Some(now_ms.saturating_add(next));
            }
            _ => self.complete_join(now_ms, effects),
        }
    }

    // ---- Removal and lifecycle ----

    /// Removes a member and moves the group on: a rebalance, or the end of the current one.
    fn remove_member_and_update(
        &mut self,
        member_id: &str,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        if !self.detach_member(member_id, effects) {
            return;
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now_ms, effects)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(now_ms, effects),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// Removes a member, answering what it had parked with UNKNOWN_MEMBER_ID (a client still
    /// waiting rejoins as a new member). False if there was no such member.
    fn detach_member(&mut self, member_id: &str, effects: &mut Vec<Effect>) -> bool {
        let Some(mut member) = self.members.shift_remove(member_id) else {
            return false;
        };
        answer_pending(&mut member, UNKNOWN_MEMBER_ID, effects);
        if let Some(instance) = &member.group_instance_id {
            if self.static_members.get(instance).map(String::as_str) == Some(member_id) {
                self.static_members.remove(instance);
            }
        }
        self.mark_synced(member_id);
        if self.leader.as_deref() == Some(member_id) {
            self.leader = self.members.keys().next().cloned();
        }
        true
    }

    /// DeleteGroups: only an Empty group can be deleted. Returns the error code.
    pub fn delete(&mut self) -> i16 {
        match self.state {
            GroupState::Dead => GROUP_ID_NOT_FOUND,
            GroupState::Empty => {
                self.pending_members.clear();
                self.state = GroupState::Dead;
                NONE
            }
            _ => NON_EMPTY_GROUP,
        }
    }
}

/// Answers a member's parked JoinGroup and SyncGroup with an error.
fn answer_pending(member: &mut Member, error_code: i16, effects: &mut Vec<Effect>) {
    if let Some(request_id) = member.pending_join.take() {
        // Kafka gives back an empty member id with UNKNOWN_MEMBER_ID (rejoin as new), and the
        // id concerned with other errors.
        let member_id = if error_code == UNKNOWN_MEMBER_ID {
            String::new()
        } else {
            member.member_id.clone()
        };
        effects.push(Effect::Join {
            request_id,
            response: JoinResponse::error(member_id, error_code),
        });
    }
    if let Some(request_id) = member.pending_sync.take() {
        effects.push(Effect::Sync {
            request_id,
            response: SyncResponse::error(error_code),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: i32 = 10_000;
    const REBALANCE: i32 = 30_000;
    const DELAY: i64 = 3_000;

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: DELAY,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 60_000,
            max_size: 10,
        }
    }

    fn protocols(names: &[&str], client: &str) -> Vec<(String, Bytes)> {
        names
            .iter()
            .map(|name| (name.to_string(), Bytes::from(format!("{client}:{name}"))))
            .collect()
    }

    /// A dynamic consumer's first JoinGroup, v3 style (no MEMBER_ID_REQUIRED).
    fn join_req(client: &str) -> JoinRequest {
        JoinRequest {
            member_id: String::new(),
            group_instance_id: None,
            client_id: client.to_string(),
            client_host: "/127.0.0.1".to_string(),
            session_timeout_ms: SESSION,
            rebalance_timeout_ms: REBALANCE,
            protocol_type: "consumer".to_string(),
            protocols: protocols(&["range"], client),
            require_known_member_id: false,
            supports_skip_assignment: false,
            reason: None,
        }
    }

    fn rejoin_req(client: &str, member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.to_string(),
            ..join_req(client)
        }
    }

    fn static_req(client: &str, instance: &str) -> JoinRequest {
        JoinRequest {
            group_instance_id: Some(instance.to_string()),
            ..join_req(client)
        }
    }

    fn sync_req(member_id: &str, generation_id: i32) -> SyncRequest {
        SyncRequest {
            member_id: member_id.to_string(),
            group_instance_id: None,
            generation_id,
            protocol_type: Some("consumer".to_string()),
            protocol_name: Some("range".to_string()),
            assignments: Vec::new(),
        }
    }

    /// Drives a group with a clock and checks that every request is answered exactly once.
    struct Harness {
        group: ClassicGroup,
        now: i64,
        next_request_id: u64,
        outstanding: HashSet<u64>,
        joins: HashMap<u64, JoinResponse>,
        syncs: HashMap<u64, SyncResponse>,
    }

    impl Harness {
        fn new() -> Self {
            Self::with_config(config())
        }

        fn with_config(config: GroupConfig) -> Self {
            Self {
                group: ClassicGroup::new("g".to_string(), config),
                now: 1_000_000,
                next_request_id: 1,
                outstanding: HashSet::new(),
                joins: HashMap::new(),
                syncs: HashMap::new(),
            }
        }

        fn absorb(&mut self, effects: Vec<Effect>) {
            for effect in effects {
                let id = effect.request_id();
                assert!(self.outstanding.remove(&id), "request {id} answered twice");
                match effect {
                    Effect::Join { response, .. } => self.joins.insert(id, response),
                    Effect::Sync { .. } if self.joins.contains_key(&id) => unreachable!(),
                    Effect::Sync { response, .. } => {
                        assert!(self.syncs.insert(id, response).is_none());
                        None
                    }
                };
            }
            check_invariants(&self.group, &self.outstanding);
        }

        fn new_request(&mut self) -> u64 {
            let id = self.next_request_id;
            self.next_request_id += 1;
            self.outstanding.insert(id);
            id
        }

        fn join(&mut self, request: JoinRequest) -> u64 {
            let id = self.new_request();
            let effects = self.group.join(id, request, self.now);
            self.absorb(effects);
            id
        }

        fn sync(&mut self, request: SyncRequest) -> u64 {
            let id = self.new_request();
            let effects = self.group.sync(id, request, self.now);
            self.absorb(effects);
            id
        }

        fn leave(&mut self, members: &[(&str, Option<&str>)]) -> Vec<i16> {
            let members: Vec<(String, Option<String>)> = members
                .iter()
                .map(|(m, i)| (m.to_string(), i.map(str::to_string)))
                .collect();
            let (codes, effects) = self.group.leave(&members, self.now);
            self.absorb(effects);
            codes
        }

        fn heartbeat(&mut self, member_id: &str, generation_id: i32) -> i16 {
            self.group
                .heartbeat(member_id, None, generation_id, self.now)
        }

        /// Moves the clock forward, ticking at every deadline on the way, as the shard would.
        fn advance(&mut self, ms: i64) {
            let target = self.now + ms;
            for _ in 0..10_000 {
                match self.group.next_deadline() {
                    Some(deadline) if deadline <= target => {
                        self.now = self.now.max(deadline);
                        let effects = self.group.tick(self.now);
                        self.absorb(effects);
                    }
                    _ => break,
                }
            }
            self.now = target;
            let effects = self.group.tick(self.now);
            self.absorb(effects);
        }

        /// Waits out an initial rebalance: each member joining during a delay extends it.
        fn settle(&mut self) {
            for _ in 0..10 {
                if self.group.state() != GroupState::PreparingRebalance {
                    return;
                }
                self.advance(DELAY);
            }
            panic!("the initial rebalance does not end");
        }

        /// Lets every member expire; afterwards nothing may be left unanswered.
        fn drain(&mut self) {
            for _ in 0..1_000 {
                if self.group.next_deadline().is_none() {
                    break;
                }
                self.advance(600_000);
            }
            assert!(
                self.outstanding.is_empty(),
                "unanswered: {:?}",
                self.outstanding
            );
            assert!(self.group.next_deadline().is_none());
        }

        fn joined(&self, request_id: u64) -> &JoinResponse {
            self.joins
                .get(&request_id)
                .unwrap_or_else(|| panic!("join {request_id} not answered"))
        }

        fn synced(&self, request_id: u64) -> &SyncResponse {
            self.syncs
                .get(&request_id)
                .unwrap_or_else(|| panic!("sync {request_id} not answered"))
        }

        fn is_pending(&self, request_id: u64) -> bool {
            self.outstanding.contains(&request_id)
        }

        /// Joins `clients` together (one initial rebalance) and syncs them: a Stable group
        /// whose first client leads. Returns the member ids in client order.
        fn stable_group(&mut self, clients: &[&str]) -> Vec<String> {
            let requests: Vec<u64> = clients.iter().map(|c| self.join(join_req(c))).collect();
            self.settle();
            let ids: Vec<String> = requests
                .iter()
                .map(|r| self.joined(*r).member_id.clone())
                .collect();
            self.sync_all(&ids);
            ids
        }

        /// Syncs every member of the current generation, the leader last, with an assignment
        /// naming each member.
        fn sync_all(&mut self, ids: &[String]) {
            let generation = self.group.generation_id();
            let leader = self.group.leader().unwrap().to_string();
            let followers: Vec<u64> = ids
                .iter()
                .filter(|id| **id != leader)
                .map(|id| self.sync(sync_req(id, generation)))
                .collect();
            let assignments = ids
                .iter()
                .map(|id| (id.clone(), Bytes::from(format!("assigned:{id}"))))
                .collect();
            let leader_sync = self.sync(SyncRequest {
                assignments,
                ..sync_req(&leader, generation)
            });
            for request in followers.into_iter().chain([leader_sync]) {
                assert_eq!(self.synced(request).error_code, NONE);
            }
            assert_eq!(self.group.state(), GroupState::Stable);
        }
    }

    /// Structural invariants, and above all: every unanswered request is parked on exactly
    /// one member, so it will be answered when that member's fate is decided.
    fn check_invariants(group: &ClassicGroup, outstanding: &HashSet<u64>) {
        let mut parked = HashSet::new();
        for member in group.members.values() {
            for id in member.pending_join.iter().chain(member.pending_sync.iter()) {
                assert!(parked.insert(*id), "request {id} parked twice");
            }
            if member.pending_join.is_some() {
                assert_eq!(group.state, GroupState::PreparingRebalance);
            }
            if member.pending_sync.is_some() {
                assert_eq!(group.state, GroupState::CompletingRebalance);
            }
            if let Some(instance) = &member.group_instance_id {
                assert_eq!(group.static_members.get(instance), Some(&member.member_id));
            }
        }
        assert_eq!(
            &parked, outstanding,
            "parked requests vs unanswered requests"
        );
        for (instance, member_id) in &group.static_members {
            let member = group.members.get(member_id).expect("static member exists");
            assert_eq!(member.group_instance_id.as_ref(), Some(instance));
        }
        match &group.leader {
            Some(leader) => assert!(group.members.contains_key(leader)),
            None => assert!(group.members.is_empty()),
        }
        assert!(group
            .pending_sync
            .iter()
            .all(|m| group.members.contains_key(m)));
        if group.state == GroupState::Empty {
            assert!(group.members.is_empty());
            assert!(group.protocol_name.is_none());
        }
        if group.members.is_empty() && group.state != GroupState::Dead {
            assert!(matches!(
                group.state,
                GroupState::Empty | GroupState::PreparingRebalance
            ));
        }
        if matches!(
            group.state,
            GroupState::CompletingRebalance | GroupState::Stable
        ) {
            assert!(group.protocol_name.is_some());
        }
    }

    #[test]
    fn error_codes_match_kafka() {
        use kafka_protocol::error::ResponseError as E;
        let pairs = [
            (COORDINATOR_NOT_AVAILABLE, E::CoordinatorNotAvailable),
            (NOT_COORDINATOR, E::NotCoordinator),
            (ILLEGAL_GENERATION, E::IllegalGeneration),
            (INCONSISTENT_GROUP_PROTOCOL, E::InconsistentGroupProtocol),
            (UNKNOWN_MEMBER_ID, E::UnknownMemberId),
            (INVALID_SESSION_TIMEOUT, E::InvalidSessionTimeout),
            (REBALANCE_IN_PROGRESS, E::RebalanceInProgress),
            (NON_EMPTY_GROUP, E::NonEmptyGroup),
            (GROUP_ID_NOT_FOUND, E::GroupIdNotFound),
            (MEMBER_ID_REQUIRED, E::MemberIdRequired),
            (GROUP_MAX_SIZE_REACHED, E::GroupMaxSizeReached),
            (FENCED_INSTANCE_ID, E::FencedInstanceId),
        ];
        for (ours, kafka) in pairs {
            assert_eq!(ours, kafka.code(), "{kafka:?}");
        }
    }

    #[test]
    fn member_id_required_then_join() {
        let mut h = Harness::new();
        let first = h.join(JoinRequest {
            require_known_member_id: true,
            ..join_req("c1")
        });
        let response = h.joined(first).clone();
        assert_eq!(response.error_code, MEMBER_ID_REQUIRED);
        assert_eq!(response.generation_id, NO_GENERATION);
        assert!(response.member_id.starts_with("c1-"));
        assert_eq!(h.group.state(), GroupState::Empty);

        let second = h.join(JoinRequest {
            require_known_member_id: true,
            ..rejoin_req("c1", &response.member_id)
        });
        assert!(h.is_pending(second));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        h.settle();
        let joined = h.joined(second);
        assert_eq!(joined.error_code, NONE);
        assert_eq!(joined.generation_id, 1);
        assert_eq!(joined.member_id, response.member_id);
        assert_eq!(joined.leader, response.member_id);
        assert_eq!(joined.protocol_name.as_deref(), Some("range"));
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        h.drain();
    }

    #[test]
    fn unknown_member_id_invalid_session_timeout_and_max_size() {
        let mut h = Harness::with_config(GroupConfig {
            max_size: 2,
            ..config()
        });
        let unknown = h.join(rejoin_req("c1", "made-up"));
        assert_eq!(h.joined(unknown).error_code, UNKNOWN_MEMBER_ID);
        let too_short = h.join(JoinRequest {
            session_timeout_ms: 999,
            ..join_req("c1")
        });
        assert_eq!(h.joined(too_short).error_code, INVALID_SESSION_TIMEOUT);
        let too_long = h.join(JoinRequest {
            session_timeout_ms: 60_001,
            ..join_req("c1")
        });
        assert_eq!(h.joined(too_long).error_code, INVALID_SESSION_TIMEOUT);

        let a = h.join(join_req("a"));
        let b = h.join(join_req("b"));
        let c = h.join(join_req("c"));
        assert_eq!(h.joined(c).error_code, GROUP_MAX_SIZE_REACHED);
        h.settle();
        assert_eq!(h.joined(a).generation_id, 1);
        assert_eq!(h.joined(b).generation_id, 1);
        assert_eq!(h.group.num_members(), 2);
        let d = h.join(join_req("d"));
        assert_eq!(h.joined(d).error_code, GROUP_MAX_SIZE_REACHED);
        h.drain();
    }

    #[test]
    fn initial_delay_puts_members_starting_together_in_one_generation() {
        let mut h = Harness::new();
        let a = h.join(join_req("a"));
        h.advance(2_000);
        let b = h.join(join_req("b"));
        // b joined within the first delay, which is therefore extended by another delay.
        h.advance(1_000);
        assert!(h.is_pending(a) && h.is_pending(b));
        h.advance(DELAY - 1);
        assert!(h.is_pending(a));
        h.advance(1);
        let (a, b) = (h.joined(a), h.joined(b));
        assert_eq!((a.generation_id, b.generation_id), (1, 1));
        assert_eq!(a.leader, a.member_id);
        assert_eq!(b.leader, a.member_id);
        h.drain();
    }

    #[test]
    fn initial_delay_extensions_stop_at_the_rebalance_timeout() {
        let mut h = Harness::new();
        let short = |client: &str| JoinRequest {
            rebalance_timeout_ms: 5_000,
            ..join_req(client)
        };
        let a = h.join(short("a"));
        h.advance(1_000);
        h.join(short("b"));
        h.advance(2_000); // first delay over, extended by min(delay, 5000 - 3000)
        h.advance(1_000);
        h.join(short("c")); // would extend again, but no time is left
        assert!(h.is_pending(a));
        h.advance(1_000);
        assert_eq!(h.joined(a).generation_id, 1);
        assert_eq!(h.joined(a).members.len(), 3);
        h.drain();
    }

    #[test]
    fn third_member_triggers_rebalance_and_everyone_gets_the_new_generation() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        let (a, b) = (&ids[0], &ids[1]);
        assert_eq!(h.group.generation_id(), 1);

        let c = h.join(join_req("c"));
        assert!(h.is_pending(c));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.heartbeat(a, 1), REBALANCE_IN_PROGRESS);
        assert_eq!(h.heartbeat(b, 1), REBALANCE_IN_PROGRESS);
        let rejoin_b = h.join(rejoin_req("b", b));
        assert!(h.is_pending(rejoin_b));
        // The last known member rejoining completes the join phase at once.
        let rejoin_a = h.join(rejoin_req("a", a));

        let leader = h.joined(rejoin_a).clone();
        assert_eq!(leader.generation_id, 2);
        assert_eq!(
            &leader.leader, a,
            "the old leader rejoined and stays leader"
        );
        let listed: Vec<&str> = leader
            .members
            .iter()
            .map(|m| m.member_id.as_str())
            .collect();
        let c_id = h.joined(c).member_id.clone();
        assert_eq!(listed, [a.as_str(), b.as_str(), c_id.as_str()]);
        assert_eq!(leader.members[1].metadata, Bytes::from("b:range"));
        for follower in [rejoin_b, c] {
            let response = h.joined(follower);
            assert_eq!(response.error_code, NONE);
            assert_eq!(response.generation_id, 2);
            assert_eq!(&response.leader, a);
            assert!(response.members.is_empty());
        }
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        h.drain();
    }

    #[test]
    fn followers_wait_for_the_leader_assignment() {
        let mut h = Harness::new();
        let a = h.join(join_req("a"));
        let b = h.join(join_req("b"));
        let c = h.join(join_req("c"));
        h.settle();
        let [a, b, c] = [a, b, c].map(|r| h.joined(r).member_id.clone());

        let sync_b = h.sync(sync_req(&b, 1));
        assert!(h.is_pending(sync_b));
        assert_eq!(h.heartbeat(&b, 1), NONE);
        let sync_a = h.sync(SyncRequest {
            assignments: vec![
                (a.clone(), Bytes::from("pa")),
                (b.clone(), Bytes::from("pb")),
                ("stranger".to_string(), Bytes::from("px")),
            ],
            ..sync_req(&a, 1)
        });
        assert_eq!(h.group.state(), GroupState::Stable);
        assert_eq!(h.synced(sync_a).assignment, Bytes::from("pa"));
        assert_eq!(h.synced(sync_b).assignment, Bytes::from("pb"));
        assert_eq!(h.synced(sync_b).protocol_name.as_deref(), Some("range"));
        // c was left out by the leader: it gets an empty assignment, straight away now.
        let sync_c = h.sync(sync_req(&c, 1));
        assert_eq!(h.synced(sync_c).error_code, NONE);
        assert!(h.synced(sync_c).assignment.is_empty());
        let again = h.sync(sync_req(&b, 1));
        assert_eq!(h.synced(again).assignment, Bytes::from("pb"));
        let described: Vec<Bytes> = h.group.members().map(|m| m.assignment).collect();
        assert_eq!(
            described,
            [Bytes::from("pa"), Bytes::from("pb"), Bytes::new()]
        );
        h.drain();
    }

    #[test]
    fn sync_errors() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        let cases = [
            (sync_req(&ids[0], 0), ILLEGAL_GENERATION),
            (sync_req("stranger", 1), UNKNOWN_MEMBER_ID),
            (
                SyncRequest {
                    protocol_name: Some("roundrobin".to_string()),
                    ..sync_req(&ids[0], 1)
                },
                INCONSISTENT_GROUP_PROTOCOL,
            ),
            (
                SyncRequest {
                    protocol_type: Some("connect".to_string()),
                    ..sync_req(&ids[0], 1)
                },
                INCONSISTENT_GROUP_PROTOCOL,
            ),
        ];
        for (request, expected) in cases {
            let id = h.sync(request);
            assert_eq!(h.synced(id).error_code, expected);
        }
        h.join(join_req("c"));
        let during_rebalance = h.sync(sync_req(&ids[1], 1));
        assert_eq!(h.synced(during_rebalance).error_code, REBALANCE_IN_PROGRESS);
        h.drain();
    }

    #[test]
    fn a_new_rebalance_fails_parked_syncs() {
        let mut h = Harness::new();
        let a = h.join(join_req("a"));
        let b = h.join(join_req("b"));
        h.settle();
        let b_id = h.joined(b).member_id.clone();
        let sync_b = h.sync(sync_req(&b_id, 1));
        assert!(h.is_pending(sync_b));
        // b rejoins with new metadata before the leader synced: generation 1 is abandoned.
        let rejoin = h.join(JoinRequest {
            protocols: protocols(&["range"], "b-changed"),
            ..rejoin_req("b", &b_id)
        });
        assert_eq!(h.synced(sync_b).error_code, REBALANCE_IN_PROGRESS);
        assert!(h.is_pending(rejoin));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let a_id = h.joined(a).member_id.clone();
        h.join(rejoin_req("a", &a_id));
        assert_eq!(h.joined(rejoin).generation_id, 2);
        h.drain();
    }

    #[test]
    fn heartbeat_errors() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        assert_eq!(h.heartbeat(&ids[0], 1), NONE);
        assert_eq!(h.heartbeat("stranger", 1), UNKNOWN_MEMBER_ID);
        assert_eq!(h.heartbeat(&ids[0], 0), ILLEGAL_GENERATION);
        assert_eq!(h.heartbeat(&ids[0], 2), ILLEGAL_GENERATION);
        h.join(join_req("c"));
        assert_eq!(h.heartbeat(&ids[1], 1), REBALANCE_IN_PROGRESS);
        h.drain();
    }

    #[test]
    fn expired_session_removes_member_and_rebalances() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        // Only a heartbeats.
        h.advance(i64::from(SESSION) / 2);
        assert_eq!(h.heartbeat(&ids[0], 1), NONE);
        h.advance(i64::from(SESSION) / 2 - 1);
        assert_eq!(h.group.state(), GroupState::Stable);
        h.advance(1);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.num_members(), 1);
        assert_eq!(h.heartbeat(&ids[1], 1), UNKNOWN_MEMBER_ID);
        assert_eq!(h.heartbeat(&ids[0], 1), REBALANCE_IN_PROGRESS);
        let rejoin = h.join(rejoin_req("a", &ids[0]));
        let response = h.joined(rejoin);
        assert_eq!(response.generation_id, 2);
        assert_eq!(response.members.len(), 1);

        // The last member expiring leaves the group Empty.
        h.advance(i64::from(REBALANCE) + i64::from(SESSION));
        assert_eq!(h.group.state(), GroupState::Empty);
        assert_eq!(h.group.generation_id(), 3);
        h.drain();
    }

    #[test]
    fn rebalance_timeout_removes_members_that_did_not_rejoin() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        let c = h.join(join_req("c"));
        let rejoin_a = h.join(rejoin_req("a", &ids[0]));
        // b keeps heartbeating but never rejoins.
        for _ in 0..5 {
            h.advance(5_000);
            assert_eq!(h.heartbeat(&ids[1], 1), REBALANCE_IN_PROGRESS);
        }
        assert!(h.is_pending(c));
        h.advance(5_000);
        assert_eq!(h.heartbeat(&ids[1], 1), UNKNOWN_MEMBER_ID);
        let leader = h.joined(rejoin_a);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(leader.members.len(), 2);
        assert_eq!(h.joined(c).generation_id, 2);
        h.drain();
    }

    #[test]
    fn leader_that_does_not_rejoin_is_replaced() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        h.join(join_req("c"));
        let rejoin_b = h.join(rejoin_req("b", &ids[1]));
        h.advance(i64::from(REBALANCE));
        let response = h.joined(rejoin_b);
        assert_eq!(response.leader, ids[1]);
        assert_eq!(response.members.len(), 2);
        h.drain();
    }

    #[test]
    fn batched_leave_rebalances_and_answers_parked_requests() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b", "c"]);
        let (a, b, c) = (&ids[0], &ids[1], &ids[2]);
        let d = h.join(join_req("d"));
        let rejoin_a = h.join(rejoin_req("a", a));
        let codes = h.leave(&[
            (a, None),
            ("stranger", None),
            ("", Some("no-such-instance")),
            (b, None),
        ]);
        assert_eq!(codes, [NONE, UNKNOWN_MEMBER_ID, UNKNOWN_MEMBER_ID, NONE]);
        // a's parked join is answered as it leaves; the rebalance still waits for c.
        assert_eq!(h.joined(rejoin_a).error_code, UNKNOWN_MEMBER_ID);
        assert!(h.is_pending(d));
        let rejoin_c = h.join(rejoin_req("c", c));
        let leader = h.joined(rejoin_c);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(&leader.leader, c);
        assert_eq!(leader.members.len(), 2);
        assert_eq!(h.joined(d).generation_id, 2);

        // Leaving while a SyncGroup is parked answers it too; the others are told to rejoin.
        let d_id = h.joined(d).member_id.clone();
        let sync_d = h.sync(sync_req(&d_id, 2));
        assert_eq!(h.leave(&[(&d_id, None)]), [NONE]);
        assert_eq!(h.synced(sync_d).error_code, UNKNOWN_MEMBER_ID);
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        h.drain();
    }

    #[test]
    fn group_becomes_empty_when_everyone_leaves() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        assert_eq!(h.leave(&[(&ids[0], None), (&ids[1], None)]), [NONE, NONE]);
        assert_eq!(h.group.state(), GroupState::Empty);
        assert!(h.group.is_empty());
        assert_eq!(h.group.generation_id(), 2);
        assert_eq!(h.group.leader(), None);
        assert_eq!(h.group.protocol_name(), None);
        assert_eq!(h.group.protocol_type(), Some("consumer"));
        assert_eq!(h.group.next_deadline(), None);
        assert_eq!(h.group.members().count(), 0);

        // An empty group accepts any protocol type again.
        let connect = h.join(JoinRequest {
            protocol_type: "connect".to_string(),
            ..join_req("w")
        });
        h.settle();
        assert_eq!(h.joined(connect).generation_id, 3);
        assert_eq!(h.group.protocol_type(), Some("connect"));
        h.drain();
    }

    #[test]
    fn leaving_a_pending_member_id_lets_the_rebalance_finish() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a"]);
        let required = h.join(JoinRequest {
            require_known_member_id: true,
            ..join_req("b")
        });
        let pending_id = h.joined(required).member_id.clone();
        let rejoin = h.join(rejoin_req("a", &ids[0]));
        // The leader's rejoin starts a rebalance, which waits for the member id handed out.
        assert!(h.is_pending(rejoin));
        assert_eq!(h.leave(&[(&pending_id, None)]), [NONE]);
        assert_eq!(h.joined(rejoin).generation_id, 2);
        h.drain();
    }

    #[test]
    fn unused_pending_member_id_lapses_after_its_session_timeout() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a"]);
        let required = h.join(JoinRequest {
            require_known_member_id: true,
            ..join_req("b")
        });
        let pending_id = h.joined(required).member_id.clone();
        let rejoin = h.join(rejoin_req("a", &ids[0]));
        h.advance(i64::from(SESSION) - 1);
        assert!(h.is_pending(rejoin));
        h.advance(1);
        assert_eq!(h.joined(rejoin).generation_id, 2);
        let late = h.join(rejoin_req("b", &pending_id));
        assert_eq!(h.joined(late).error_code, UNKNOWN_MEMBER_ID);
        h.drain();
    }

    #[test]
    fn known_member_rejoin_in_stable_group() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        // A follower with unchanged metadata just gets the current generation back.
        let same = h.join(rejoin_req("b", &ids[1]));
        let response = h.joined(same);
        assert_eq!(response.generation_id, 1);
        assert_eq!(response.leader, ids[0]);
        assert!(response.members.is_empty());
        assert_eq!(h.group.state(), GroupState::Stable);

        // Changed metadata forces a rebalance.
        let changed = h.join(JoinRequest {
            protocols: protocols(&["range"], "b-new-subscription"),
            ..rejoin_req("b", &ids[1])
        });
        assert!(h.is_pending(changed));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        let a = h.join(rejoin_req("a", &ids[0]));
        assert_eq!(h.joined(a).generation_id, 2);
        h.sync_all(&ids);

        // So does the leader rejoining, even unchanged (e.g. it saw new partitions).
        let leader = h.join(rejoin_req("a", &ids[0]));
        assert!(h.is_pending(leader));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        h.drain();
    }

    #[test]
    fn rejoin_during_completing_rebalance_repeats_the_generation() {
        let mut h = Harness::new();
        let a = h.join(join_req("a"));
        let b = h.join(join_req("b"));
        h.settle();
        let [a, b] = [a, b].map(|r| h.joined(r).member_id.clone());
        let again = h.join(rejoin_req("a", &a));
        let response = h.joined(again);
        assert_eq!(response.generation_id, 1);
        assert_eq!(
            response.members.len(),
            2,
            "the leader gets the members again"
        );
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        let follower = h.join(rejoin_req("b", &b));
        assert!(h.joined(follower).members.is_empty());
        h.drain();
    }

    #[test]
    fn superseded_join_is_answered() {
        let mut h = Harness::new();
        let ids = h.stable_group(&["a", "b"]);
        h.join(join_req("c"));
        let first = h.join(rejoin_req("a", &ids[0]));
        let retry = h.join(rejoin_req("a", &ids[0]));
        assert_eq!(h.joined(first).error_code, REBALANCE_IN_PROGRESS);
        assert!(h.is_pending(retry));
        h.drain();
    }

    /// Two static members, a leading; Stable at generation 1.
    fn static_group(h: &mut Harness) -> (String, String) {
        let a = h.join(static_req("a", "inst-a"));
        let b = h.join(static_req("b", "inst-b"));
        h.settle();
        let ids = [a, b].map(|r| h.joined(r).member_id.clone());
        assert!(ids[0].starts_with("inst-a-"));
        let assignments: Vec<(String, Bytes)> = ids
            .iter()
            .map(|id| (id.clone(), Bytes::from(format!("assigned:{id}"))))
            .collect();
        let syncs: Vec<u64> = ids
            .iter()
            .map(|id| {
                h.sync(SyncRequest {
                    group_instance_id: Some(format!("inst-{}", &id[5..6])),
                    assignments: assignments.clone(),
                    ..sync_req(id, 1)
                })
            })
            .collect();
        assert!(syncs.iter().all(|s| h.synced(*s).error_code == NONE));
        assert_eq!(h.group.state(), GroupState::Stable);
        let [a, b] = ids;
        (a, b)
    }

    #[test]
    fn static_member_restart_skips_the_rebalance_and_fences_the_old_id() {
        let mut h = Harness::new();
        let (a, b) = static_group(&mut h);

        // Follower b restarts: new member id, same generation, no rebalance.
        let restart = h.join(static_req("b", "inst-b"));
        let response = h.joined(restart).clone();
        assert_eq!(response.error_code, NONE);
        assert_eq!(response.generation_id, 1);
        assert_ne!(response.member_id, b);
        assert_eq!(response.leader, a);
        assert!(response.members.is_empty());
        assert_eq!(h.group.state(), GroupState::Stable);
        let new_b = response.member_id;

        // The old incarnation is fenced everywhere.
        assert_eq!(
            h.group.heartbeat(&b, Some("inst-b"), 1, h.now),
            FENCED_INSTANCE_ID
        );
        let stale_join = h.join(JoinRequest {
            member_id: b.clone(),
            ..static_req("b", "inst-b")
        });
        assert_eq!(h.joined(stale_join).error_code, FENCED_INSTANCE_ID);
        assert_eq!(h.leave(&[(&b, Some("inst-b"))]), [FENCED_INSTANCE_ID]);
        // The new one keeps the old assignment.
        assert_eq!(h.group.heartbeat(&new_b, Some("inst-b"), 1, h.now), NONE);
        let sync = h.sync(SyncRequest {
            group_instance_id: Some("inst-b".to_string()),
            ..sync_req(&new_b, 1)
        });
        assert_eq!(
            h.synced(sync).assignment,
            Bytes::from(format!("assigned:{b}"))
        );
        h.drain();
    }

    #[test]
    fn static_leader_restart_with_skip_assignment() {
        let mut h = Harness::new();
        let (a, _) = static_group(&mut h);
        let restart = h.join(JoinRequest {
            supports_skip_assignment: true,
            ..static_req("a", "inst-a")
        });
        let response = h.joined(restart).clone();
        assert_eq!(response.generation_id, 1);
        assert_eq!(response.leader, response.member_id, "v9+: told it leads");
        assert!(response.skip_assignment);
        assert_eq!(response.members.len(), 2);
        assert_eq!(h.group.leader(), Some(response.member_id.as_str()));
        assert_eq!(h.group.state(), GroupState::Stable);

        // A pre-v9 leader is instead given the old leader id, so it does not assign.
        let older = h.join(static_req("a", "inst-a"));
        let older = h.joined(older).clone();
        assert_eq!(older.leader, response.member_id);
        assert_ne!(older.leader, older.member_id);
        assert!(!older.skip_assignment && older.members.is_empty());
        assert_ne!(a, older.member_id);
        h.drain();
    }

    #[test]
    fn static_member_rejoining_with_another_protocol_triggers_a_rebalance() {
        let mut h = Harness::new();
        let a = h.join(JoinRequest {
            protocols: protocols(&["range", "sticky"], "a"),
            ..static_req("a", "inst-a")
        });
        let b = h.join(JoinRequest {
            protocols: protocols(&["range", "sticky"], "b"),
            ..static_req("b", "inst-b")
        });
        h.settle();
        assert_eq!(h.joined(a).protocol_name.as_deref(), Some("range"));
        let a_id = h.joined(a).member_id.clone();
        let b_id = h.joined(b).member_id.clone();
        let leader_sync = h.sync(sync_req(&a_id, 1));
        assert_eq!(h.synced(leader_sync).error_code, NONE);

        // b now prefers sticky: the vote ties 1-1 and a voted first, so range stays.
        let same_choice = h.join(JoinRequest {
            protocols: protocols(&["sticky", "range"], "b"),
            ..static_req("b", "inst-b")
        });
        assert_eq!(h.joined(same_choice).generation_id, 1);
        // b supports only sticky now: the selected protocol would change.
        let changed = h.join(JoinRequest {
            protocols: protocols(&["sticky"], "b"),
            ..static_req("b", "inst-b")
        });
        assert!(h.is_pending(changed));
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_ne!(b_id, h.group.static_members["inst-b"]);
        h.join(JoinRequest {
            protocols: protocols(&["range", "sticky"], "a"),
            ..rejoin_req("a", &a_id)
        });
        let response = h.joined(changed);
        assert_eq!(response.generation_id, 2);
        assert_eq!(response.protocol_name.as_deref(), Some("sticky"));
        h.drain();
    }

    #[test]
    fn static_members_survive_the_rebalance_timeout_but_not_their_session() {
        let mut h = Harness::new();
        let (a, b) = static_group(&mut h);
        let c = h.join(join_req("c"));
        let rejoin_a = h.join(JoinRequest {
            member_id: a.clone(),
            ..static_req("a", "inst-a")
        });
        // b keeps heartbeating past the rebalance timeout but never rejoins.
        for _ in 0..7 {
            h.advance(5_000);
            h.group.heartbeat(&b, Some("inst-b"), 1, h.now);
        }
        let leader = h.joined(rejoin_a);
        assert_eq!(leader.generation_id, 2);
        assert_eq!(leader.members.len(), 3, "static b keeps its slot");
        assert_eq!(h.joined(c).generation_id, 2);
        // Without heartbeats b's session expires like anyone's.
        h.advance(i64::from(SESSION));
        assert!(!h.group.static_members.contains_key("inst-b"));
        h.drain();
    }

    #[test]
    fn rebalance_waits_while_only_static_members_that_did_not_rejoin_remain() {
        let mut h = Harness::new();
        let (a, b) = static_group(&mut h);
        assert_eq!(h.leave(&[(&a, Some("inst-a"))]), [NONE]);
        for _ in 0..8 {
            h.advance(5_000);
            let now = h.now;
            assert_eq!(
                h.group.heartbeat(&b, Some("inst-b"), 1, now),
                REBALANCE_IN_PROGRESS
            );
        }
        // Past the rebalance timeout: no generation without a member to lead it.
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        assert_eq!(h.group.generation_id(), 1);
        let rejoin = h.join(JoinRequest {
            member_id: b.clone(),
            ..static_req("b", "inst-b")
        });
        let response = h.joined(rejoin);
        assert_eq!(
            (response.generation_id, response.leader.as_str()),
            (2, b.as_str())
        );
        h.drain();
    }

    #[test]
    fn static_member_removed_by_instance_id_only() {
        let mut h = Harness::new();
        let (_, b) = static_group(&mut h);
        assert_eq!(h.leave(&[("", Some("inst-b"))]), [NONE]);
        assert_eq!(
            h.group.heartbeat(&b, Some("inst-b"), 1, h.now),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(h.group.state(), GroupState::PreparingRebalance);
        h.drain();
    }

    #[test]
    fn offset_commit_validation() {
        let mut h = Harness::new();
        let now = h.now;
        assert_eq!(h.group.validate_offset_commit("", None, -1, now), NONE);
        let ids = h.stable_group(&["a", "b"]);
        let now = h.now;
        let g = &mut h.group;
        assert_eq!(g.validate_offset_commit(&ids[0], None, 1, now), NONE);
        assert_eq!(
            g.validate_offset_commit(&ids[0], None, 0, now),
            ILLEGAL_GENERATION
        );
        assert_eq!(
            g.validate_offset_commit("stranger", None, 1, now),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_commit("", None, -1, now),
            UNKNOWN_MEMBER_ID
        );
        assert_eq!(
            g.validate_offset_commit(&ids[0], Some("x"), 1, now),
            UNKNOWN_MEMBER_ID
        );

        // A commit keeps the session alive like a heartbeat does.
        for _ in 0..4 {
            h.advance(i64::from(SESSION) / 2);
            let now = h.now;
            assert_eq!(h.group.validate_offset_commit(&ids[0], None, 1, now), NONE);
            assert_eq!(h.heartbeat(&ids[1], 1), NONE);
        }
        // Allowed while preparing a rebalance, not while the new assignment is pending.
        h.join(join_req("c"));
        let now = h.now;
        assert_eq!(h.group.validate_offset_commit(&ids[0], None, 1, now), NONE);
        h.join(rejoin_req("a", &ids[0]));
        h.join(rejoin_req("b", &ids[1]));
        assert_eq!(h.group.state(), GroupState::CompletingRebalance);
        let now = h.now;
        assert_eq!(
            h.group.validate_offset_commit(&ids[0], None, 2, now),
            REBALANCE_IN_PROGRESS
        );
        h.drain();
        let now = h.now;
        assert_eq!(h.group.validate_offset_commit("", None, -1, now), NONE);
    }

    #[test]
    fn protocol_selection_and_inconsistent_protocols() {
        let mut h = Harness::new();
        let a = h.join(JoinRequest {
            protocols: protocols(&["range", "roundrobin"], "a"),
            ..join_req("a")
        });
        h.join(JoinRequest {
            protocols: protocols(&["roundrobin", "range"], "b"),
            ..join_req("b")
        });
        h.join(JoinRequest {
            protocols: protocols(&["sticky", "roundrobin", "range"], "c"),
            ..join_req("c")
        });
        let no_common = h.join(JoinRequest {
            protocols: protocols(&["sticky"], "d"),
            ..join_req("d")
        });
        assert_eq!(h.joined(no_common).error_code, INCONSISTENT_GROUP_PROTOCOL);
        let other_type = h.join(JoinRequest {
            protocol_type: "connect".to_string(),
            ..join_req("e")
        });
        assert_eq!(h.joined(other_type).error_code, INCONSISTENT_GROUP_PROTOCOL);
        let no_protocols = h.join(JoinRequest {
            protocols: Vec::new(),
            ..join_req("f")
        });
        assert_eq!(
            h.joined(no_protocols).error_code,
            INCONSISTENT_GROUP_PROTOCOL
        );
        h.settle();
        // Candidates are range and roundrobin (sticky is not universal); votes 1 vs 2.
        let leader = h.joined(a);
        assert_eq!(leader.protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(leader.members[0].metadata, Bytes::from("a:roundrobin"));
        assert_eq!(h.group.protocol_name(), Some("roundrobin"));
        h.drain();
    }

    #[test]
    fn sync_timeout_removes_members_that_never_sync() {
        let mut h = Harness::new();
        let a = h.join(join_req("a"));
        let b = h.join(join_req("b"));
        h.settle();
        let a_id = h.joined(a).member_id.clone();
        let b_id = h.joined(b).member_id.clone();
        let leader_sync = h.sync(sync_req(&a_id, 1));
        assert_eq!(h.synced(leader_sync).error_code, NONE);
        // b heartbeats but never syncs: after the rebalance timeout it is removed.
        for _ in 0..6 {
            h.advance(5_000);
            h.heartbeat(&a_id, 1);
            h.heartbeat(&b_id, 1);
        }
        assert_eq!(h.heartbeat(&b_id, 1), UNKNOWN_MEMBER_ID);
        assert_eq!(h.heartbeat(&a_id, 1), REBALANCE_IN_PROGRESS);
        h.drain();
    }

    #[test]
    fn only_empty_groups_are_deleted() {
        let mut h = Harness::new();
        h.stable_group(&["a", "b"]);
        assert_eq!(h.group.delete(), NON_EMPTY_GROUP);

        let mut empty = ClassicGroup::new("e".to_string(), config());
        assert_eq!(empty.delete(), NONE);
        assert_eq!(empty.delete(), GROUP_ID_NOT_FOUND);
    }

    #[test]
    fn zero_initial_delay_completes_on_the_next_tick() {
        let mut h = Harness::with_config(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..config()
        });
        let a = h.join(join_req("a"));
        assert_eq!(h.group.next_deadline(), Some(h.now));
        h.advance(0);
        assert_eq!(h.joined(a).generation_id, 1);
        h.drain();
    }

    /// A small deterministic PRNG, so the property test needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// What a fuzzed client believes about itself.
    #[derive(Default, Clone)]
    struct Client {
        member_id: String,
        generation_id: i32,
    }

    #[test]
    fn every_request_is_answered_exactly_once() {
        for seed in 1..=300u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut h = Harness::with_config(GroupConfig {
                max_size: 4,
                ..config()
            });
            let mut clients = vec![Client::default(); 6];
            let mut joins_by_client: HashMap<u64, usize> = HashMap::new();
            for _ in 0..150 {
                let c = rng.below(clients.len());
                let name = format!("c{c}");
                // Clients 0 and 1 are static; the others dynamic.
                let instance = (c < 2).then(|| format!("inst-{c}"));
                let member_id = match rng.below(10) {
                    0 => "bogus".to_string(),
                    1 => String::new(),
                    _ => clients[c].member_id.clone(),
                };
                let generation = clients[c].generation_id - i32::from(rng.below(4) == 0);
                match rng.below(9) {
                    0..=2 => {
                        let names: &[&str] = match rng.below(4) {
                            0 => &["range", "sticky"],
                            1 => &["sticky"],
                            _ => &["range"],
                        };
                        let id = h.join(JoinRequest {
                            member_id,
                            group_instance_id: instance,
                            require_known_member_id: rng.below(2) == 0,
                            supports_skip_assignment: rng.below(2) == 0,
                            protocols: protocols(names, &name),
                            rebalance_timeout_ms: [5_000, 30_000][rng.below(2)],
                            ..join_req(&name)
                        });
                        joins_by_client.insert(id, c);
                    }
                    3 | 4 => {
                        let assignments = clients
                            .iter()
                            .map(|k| (k.member_id.clone(), Bytes::from("x")))
                            .collect();
                        h.sync(SyncRequest {
                            group_instance_id: instance,
                            protocol_name: None,
                            assignments,
                            ..sync_req(&member_id, generation)
                        });
                    }
                    5 => {
                        let now = h.now;
                        h.group
                            .heartbeat(&member_id, instance.as_deref(), generation, now);
                    }
                    6 => {
                        let now = h.now;
                        h.group.validate_offset_commit(
                            &member_id,
                            instance.as_deref(),
                            generation,
                            now,
                        );
                    }
                    7 => {
                        let leaving = [(member_id.as_str(), instance.as_deref()), ("", None)];
                        h.leave(&leaving[..1 + rng.below(2)]);
                    }
                    _ => h.advance([0, 500, 3_000, 12_000][rng.below(4)] as i64),
                }
                // Clients learn their member id and generation from join responses.
                for (request, client) in &joins_by_client {
                    if let Some(response) = h.joins.get(request) {
                        let known = &mut clients[*client];
                        match response.error_code {
                            NONE | MEMBER_ID_REQUIRED => {
                                known.member_id = response.member_id.clone();
                                known.generation_id = response.generation_id;
                            }
                            UNKNOWN_MEMBER_ID | FENCED_INSTANCE_ID => {
                                *known = Client::default();
                            }
                            _ => {}
                        }
                    }
                }
                joins_by_client.retain(|request, _| !h.joins.contains_key(request));
            }
            h.drain();
            assert_eq!(h.group.state(), GroupState::Empty, "seed {seed}");
        }
    }
}
