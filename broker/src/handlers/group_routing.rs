//! Routing group requests to the shard coordinating the group.

use std::collections::BTreeMap;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::RequestContext;
use crate::errors::ErrorCode;
use crate::shard::{ShardRequest, ShardResponse};

/// Sends a request about one group to its coordinating shard.
pub async fn forward(
    ctx: &RequestContext,
    group: &str,
    request: RequestKind,
) -> Result<ResponseKind, ErrorCode> {
    let (_, owner) = ctx
        .shard
        .group_placement(group)
        .ok_or(ErrorCode::CoordinatorNotAvailable)?;
    forward_to(ctx, owner, request).await
}

pub async fn forward_to(
    ctx: &RequestContext,
    owner: usize,
    request: RequestKind,
) -> Result<ResponseKind, ErrorCode> {
    let request = ShardRequest::Group {
        version: ctx.api_version,
        client: ctx.client.clone(),
        request: Box::new(request),
    };
    match ctx.shard.on_shard(owner, request).await {
        ShardResponse::Group(response) => Ok(*response),
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// Items with their position in the request.
pub type Positioned<T> = Vec<(usize, T)>;

/// Splits a list of group ids by coordinating shard, keeping each id's position.
/// Groups with no coordinator (before the offsets topic exists) are returned apart.
pub fn by_owner<T>(
    ctx: &RequestContext,
    items: Vec<T>,
    group_of: impl Fn(&T) -> &str,
) -> (BTreeMap<usize, Positioned<T>>, Positioned<T>) {
    let mut owned: BTreeMap<usize, Positioned<T>> = BTreeMap::new();
    let mut orphans = Vec::new();
    for (position, item) in items.into_iter().enumerate() {
        match ctx.shard.group_placement(group_of(&item)) {
            Some((_, owner)) => owned.entry(owner).or_default().push((position, item)),
            None => orphans.push((position, item)),
        }
    }
    (owned, orphans)
}
