//! The property both targets check, for one frame type: decoding arbitrary
//! bytes never panics, `decode` and `decode_kinded` agree, a strict prefix of
//! a frame is "incomplete", and a decoded frame re-encodes to bytes that
//! decode to the same value (and re-encode to the same bytes).

use common::proto::frame::{self, DecodeError, Decoded, Kinded};
use common::proto::limits::{HEADER_LEN, MAX_FRAME};

pub trait Frame: prost::Message + Default + Kinded + PartialEq + Clone + std::fmt::Debug {}
impl<M: prost::Message + Default + Kinded + PartialEq + Clone + std::fmt::Debug> Frame for M {}

pub fn check<M: Frame>(data: &[u8]) {
    let plain = frame::decode::<M>(data, MAX_FRAME);
    let kinded = frame::decode_kinded::<M>(data, MAX_FRAME);
    match (&plain, &kinded) {
        (Ok(Decoded::Frame(a, n)), Ok(Decoded::Frame(b, m))) => {
            assert_eq!((a, n), (b, m), "decode and decode_kinded disagree");
            assert!(a.has_kind());
        }
        (Ok(Decoded::Frame(a, _)), Err(DecodeError::NoKind)) => assert!(!a.has_kind()),
        (Ok(Decoded::Incomplete), Ok(Decoded::Incomplete)) => {
            let whole = data
                .first_chunk::<HEADER_LEN>()
                .map(|h| HEADER_LEN + u32::from_be_bytes(*h) as usize);
            assert!(
                whole.is_none_or(|w| data.len() < w),
                "a whole frame reported incomplete"
            );
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        other => panic!("decode and decode_kinded disagree: {other:?}"),
    }

    let Ok(Decoded::Frame(value, used)) = kinded else {
        return;
    };
    assert!(used >= HEADER_LEN && used <= data.len() && used - HEADER_LEN <= MAX_FRAME);
    assert_eq!(
        frame::decode_kinded::<M>(&data[..used - 1], MAX_FRAME),
        Ok(Decoded::Incomplete),
        "a strict prefix of a frame must be incomplete"
    );

    let bytes = frame::to_bytes(&value);
    match frame::decode_kinded::<M>(&bytes, MAX_FRAME) {
        Ok(Decoded::Frame(again, n)) => {
            assert_eq!(n, bytes.len(), "re-encoded frame length");
            assert_eq!(again, value, "re-encoded frame decodes to another value");
            assert_eq!(frame::to_bytes(&again), bytes, "encoding is not stable");
        }
        other => panic!("re-encoded {value:?} does not decode: {other:?}"),
    }
}
