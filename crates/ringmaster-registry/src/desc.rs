//! Series descriptors: kind, name, labels and bucket bounds, their
//! validation, and their fixed-size encoding in the segment's table.

use crate::{DESC_LEN, Desc, Layout, RegistryError};

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Only goes up (`inc`, `add`); survives worker restarts and scale-down.
    Counter,
    /// An integer that goes up and down (`set`, `add`); a dead worker's
    /// share is cleared.
    Gauge,
    /// Counts of observations per bucket, with their sum.
    Histogram,
}

impl Kind {
    /// The Prometheus type name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    /// Cells per row: one, or one per bucket plus `+Inf` plus the sum.
    pub fn cells(self, buckets: usize) -> usize {
        match self {
            Kind::Counter | Kind::Gauge => 1,
            Kind::Histogram => buckets + 2,
        }
    }

    fn code(self) -> u8 {
        match self {
            Kind::Counter => 0,
            Kind::Gauge => 1,
            Kind::Histogram => 2,
        }
    }

    fn from_code(c: u8) -> Kind {
        match c {
            1 => Kind::Gauge,
            2 => Kind::Histogram,
            _ => Kind::Counter,
        }
    }
}

/// Bucket bounds of latency histograms, in seconds (Prometheus' defaults
/// with a 1 ms and a 2.5 ms step in front).
pub const DEFAULT_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The most finite bucket bounds a histogram may have.
pub const MAX_BUCKETS: usize = 16;
const MAX_NAME: usize = 120;
const MAX_LABELS: usize = 220;
/// Labels one series may have.
const MAX_LABEL_COUNT: usize = 16;
const MAX_HELP: usize = 500;
// Descriptor layout: kind, bucket count, name length, label bytes length
// (u16 at 4), help length (u16 at 6), cells offset (u64 at 8), stride (u64
// at 16), bounds (f64 x 16 at 24), name (at 152), labels (at 272):
// name\0value\0 pairs, help (at 492).
const AT_OFFSET: usize = 8;
const AT_STRIDE: usize = 16;
const AT_BOUNDS: usize = 24;
const AT_NAME: usize = AT_BOUNDS + MAX_BUCKETS * 8;
const AT_LABELS: usize = AT_NAME + MAX_NAME;
const AT_HELP: usize = AT_LABELS + MAX_LABELS;
const _: () = assert!(AT_HELP + MAX_HELP <= DESC_LEN);

/// Checks a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most 120 bytes.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ok = |c: char| ok_first(c) || c.is_ascii_digit();
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name has 1 to {MAX_NAME} characters"));
    }
    if !name.starts_with(ok_first) || !name.chars().all(ok) {
        return Err("a name is letters, digits, `_` and `:`, not starting with a digit".into());
    }
    Ok(())
}

/// Validates a series; returns its bucket bounds (none unless a histogram).
pub(crate) fn validate(
    name: &str,
    kind: Kind,
    labels: &[(String, String)],
    buckets: &[f64],
) -> Result<Vec<f64>, RegistryError> {
    let invalid = |message: String| RegistryError::Invalid {
        name: name.to_string(),
        message,
    };
    validate_name(name).map_err(invalid)?;
    validate_labels(kind, labels).map_err(invalid)?;
    if kind != Kind::Histogram {
        return Ok(Vec::new());
    }
    validate_buckets(buckets).map_err(invalid)?;
    Ok(buckets.to_vec())
}

/// Checks a series' labels: how many and how large, each one's name and
/// value, and no name given twice.
fn validate_labels(kind: Kind, labels: &[(String, String)]) -> Result<(), String> {
    // Bounds first: the checks below compare labels pairwise.
    if labels.len() > MAX_LABEL_COUNT {
        return Err(format!(
            "{} labels; at most {MAX_LABEL_COUNT}",
            labels.len()
        ));
    }
    let total: usize = labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_LABELS {
        return Err(format!(
            "its labels take {total} bytes; at most {MAX_LABELS}"
        ));
    }
    let mut bytes = 0;
    for (i, (k, v)) in labels.iter().enumerate() {
        validate_label(kind, k, v)?;
        if labels[..i].iter().any(|(other, _)| other == k) {
            return Err(format!("label {k:?} is given twice"));
        }
        bytes += k.len() + v.len() + 2;
    }
    if bytes > MAX_LABELS {
        return Err(format!(
            "its labels take {bytes} bytes; at most {MAX_LABELS}"
        ));
    }
    Ok(())
}

/// Checks one label: its name is `[a-zA-Z_][a-zA-Z0-9_]*` and does not
/// start with `__` (nor is `le` in a histogram), and neither part holds a
/// NUL byte (the descriptor's separator).
fn validate_label(kind: Kind, k: &str, v: &str) -> Result<(), String> {
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_';
    if k.is_empty()
        || k.starts_with("__")
        || !k.starts_with(ok_first)
        || !k.chars().all(|c| ok_first(c) || c.is_ascii_digit())
    {
        return Err(format!(
            "label name {k:?}: letters, digits and `_`, not starting with a digit or `__`"
        ));
    }
    if k == "le" && kind == Kind::Histogram {
        return Err("`le` is the histogram's own label".into());
    }
    if v.contains('\0') || k.contains('\0') {
        return Err(format!("label {k:?} contains a NUL byte"));
    }
    Ok(())
}

