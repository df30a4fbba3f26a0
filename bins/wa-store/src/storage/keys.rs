//! The key layout both engines share: one key space, typed prefixes,
//! big-endian numbers so that range scans come out in sequence order.
//!
//! | key | value |
//! |---|---|
//! | `01 len user seq:u64be` | encoded `Envelope` (mailbox item) |
//! | `02 len to len from kind id` | `seq:u64be server_ts_ms:u64be` (dedupe) |
//! | `03 len user` | last assigned `seq:u64be` |
//! | `04 len user` | last seen `ms:u64be` |
//! | `05 len user` | mailbox size `items:u64be bytes:u64be` |
//! | `06 space:u8 len key` | key-value record `version:u64be value` |
//! | `07 len user device:u32be` | lowest accepted device generation `u32be` |
//!
//! `len` is one byte: user ids are at most 64 bytes, and a length byte in front
//! of each id keeps one user's keys from being a prefix of another's.

use prost::Message;

use super::{DedupeKey, Item, MailboxSize, Original, StorageError};
use common::proto::Envelope;

const ITEM: u8 = 1;
const DEDUPE: u8 = 2;
pub(super) const SEQ: u8 = 3;
pub(super) const SEEN: u8 = 4;
pub(super) const SIZE: u8 = 5;
const KV: u8 = 6;
const MIN_GENERATION: u8 = 7;

fn push_id(key: &mut Vec<u8>, id: &str) -> Result<(), StorageError> {
    let len = u8::try_from(id.len()).map_err(|_| StorageError::Corrupt {
        what: format!("user id of {} bytes cannot be a key", id.len()),
    })?;
    key.push(len);
    key.extend_from_slice(id.as_bytes());
    Ok(())
}

pub(super) fn user_key(prefix: u8, user: &str) -> Result<Vec<u8>, StorageError> {
    let mut k = Vec::with_capacity(2 + user.len() + 8);
    k.push(prefix);
    push_id(&mut k, user)?;
    Ok(k)
}

/// The prefix of every item of `user`'s mailbox.
pub(super) fn item_prefix(user: &str) -> Result<Vec<u8>, StorageError> {
    user_key(ITEM, user)
}

/// The first key after every key that starts with `prefix`: the exclusive
/// end of a prefix scan. Every prefix here starts with a type byte below
/// 0xff, so there is always a byte to raise.
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while end.last() == Some(&0xff) {
        end.pop();
    }
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub(super) fn item_key(user: &str, seq: u64) -> Result<Vec<u8>, StorageError> {
    let mut k = user_key(ITEM, user)?;
    k.extend_from_slice(&seq.to_be_bytes());
    Ok(k)
}

pub(super) fn dedupe_key(key: &DedupeKey<'_>) -> Result<Vec<u8>, StorageError> {
    let mut k = Vec::with_capacity(4 + key.to.len() + key.from.len() + key.id.len());
    k.push(DEDUPE);
    push_id(&mut k, key.to)?;
    push_id(&mut k, key.from)?;
    k.push(key.kind as u8);
    k.extend_from_slice(key.id);
    Ok(k)
}

/// The prefix of every dedupe entry whose recipient is `to`.
pub(super) fn dedupe_prefix(to: &str) -> Result<Vec<u8>, StorageError> {
    user_key(DEDUPE, to)
}

/// The first and one-past-the-last key of the dedupe entries.
pub(super) const DEDUPES_START: [u8; 1] = [DEDUPE];
pub(super) const DEDUPES_END: [u8; 1] = [DEDUPE + 1];

pub(super) fn be_u64(v: &[u8], what: &str) -> Result<u64, StorageError> {
    let b: [u8; 8] =
        v.get(..8)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| StorageError::Corrupt {
                what: format!("{what}: {} bytes, expected at least 8", v.len()),
            })?;
    Ok(u64::from_be_bytes(b))
}

/// The dedupe value: where and when the original append landed.
pub(super) fn original_value(seq: u64, server_ts_ms: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&seq.to_be_bytes());
    v[8..].copy_from_slice(&server_ts_ms.to_be_bytes());
    v
}

pub(super) fn decode_original(v: &[u8]) -> Result<Original, StorageError> {
    if v.len() != 16 {
        return Err(StorageError::Corrupt {
            what: format!("dedupe entry of {} bytes, expected 16", v.len()),
        });
    }
    Ok(Original {
        seq: be_u64(&v[..8], "dedupe seq")?,
        server_ts_ms: be_u64(&v[8..], "dedupe server_ts")?,
    })
}

/// A mailbox item from its key and value.
pub(super) fn decode_item(k: &[u8], v: &[u8]) -> Result<Item, StorageError> {
    let seq = be_u64(&k[k.len().saturating_sub(8)..], "item key")?;
    let envelope = Envelope::decode(v).map_err(|e| StorageError::Corrupt {
        what: format!("item {seq} of a mailbox: {e}"),
    })?;
    Ok(Item { seq, envelope })
}

pub(super) fn size_value(s: MailboxSize) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&s.items.to_be_bytes());
    v[8..].copy_from_slice(&s.bytes.to_be_bytes());
    v
}

