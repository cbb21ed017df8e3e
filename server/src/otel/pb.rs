//! A hand-written protobuf writer for the OTLP requests noco builds itself (the per-host and
//! per-container metrics, container log records): fields are written straight into buffers, with
//! no message structs and no allocation per item. The field numbers are those of
//! `opentelemetry/proto/{metrics,logs,common,resource}/v1/*.proto`; the tests decode what is
//! written with `opentelemetry-proto`'s generated messages.

const LEN: u64 = 2;
const I64: u64 = 1;
const VARINT: u64 = 0;

pub fn varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn tag(buf: &mut Vec<u8>, field: u64, wire: u64) {
    varint(buf, (field << 3) | wire);
}

/// A length-delimited field: bytes, a string, or an encoded message.
pub fn bytes(buf: &mut Vec<u8>, field: u64, b: &[u8]) {
    tag(buf, field, LEN);
    varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// The head of a length-delimited field whose content (`len` bytes) the caller writes next.
pub fn bytes_head(buf: &mut Vec<u8>, field: u64, len: usize) {
    tag(buf, field, LEN);
    varint(buf, len as u64);
}

pub fn fixed64(buf: &mut Vec<u8>, field: u64, v: u64) {
    tag(buf, field, I64);
    buf.extend_from_slice(&v.to_le_bytes());
}

pub fn uint(buf: &mut Vec<u8>, field: u64, v: u64) {
    tag(buf, field, VARINT);
    varint(buf, v);
}

/// A `KeyValue` with a string value as field `field` of the enclosing message.
pub fn key_value(buf: &mut Vec<u8>, field: u64, key: &str, value: &str) {
    // AnyValue { string_value = 1 }
    let any = 1 + varint_len(value.len() as u64) + value.len();
    key_value_head(buf, field, key, any);
    bytes(buf, 1, value.as_bytes());
}

/// A `KeyValue` with an integer value as field `field` of the enclosing message.
pub fn key_int(buf: &mut Vec<u8>, field: u64, key: &str, value: i64) {
    // AnyValue { int_value = 3 }
    let any = 1 + varint_len(value as u64);
    key_value_head(buf, field, key, any);
    uint(buf, 3, value as u64);
}

/// The start of a `KeyValue { key = 1, value = 2 }` whose `AnyValue` is `any` bytes long.
fn key_value_head(buf: &mut Vec<u8>, field: u64, key: &str, any: usize) {
    let kv = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
    bytes_head(buf, field, kv);
    bytes(buf, 1, key.as_bytes());
    bytes_head(buf, 2, any);
}

/// `Resource { attributes = 1 }` from string attributes.
pub fn resource(attrs: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in attrs {
        key_value(&mut out, 1, k, v);
    }
    out
}

/// `InstrumentationScope { name = 1, version = 2 }`.
pub fn scope(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(&mut out, 1, name.as_bytes());
    bytes(&mut out, 2, env!("CARGO_PKG_VERSION").as_bytes());
    out
}
