//! Framing: a 4-byte big-endian payload length, then a protobuf payload.
//!
//! [`decode`] first checks that a whole frame is buffered and only then parses
//! it, so any strict prefix of a valid frame is [`Decoded::Incomplete`]: "read
//! more". It does no I/O and reads no clock; the async reader in
//! [`crate::wire`] drives it.

use bytes::{BufMut, BytesMut};
use prost::Message;

use super::limits::HEADER_LEN;

/// Why bytes are not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame payload is not valid protobuf: {0}")]
    Malformed(String),
    #[error("frame has no kind")]
    NoKind,
}

/// The result of looking at a buffer.
#[derive(Debug, PartialEq)]
pub enum Decoded<M> {
    /// A whole frame: the value and how many bytes it took.
    Frame(M, usize),
    /// Not enough bytes yet.
    Incomplete,
}

/// Appends `msg` as one frame to `dst`.
pub fn encode<M: Message>(msg: &M, dst: &mut BytesMut) {
    let len = msg.encoded_len();
    dst.reserve(HEADER_LEN + len);
    dst.put_u32(u32::try_from(len).expect("frames are far below 4 GiB"));
    msg.encode(dst).expect("reserved enough capacity");
}

/// Encodes `msg` as one frame into a new buffer.
pub fn to_bytes<M: Message>(msg: &M) -> BytesMut {
    let mut b = BytesMut::new();
    encode(msg, &mut b);
    b
}

/// Tries to decode one frame from the front of `src`. Frames longer than
/// `max_frame` are refused from their header alone, before they are buffered.
pub fn decode<M: Message + Default>(
    src: &[u8],
    max_frame: usize,
) -> Result<Decoded<M>, DecodeError> {
    let Some(header) = src.first_chunk::<HEADER_LEN>() else {
        return Ok(Decoded::Incomplete);
    };
    let len = u32::from_be_bytes(*header) as usize;
    if len > max_frame {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame,
        });
    }
    let Some(payload) = src.get(HEADER_LEN..HEADER_LEN + len) else {
        return Ok(Decoded::Incomplete);
    };
    let msg = M::decode(payload).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Decoded::Frame(msg, HEADER_LEN + len))
}

/// A frame type whose payload must name a kind (all of ours: an empty oneof is
/// a frame that means nothing).
pub trait Kinded {
    fn has_kind(&self) -> bool;
}

impl Kinded for super::ClientFrame {
    fn has_kind(&self) -> bool {
        self.kind.is_some()
    }
}

impl Kinded for super::ServerFrame {
    fn has_kind(&self) -> bool {
        self.kind.is_some()
    }
}

