//! The metrics and health endpoint, scraped over real HTTP after real traffic.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{batch, Broker};

fn http_get(address: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// A broker serving metrics on a free port, and that endpoint's address.
fn start_with_metrics(settings: &[&str]) -> (Broker, String) {
    let port = common::free_addr().port();
    let address = format!("127.0.0.1:{port}");
    let mut all = vec![format!("metrics.listen={address}")];
    all.extend(settings.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    (Broker::start(2, &all), address)
}

/// The sum of every sample whose series starts with `prefix` (all shards, all labels).
fn total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

#[test]
fn scraped_counters_match_the_traffic_sent() {
    let (broker, address) = start_with_metrics(&["offsets.topic.num.partitions=2"]);
    let mut client = broker.client();
    client.create_topic("m", 2);
    let mut bytes_in = [0u64; 2];
    for i in 0..20 {
        let partition = (i % 2) as usize;
        let records = batch(&["a", "bb", "ccc"]);
        bytes_in[partition] += records.len() as u64;
        let acks = if i < 10 { 1 } else { -1 };
        assert_eq!(client.produce("m", partition as i32, acks, records).0, 0);
    }
    let (_, _, fetched) = client.fetch("m", 0, 0, 0);
    assert_eq!(client.commit_offset("lagging", "", -1, "m", 1, 12), 0);
    let mut corrupt = batch(&["x"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    assert_eq!(client.produce("m", 0, 1, corrupt.into()).0, 2);

    let (status, text) = http_get(&address, "/metrics");
    assert_eq!(status, 200);
    for (partition, bytes_in) in bytes_in.iter().enumerate() {
        let labels = format!("{{topic=\"m\",partition=\"{partition}\"}}");
        assert_eq!(
            sample(
                &text,
                &format!("corelog_partition_records_in_total{labels}")
            ),
            30.0
        );
        assert_eq!(
            sample(&text, &format!("corelog_partition_bytes_in_total{labels}")),
            *bytes_in as f64
        );
        assert_eq!(
            sample(&text, &format!("corelog_partition_high_watermark{labels}")),
            30.0
        );
        assert!(
            sample(&text, &format!("corelog_partition_log_size_bytes{labels}")) >= *bytes_in as f64
        );
    }
    let out = "{topic=\"m\",partition=\"0\"}";
    assert_eq!(
        sample(&text, &format!("corelog_partition_bytes_out_total{out}")),
        fetched.len() as f64
    );
    assert_eq!(
        sample(&text, &format!("corelog_partition_records_out_total{out}")),
        30.0
    );
    assert_eq!(
        sample(
            &text,
            "corelog_consumer_group_lag{group=\"lagging\",topic=\"m\",partition=\"1\"}"
        ),
        18.0
    );

    assert_eq!(
        total(&text, "corelog_requests_total{shard=\"0\",api=\"Produce\"}")
            + total(&text, "corelog_requests_total{shard=\"1\",api=\"Produce\"}"),
        21.0
    );
    assert_eq!(total(&text, "corelog_produce_latency_seconds_count"), 21.0);
    assert!(
        total(&text, "corelog_fsync_latency_seconds_count") >= 1.0,
        "acks=all produces were fsynced"
    );
    assert!(
        text.contains("api=\"Produce\",code=\"2\",error=\"CorruptMessage\"} 1"),
        "{text}"
    );
    assert!(total(&text, "corelog_connections") >= 1.0);

    assert_eq!(http_get(&address, "/health").0, 200);
    assert_eq!(http_get(&address, "/ready").0, 200);
    assert_eq!(http_get(&address, "/nope").0, 404);
}

fn fetch_everything(threshold: &str) -> (f64, f64) {
    let (broker, address) =
        start_with_metrics(&[&format!("fetch.zero.copy.min.bytes={threshold}")]);
    let mut client = broker.client();
    client.create_topic("big", 2);
    let value = "z".repeat(10_000);
    let mut sent = Vec::new();
    for i in 0..100 {
        let value = format!("{i}-{value}");
        assert_eq!(
            client.produce("big", i % 2, 1, batch(&[&value, &value])).0,
            0
        );
        sent.push(value);
    }
    for partition in 0..2 {
        let (code, hw, records) = client.fetch("big", partition, 0, 0);
        assert_eq!((code, hw), (0, 100));
        let values: Vec<String> = common::decode_values(records)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let expected: Vec<String> = sent
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == partition as usize)
            .flat_map(|(_, v)| [v.clone(), v.clone()])
            .collect();
        assert_eq!(values, expected);
    }
    let (_, text) = http_get(&address, "/metrics");
    (
        total(&text, "corelog_fetch_zero_copy_bytes_total"),
        total(&text, "corelog_fetch_copied_bytes_total"),
    )
}

#[test]
fn large_fetches_go_out_with_sendfile_and_the_setting_turns_it_off() {
    let (zero_copy, copied) = fetch_everything("65536");
    assert!(
        zero_copy > 1_000_000.0,
        "1 MB per partition sent from the files: {zero_copy}"
    );
    assert_eq!(copied, 0.0);
    let (zero_copy, copied) = fetch_everything("-1");
    assert_eq!(zero_copy, 0.0);
    assert!(copied > 1_000_000.0, "{copied}");
}
