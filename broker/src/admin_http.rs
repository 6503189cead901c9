//! The operations HTTP endpoint (`--metrics-listen`): Prometheus metrics at `/metrics`,
//! liveness at `/health`, readiness at `/ready`. Served by the controller shard; a
//! scrape asks every shard for a snapshot over the mesh, so shards never share counters.

use std::rc::Rc;
use std::time::Duration;

use corelog_io::{TcpListener, TcpStream};
use futures::{AsyncReadExt, AsyncWriteExt};

use crate::metrics::{render, ShardSnapshot};
use crate::shard::{Shard, ShardRequest, ShardResponse};

/// A request head larger than this is refused: the endpoint takes only simple GETs.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                corelog_io::spawn_local(answer(shard.clone(), stream)).detach();
            }
            Err(e) => {
                tracing::warn!("metrics endpoint accept failed: {e}");
                corelog_io::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn answer(shard: Rc<Shard>, mut stream: TcpStream) {
    // Timeouts bound a client that connects and sends nothing.
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let (status, content_type, body) = match read_path(&mut stream).await {
        Some(path) => respond(&shard, &path).await,
        None => ("400 Bad Request", "text/plain", "bad request\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.close().await;
}

/// Reads the request head and returns the path of a GET.
async fn read_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = std::str::from_utf8(&head).ok()?.lines().next()?;
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => Some(path.split('?').next().unwrap_or(path).to_string()),
        _ => None,
    }
}

async fn respond(shard: &Rc<Shard>, path: &str) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => {
            let snapshots = gather(shard).await;
            ("200 OK", "text/plain; version=0.0.4", render(&snapshots))
        }
        // Alive: this shard answers.
        "/health" => ("200 OK", "text/plain", "ok\n".to_string()),
        // Ready: serving clients, not stopping.
        "/ready" if shard.is_ready() => ("200 OK", "text/plain", "ready\n".to_string()),
        "/ready" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_string(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics, /health or /ready\n".to_string(),
        ),
    }
}

async fn gather(shard: &Rc<Shard>) -> Vec<ShardSnapshot> {
    let calls = (0..shard.count).map(|id| shard.on_shard(id, ShardRequest::Metrics));
    futures::future::join_all(calls)
        .await
        .into_iter()
        .filter_map(|response| match response {
            ShardResponse::Metrics(snapshot) => Some(*snapshot),
            _ => None,
        })
        .collect()
}