/// Checks a histogram's bucket bounds: 1 to [`MAX_BUCKETS`] of them,
/// finite and strictly increasing.
fn validate_buckets(buckets: &[f64]) -> Result<(), String> {
    if buckets.is_empty() || buckets.len() > MAX_BUCKETS {
        return Err(format!(
            "a histogram has 1 to {MAX_BUCKETS} bucket bounds, got {}",
            buckets.len()
        ));
    }
    if buckets.iter().any(|b| !b.is_finite()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err("bucket bounds are finite and strictly increasing (`+Inf` is implied)".into());
    }
    Ok(())
}

pub(crate) fn encode(
    kind: Kind,
    name: &str,
    help: &str,
    labels: &[(String, String)],
    buckets: &[f64],
    offset: usize,
    stride: usize,
) -> [u8; DESC_LEN] {
    let mut out = [0u8; DESC_LEN];
    let mut label_bytes = Vec::new();
    for (k, v) in labels {
        label_bytes.extend_from_slice(k.as_bytes());
        label_bytes.push(0);
        label_bytes.extend_from_slice(v.as_bytes());
        label_bytes.push(0);
    }
    out[0] = kind.code();
    out[1] = buckets.len() as u8;
    out[2] = name.len() as u8;
    out[4..6].copy_from_slice(&(label_bytes.len() as u16).to_le_bytes());
    out[AT_OFFSET..AT_OFFSET + 8].copy_from_slice(&(offset as u64).to_le_bytes());
    out[AT_STRIDE..AT_STRIDE + 8].copy_from_slice(&(stride as u64).to_le_bytes());
    for (i, b) in buckets.iter().enumerate() {
        let at = AT_BOUNDS + i * 8;
        out[at..at + 8].copy_from_slice(&b.to_le_bytes());
    }
    out[AT_NAME..AT_NAME + name.len()].copy_from_slice(name.as_bytes());
    out[AT_LABELS..AT_LABELS + label_bytes.len()].copy_from_slice(&label_bytes);
    // Help is cut at a character boundary if too long.
    let mut end = help.len().min(MAX_HELP);
    while !help.is_char_boundary(end) {
        end -= 1;
    }
    out[6..8].copy_from_slice(&(end as u16).to_le_bytes());
    out[AT_HELP..AT_HELP + end].copy_from_slice(&help.as_bytes()[..end]);
    out
}

/// The cells' place of the descriptor in `bytes`, from its fixed fields
/// (what [`decode`] gives as `kind`, `buckets`, `offset` and `stride`).
pub(crate) fn layout(bytes: &[u8]) -> Layout {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let nb = (bytes[1] as usize).min(MAX_BUCKETS);
    Layout {
        cells: Kind::from_code(bytes[0]).cells(nb),
        offset: usize::try_from(u64_at(AT_OFFSET)).unwrap_or(usize::MAX),
        stride: usize::try_from(u64_at(AT_STRIDE)).unwrap_or(usize::MAX),
    }
}

/// Decodes a descriptor; corrupt bytes give a harmless descriptor (lossy
/// text, lengths clamped), never a panic.
pub(crate) fn decode(bytes: &[u8]) -> Desc {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let nb = (bytes[1] as usize).min(MAX_BUCKETS);
    let name_len = (bytes[2] as usize).min(MAX_NAME);
    let labels_len = (u16::from_le_bytes([bytes[4], bytes[5]]) as usize).min(MAX_LABELS);
    let help_len = (u16::from_le_bytes([bytes[6], bytes[7]]) as usize).min(MAX_HELP);
    let help = String::from_utf8_lossy(&bytes[AT_HELP..AT_HELP + help_len]).into_owned();
    let name = String::from_utf8_lossy(&bytes[AT_NAME..AT_NAME + name_len]).into_owned();
    let raw = &bytes[AT_LABELS..AT_LABELS + labels_len];
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let labels = parts
        .chunks(2)
        .filter(|c| c.len() == 2 && !c[0].is_empty())
        .map(|c| (c[0].clone(), c[1].clone()))
        .collect();
    Desc {
        kind: Kind::from_code(bytes[0]),
        name,
        labels,
        help,
        buckets: (0..nb)
            .map(|i| f64::from_bits(u64_at(AT_BOUNDS + i * 8)))
            .collect(),
        offset: usize::try_from(u64_at(AT_OFFSET)).unwrap_or(usize::MAX),
        stride: usize::try_from(u64_at(AT_STRIDE)).unwrap_or(usize::MAX),
    }
}
