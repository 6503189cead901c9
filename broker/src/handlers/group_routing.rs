//! Routing group requests to the shard coordinating the group.

use kafka_protocol::messages::*;

use super::RequestContext;
use crate::errors::ErrorCode;
use crate::shard::{ShardRequest, ShardResponse};

/// A response to a single-group request: how to find it in the coordinating shard's
/// answer, and what to answer when that shard cannot be reached.
pub trait GroupReply: Sized {
    fn unpack(response: ResponseKind) -> Option<Self>;
    fn unavailable(code: ErrorCode) -> Self;
}

macro_rules! group_replies {
    ($($variant:ident($response:ty) => |$code:ident| $unavailable:expr),* $(,)?) => {
        $(impl GroupReply for $response {
            fn unpack(response: ResponseKind) -> Option<Self> {
                match response {
                    ResponseKind::$variant(response) => Some(response),
                    _ => None,
                }
            }
            fn unavailable($code: ErrorCode) -> Self {
                $unavailable
            }
        })*
    };
}

group_replies! {
    OffsetDelete(OffsetDeleteResponse) => |code| OffsetDeleteResponse::default().with_error_code(code.code()),
    OffsetFetch(OffsetFetchResponse) => |code| OffsetFetchResponse::default().with_error_code(code.code()),
    JoinGroup(JoinGroupResponse) => |code| JoinGroupResponse::default().with_error_code(code.code()).with_generation_id(-1),
    SyncGroup(SyncGroupResponse) => |code| SyncGroupResponse::default().with_error_code(code.code()),
    Heartbeat(HeartbeatResponse) => |code| HeartbeatResponse::default().with_error_code(code.code()),
    LeaveGroup(LeaveGroupResponse) => |code| LeaveGroupResponse::default().with_error_code(code.code()),
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatResponse) => |code| ConsumerGroupHeartbeatResponse::default().with_error_code(code.code()),
}

/// Sends a request about one group to its coordinating shard.
pub async fn forward<R: GroupReply>(ctx: &RequestContext, group: &str, request: RequestKind) -> R {
    let Some((_, owner)) = ctx.shard.group_placement(group) else {
        return R::unavailable(ErrorCode::CoordinatorNotAvailable);
    };
    forward_to(ctx, owner, request)
        .await
        .and_then(R::unpack)
        .unwrap_or_else(|| R::unavailable(ErrorCode::CoordinatorNotAvailable))
}

pub async fn forward_to(
    ctx: &RequestContext,
    owner: usize,
    request: RequestKind,
) -> Option<ResponseKind> {
    let request = ShardRequest::Group {
        version: ctx.api_version,
        client: ctx.client.clone(),
        request: Box::new(request),
    };
    match ctx.shard.on_shard(owner, request).await {
        ShardResponse::Group(response) => Some(*response),
        _ => None,
    }
}

/// Serves a request naming several groups: splits the groups by coordinating shard,
/// sends each shard a request (`request`) for its share, and returns the per-group
/// results in the order the groups were asked. `unavailable` answers for a group whose
/// coordinator cannot be reached.
pub async fn scatter<T, R>(
    ctx: &RequestContext,
    items: Vec<T>,
    group_of: impl Fn(&T) -> &str,
    request: impl Fn(Vec<T>) -> RequestKind,
    unpack: impl Fn(ResponseKind) -> Option<Vec<R>>,
    unavailable: impl Fn(&str) -> R,
) -> Vec<R> {
    let count = items.len();
    let mut answers: Vec<Option<R>> = std::iter::repeat_with(|| None).take(count).collect();
    let mut by_owner: std::collections::BTreeMap<usize, Vec<(usize, T)>> = Default::default();
    for (position, item) in items.into_iter().enumerate() {
        match ctx.shard.group_placement(group_of(&item)) {
            Some((_, owner)) => by_owner.entry(owner).or_default().push((position, item)),
            None => answers[position] = Some(unavailable(group_of(&item))),
        }
    }
    let (request, unpack, unavailable, group_of) = (&request, &unpack, &unavailable, &group_of);
    let calls = by_owner.into_iter().map(|(owner, share)| async move {
        let (positions, share): (Vec<usize>, Vec<T>) = share.into_iter().unzip();
        let fallback: Vec<R> = share
            .iter()
            .map(|item| unavailable(group_of(item)))
            .collect();
        let results = forward_to(ctx, owner, request(share))
            .await
            .and_then(unpack)
            .filter(|results| results.len() == positions.len())
            .unwrap_or(fallback);
        positions.into_iter().zip(results).collect::<Vec<_>>()
    });
    for (position, result) in futures::future::join_all(calls).await.into_iter().flatten() {
        answers[position] = Some(result);
    }
    answers.into_iter().flatten().collect()
}
