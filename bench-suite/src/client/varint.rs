//! Zigzag varints of the record format (Kafka's `varint`/`varlong`), written into and read
//! from plain byte slices so the encoder and the fetch walker never allocate.

/// Bytes the zigzag varint encoding of `v` takes.
pub fn len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

/// Appends the zigzag varint encoding of `v`.
pub fn put(out: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads a zigzag varint at `*pos`, advancing it; `None` when the slice ends first or the
/// varint is longer than 10 bytes.
pub fn get(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips_edges() {
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i32::MAX as i64,
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            super::put(&mut out, v);
            assert_eq!(out.len(), super::len(v), "{v}");
            let mut pos = 0;
            assert_eq!(super::get(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
    }
}