/// [`decode`], and refuse a frame without a kind.
pub fn decode_kinded<M: Message + Default + Kinded>(
    src: &[u8],
    max_frame: usize,
) -> Result<Decoded<M>, DecodeError> {
    match decode::<M>(src, max_frame)? {
        Decoded::Frame(m, _) if !m.has_kind() => Err(DecodeError::NoKind),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::client_frame::Kind as C;
    use crate::proto::server_frame::Kind as S;
    use crate::proto::*;
    use bytes::Bytes;

    const MAX: usize = crate::proto::limits::MAX_FRAME;

    fn id(b: u8) -> Bytes {
        Bytes::from(vec![b; 16])
    }

    fn client_table() -> Vec<(ClientFrame, Vec<u8>)> {
        let f = |k| ClientFrame { kind: Some(k) };
        vec![
            (
                f(C::Hello(Hello {
                    token: "t".into(),
                    client: "c".into(),
                })),
                vec![0, 0, 0, 8, 0x0a, 6, 0x0a, 1, b't', 0x12, 1, b'c'],
            ),
            (
                f(C::Ping(Ping { nonce: 300 })),
                vec![0, 0, 0, 5, 0x2a, 3, 0x08, 0xac, 0x02],
            ),
            (f(C::Ping(Ping { nonce: 0 })), vec![0, 0, 0, 2, 0x2a, 0]),
            (
                f(C::Ack(Ack {
                    seqs: vec![1, 2, 300],
                })),
                vec![0, 0, 0, 8, 0x1a, 6, 0x0a, 4, 1, 2, 0xac, 0x02],
            ),
            (
                f(C::Typing(Typing {
                    to: "b".into(),
                    typing: true,
                })),
                vec![0, 0, 0, 7, 0x32, 5, 0x0a, 1, b'b', 0x10, 1],
            ),
            (
                f(C::Send(Send {
                    id: id(7),
                    to: "bob".into(),
                    body: Bytes::from_static(b"hi"),
                })),
                [
                    vec![0, 0, 0, 29, 0x12, 27, 0x0a, 16],
                    vec![7; 16],
                    vec![0x12, 3, b'b', b'o', b'b', 0x1a, 2, b'h', b'i'],
                ]
                .concat(),
            ),
            (
                f(C::SendMedia(SendMedia {
                    id: id(7),
                    to: "b".into(),
                    media: Some(Box::new(Media {
                        handle: "m".into(),
                        size: 5,
                        sha256: Bytes::from_static(b"s"),
                        mime: String::new(),
                        thumbnail: Bytes::from_static(b"t"),
                        opaque: Bytes::new(),
                    })),
                })),
                [
                    vec![0, 0, 0, 36, 0x4a, 34, 0x0a, 16],
                    vec![7; 16],
                    vec![0x12, 1, b'b', 0x1a, 11],
                    vec![0x0a, 1, b'm', 0x10, 5, 0x1a, 1, b's', 0x2a, 1, b't'],
                ]
                .concat(),
            ),
        ]
    }

    fn server_table() -> Vec<(ServerFrame, Vec<u8>)> {
        let f = |k| ServerFrame { kind: Some(k) };
        vec![
            (
                f(S::Accepted(Accepted {
                    id: id(1),
                    server_ts_ms: 5,
                    duplicate: false,
                })),
                [
                    vec![0, 0, 0, 22, 0x12, 20, 0x0a, 16],
                    vec![1; 16],
                    vec![0x10, 5],
                ]
                .concat(),
            ),
            (
                f(S::Error(Error {
                    code: Code::BadRecipient as u32,
                    message: "x".into(),
                    id: Bytes::new(),
                    fatal: false,
                    retry_after_ms: 0,
                })),
                vec![0, 0, 0, 7, 0x22, 5, 0x08, 6, 0x12, 1, b'x'],
            ),
            (
                f(S::Deliver(Deliver {
                    seq: 9,
                    envelope: Some(Envelope {
                        from: "a".into(),
                        from_device: 0,
                        id: Bytes::new(),
                        server_ts_ms: 0,
                        content: Some(envelope::Content::Receipt(Receipt {
                            kind: ReceiptKind::Read as i32,
                            ids: vec![],
                            members: Vec::new(),
                        })),
                        ..Default::default()
                    }),
                })),
                vec![
                    0, 0, 0, 13, 0x1a, 11, 0x08, 9, 0x12, 7, 0x0a, 1, b'a', 0x32, 2, 0x08, 2,
                ],
            ),
            (
                f(S::Pong(Pong { nonce: 1 })),
                vec![0, 0, 0, 4, 0x2a, 2, 0x08, 1],
            ),
        ]
    }

    fn check_table<M: Message + Default + Kinded + PartialEq + Clone + std::fmt::Debug>(
        table: Vec<(M, Vec<u8>)>,
    ) {
        for (value, bytes) in table {
            assert_eq!(
                to_bytes(&value).as_ref(),
                &bytes[..],
                "encoding of {value:?}"
            );
            assert_eq!(
                decode_kinded::<M>(&bytes, MAX).unwrap(),
                Decoded::Frame(value.clone(), bytes.len()),
                "decoding of {bytes:?}"
            );
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_kinded::<M>(&bytes[..cut], MAX).unwrap(),
                    Decoded::Incomplete,
                    "prefix of {cut} bytes of {value:?}"
                );
            }
            // A frame followed by more bytes decodes the frame alone.
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            assert_eq!(
                decode_kinded::<M>(&two, MAX).unwrap(),
                Decoded::Frame(value, bytes.len())
            );
        }
    }

    #[test]
    fn client_frames_bytes_and_values() {
        check_table(client_table());
    }

    #[test]
    fn server_frames_bytes_and_values() {
        check_table(server_table());
    }

    #[test]
    fn oversized_header_is_refused_before_payload_arrives() {
        let hdr = ((MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            decode::<ClientFrame>(&hdr, MAX),
            Err(DecodeError::FrameTooLarge {
                len: MAX + 1,
                max: MAX
            })
        );
        // "GET " as a length is 1.2 GB: an HTTP client gets FrameTooLarge at once.
        assert!(matches!(
            decode::<ClientFrame>(b"GET / HTTP/1.1\r\n", MAX),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_empty_frames_are_errors() {
        // Truncated varint inside a complete frame.
        assert!(matches!(
            decode::<ClientFrame>(&[0, 0, 0, 2, 0x2a, 0xff], MAX),
            Err(DecodeError::Malformed(_))
        ));
        // Wrong wire type for field 1.
        assert!(matches!(
            decode::<ClientFrame>(&[0, 0, 0, 2, 0x08, 0x01], MAX),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(
            decode_kinded::<ClientFrame>(&[0, 0, 0, 0], MAX),
            Err(DecodeError::NoKind)
        );
    }
}
