//! Prometheus remote write 1.0: a `WriteRequest` of time series encoded as protobuf by hand
//! (three small messages: `TimeSeries {labels = 1, samples = 2}`, `Label {name = 1,
//! value = 2}`, `Sample {value = 1 (double), timestamp = 2 (int64 ms)}`) and compressed as a
//! snappy block, with the spec's headers.

use super::samples::Series;

/// The HTTP headers of a remote write request.
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "application/x-protobuf"),
    ("content-encoding", "snappy"),
    ("x-prometheus-remote-write-version", "0.1.0"),
];

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field `tag` holding `body`.
fn field(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    out.push(tag);
    varint(out, body.len() as u64);
    out.extend_from_slice(body);
}

/// The protobuf `WriteRequest` of `series` (labels sorted by name, samples in time order).
pub fn encode(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::with_capacity(series.iter().map(|s| 64 + 18 * s.samples.len()).sum());
    let (mut ts, mut label) = (Vec::new(), Vec::new());
    for s in series {
        ts.clear();
        // An empty value is no label (the spec's rule): left out.
        let mut labels: Vec<(&str, &str)> = s
            .labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        labels.push(("__name__", s.name));
        labels.sort_unstable();
        for (k, v) in labels {
            label.clear();
            field(&mut label, 0x0a, k.as_bytes());
            field(&mut label, 0x12, v.as_bytes());
            field(&mut ts, 0x0a, &label);
        }
        for &(t, v) in &s.samples {
            // Sample: 0x09 + 8 bytes of double, 0x10 + varint of the timestamp.
            let mut sample = [0u8; 20];
            sample[0] = 0x09;
            sample[1..9].copy_from_slice(&v.to_le_bytes());
            sample[9] = 0x10;
            let mut n = 10;
            let mut u = t as u64;
            while u >= 0x80 {
                sample[n] = (u as u8) | 0x80;
                u >>= 7;
                n += 1;
            }
            sample[n] = u as u8;
            field(&mut ts, 0x12, &sample[..=n]);
        }
        field(&mut out, 0x0a, &ts);
    }
    out
}

/// The compressed body of a remote write request.
pub fn body(series: &[Series]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&encode(series))
        .expect("snappy compresses any input")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_request_encodes_as_protobuf_and_snappy() {
        let s = Series {
            name: "m",
            labels: vec![("device_id", "D1".into())],
            samples: vec![(1_700_000_000_123, 1.5)],
        };
        let pb = encode(std::slice::from_ref(&s));
        // WriteRequest.timeseries[0] = TimeSeries{labels: [__name__=m, device_id=D1], samples: [..]}
        let mut want = vec![0x0a];
        let mut ts = Vec::new();
        for (k, v) in [("__name__", "m"), ("device_id", "D1")] {
            let mut l = vec![0x0a, k.len() as u8];
            l.extend_from_slice(k.as_bytes());
            l.extend_from_slice(&[0x12, v.len() as u8]);
            l.extend_from_slice(v.as_bytes());
            ts.extend_from_slice(&[0x0a, l.len() as u8]);
            ts.extend_from_slice(&l);
        }
        let mut sample = vec![0x09];
        sample.extend_from_slice(&1.5f64.to_le_bytes());
        sample.push(0x10);
        varint(&mut sample, 1_700_000_000_123);
        ts.extend_from_slice(&[0x12, sample.len() as u8]);
        ts.extend_from_slice(&sample);
        want.push(ts.len() as u8);
        want.extend_from_slice(&ts);
        assert_eq!(pb, want);
        let z = body(&[s]);
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&z).unwrap(), pb);
    }
}