pub(super) fn decode_size(v: Option<&[u8]>) -> Result<MailboxSize, StorageError> {
    match v {
        None => Ok(MailboxSize::default()),
        Some(v) if v.len() == 16 => Ok(MailboxSize {
            items: be_u64(&v[..8], "mailbox items")?,
            bytes: be_u64(&v[8..], "mailbox bytes")?,
        }),
        Some(v) => Err(StorageError::Corrupt {
            what: format!("mailbox size of {} bytes, expected 16", v.len()),
        }),
    }
}

/// The key of a key-value record (`space` is a `common::link::KvSpace`).
pub(super) fn kv_key(space: u8, key: &str) -> Result<Vec<u8>, StorageError> {
    let mut k = Vec::with_capacity(3 + key.len());
    k.push(KV);
    k.push(space);
    push_id(&mut k, key)?;
    Ok(k)
}

pub(super) fn kv_value(version: u64, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// (version, value) of a stored record; (0, empty) when absent.
pub(super) fn decode_kv(v: Option<&[u8]>) -> Result<(u64, Vec<u8>), StorageError> {
    match v {
        None => Ok((0, Vec::new())),
        Some(v) => Ok((be_u64(v, "key-value version")?, v[8..].to_vec())),
    }
}

pub(super) fn min_generation_key(user: &str, device: u32) -> Result<Vec<u8>, StorageError> {
    let mut k = user_key(MIN_GENERATION, user)?;
    k.extend_from_slice(&device.to_be_bytes());
    Ok(k)
}

pub(super) fn decode_generation(v: Option<&[u8]>) -> Result<u32, StorageError> {
    match v {
        None => Ok(0),
        Some(v) => {
            let b: [u8; 4] = v.try_into().map_err(|_| StorageError::Corrupt {
                what: format!("device generation of {} bytes, expected 4", v.len()),
            })?;
            Ok(u32::from_be_bytes(b))
        }
    }
}

/// The key-value records' range, for a scan over all of them.
pub(super) const KVS_START: [u8; 1] = [KV];
pub(super) const KVS_END: [u8; 1] = [KV + 1];
/// The device generations' range.
pub(super) const GENERATIONS_START: [u8; 1] = [MIN_GENERATION];
pub(super) const GENERATIONS_END: [u8; 1] = [MIN_GENERATION + 1];

/// The space and key of a key-value record's key.
pub(super) fn split_kv_key(k: &[u8]) -> Result<(u8, &str), StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: format!("key-value key of {} bytes", k.len()),
    };
    let (&space, rest) = k
        .get(1..)
        .and_then(<[u8]>::split_first)
        .ok_or_else(corrupt)?;
    let (&len, key) = rest.split_first().ok_or_else(corrupt)?;
    let key = key.get(..usize::from(len)).ok_or_else(corrupt)?;
    Ok((space, std::str::from_utf8(key).map_err(|_| corrupt())?))
}

/// The user and device of a device generation's key.
pub(super) fn split_generation_key(k: &[u8]) -> Result<(&str, u32), StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: format!("device generation key of {} bytes", k.len()),
    };
    let (&len, rest) = k
        .get(1..)
        .and_then(<[u8]>::split_first)
        .ok_or_else(corrupt)?;
    let len = usize::from(len);
    let user = rest.get(..len).ok_or_else(corrupt)?;
    let device: [u8; 4] = rest
        .get(len..)
        .and_then(|d| d.try_into().ok())
        .ok_or_else(corrupt)?;
    Ok((
        std::str::from_utf8(user).map_err(|_| corrupt())?,
        u32::from_be_bytes(device),
    ))
}

/// The first key of the item range, for scans over every mailbox.
pub(super) const ITEMS_START: [u8; 1] = [ITEM];
/// Just past the item range.
pub(super) const ITEMS_END: [u8; 1] = [ITEM + 1];

/// The user and sequence number of an item key.
pub(super) fn split_item_key(k: &[u8]) -> Result<(String, u64), StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: format!("item key of {} bytes", k.len()),
    };
    let len = *k.get(1).ok_or_else(corrupt)? as usize;
    let user = k.get(2..2 + len).ok_or_else(corrupt)?;
    let seq = be_u64(k.get(2 + len..).ok_or_else(corrupt)?, "item key seq")?;
    let user = String::from_utf8(user.to_vec()).map_err(|_| corrupt())?;
    Ok((user, seq))
}

/// The first key of the size range, and just past it.
pub(super) const SIZES_START: [u8; 1] = [SIZE];
pub(super) const SIZES_END: [u8; 1] = [SIZE + 1];

/// The user of a size key (`05 len user`).
pub(super) fn size_key_user(k: &[u8]) -> Result<&str, StorageError> {
    let corrupt = || StorageError::Corrupt {
        what: format!("size key of {} bytes", k.len()),
    };
    let len = *k.get(1).ok_or_else(corrupt)? as usize;
    let user = k.get(2..2 + len).ok_or_else(corrupt)?;
    std::str::from_utf8(user).map_err(|_| corrupt())
}
