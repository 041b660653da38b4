//! The codec of every Docent service: prost's, except that a request message that does not
//! decode is the caller's error (INVALID_ARGUMENT), not the server's (prost maps it to
//! INTERNAL).

use std::marker::PhantomData;

use prost::bytes::Buf;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

pub struct DocentCodec<T, U> {
    inner: ProstCodec<T, U>,
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for DocentCodec<T, U> {
    fn default() -> Self {
        Self {
            inner: ProstCodec::default(),
            _pd: PhantomData,
        }
    }
}

impl<T, U> Codec for DocentCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = InvalidArgumentDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidArgumentDecoder(self.inner.decoder())
    }
}

/// Maps a decode failure (INTERNAL from prost) to INVALID_ARGUMENT.
pub struct InvalidArgumentDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for InvalidArgumentDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        // A server's requests only: a client decoding a long answer (a usage report of many
        // identities) is not refused. (tonic hands the whole message in one buffer; if not,
        // prost's own limits apply.)
        let whole = buf.chunk();
        if std::any::type_name::<D::Item>().ends_with("Request") && whole.len() == buf.remaining() {
            within_bounds(whole).map_err(Status::invalid_argument)?;
        }
        self.0.decode(buf).map_err(|s| {
            if s.code() == Code::Internal {
                Status::invalid_argument(format!("malformed request message: {}", s.message()))
            } else {
                s
            }
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Most fields a request message may hold at its top level.
pub const MAX_TOP_FIELDS: usize = 32_768;
/// Most fields each message field of the top level may hold (each document of a push).
pub const MAX_NESTED_FIELDS: usize = 32_768;
/// Most fields of both levels together.
pub const MAX_FIELDS: usize = 262_144;

/// Counts a request's fields before prost decodes it: each costs its whole struct once decoded
/// (an empty `PushDocument` is 2 bytes on the wire and hundreds in memory; an empty string 2 and
/// 24), so a request within the size limit could decode to gigabytes before any check of the
/// handler's ran (found by a review: 51 MiB of empty documents, about 26 million). The top level
/// is read as a message; each length-delimited field of it that reads as a message is read one
/// level deeper (a string that happens to read as one is counted too, which only errs on a
/// hostile request). Groups, which prost skips in fields it does not know, are read and their
/// fields counted (a review: one group made the request unreadable here, and left to prost,
/// it was decoded whole). A request that does not read as protobuf at all is refused.
pub fn within_bounds(msg: &[u8]) -> Result<(), String> {
    let mut nested = 0usize;
    let mut widest = 0usize;
    let Some(top) = count_fields(msg, &mut |inner| {
        if let Some(n) = count_fields(inner, &mut |_| {}) {
            nested += n;
            widest = widest.max(n);
        }
    }) else {
        return Err("malformed request message".into());
    };
    if top > MAX_TOP_FIELDS || widest > MAX_NESTED_FIELDS || top + nested > MAX_FIELDS {
        return Err(format!(
            "the request holds too many items ({top} fields, {widest} in one of them, {} in all; \
             at most {MAX_TOP_FIELDS}, {MAX_NESTED_FIELDS} and {MAX_FIELDS})",
            top + nested
        ));
    }
    Ok(())
}

/// The fields of `msg` read as a protobuf message (those inside groups too), handing each
/// length-delimited one's bytes to `inner`; `None` when `msg` is not a well-formed message.
fn count_fields(msg: &[u8], inner: &mut dyn FnMut(&[u8])) -> Option<usize> {
    let mut at = 0usize;
    walk_fields(msg, &mut at, None, 0, inner)
}

/// Groups nested deeper than this are malformed here, as for prost, which skips them up to its
/// recursion limit (a review: at 32 here, a deeper one hid a document's fields from the count).
const MAX_GROUP_DEPTH: u32 = 100;

/// [`count_fields`] from `at`, inside the group of field `group` if any (ending at its end tag).
fn walk_fields(
    msg: &[u8],
    at: &mut usize,
    group: Option<u64>,
    depth: u32,
    inner: &mut dyn FnMut(&[u8]),
) -> Option<usize> {
    let mut n = 0usize;
    while *at < msg.len() {
        let key = varint(msg, at)?;
        let field = key >> 3;
        if field == 0 {
            return None;
        }
        match key & 7 {
            0 => {
                varint(msg, at)?;
            }
            1 => *at = at.checked_add(8).filter(|&e| e <= msg.len())?,
            2 => {
                let len = usize::try_from(varint(msg, at)?).ok()?;
                let end = at.checked_add(len).filter(|&e| e <= msg.len())?;
                inner(&msg[*at..end]);
                *at = end;
            }
            3 if depth < MAX_GROUP_DEPTH => {
                n += walk_fields(msg, at, Some(field), depth + 1, inner)?;
            }
            4 => return (group == Some(field)).then_some(n),
            5 => *at = at.checked_add(4).filter(|&e| e <= msg.len())?,
            _ => return None,
        }
        n += 1;
    }
    // A group not closed is malformed.
    group.is_none().then_some(n)
}

/// A base-128 varint at `at` (moved past it); `None` past the end or the tenth byte.
fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift.min(63);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{PushDocument, PutDocumentsRequest};
    use prost::Message;

    /// Found by a review: a push request of empty documents, within its size limit, decoded to
    /// gigabytes before the handler counted them. Counted first, it is refused; an ordinary
    /// request, and one at the handler's own limits, pass.
    #[test]
    fn a_request_of_too_many_items_is_refused_before_it_is_decoded() {
        let empty = PutDocumentsRequest {
            source: "s".into(),
            documents: vec![PushDocument::default(); MAX_TOP_FIELDS + 1],
            wait_for_commit: false,
        };
        assert!(within_bounds(&empty.encode_to_vec()).is_err());
        let mut one = PushDocument {
            key: "k".into(),
            ..Default::default()
        };
        one.allow = vec![String::new(); MAX_NESTED_FIELDS];
        let wide = PutDocumentsRequest {
            source: "s".into(),
            documents: vec![one],
            wait_for_commit: true,
        };
        assert!(within_bounds(&wide.encode_to_vec()).is_err());
        // 100 documents with 1,024 allow and deny entries and 64 attributes each: the most the
        // handler accepts.
        let full = PushDocument {
            key: "k".into(),
            version: "1".into(),
            allow: (0..1024).map(|i| format!("user:u{i}")).collect(),
            deny: (0..1024).map(|i| format!("user:d{i}")).collect(),
            attributes: (0..64).map(|i| (format!("a{i}"), "v".into())).collect(),
            content: Some(crate::v1::push_document::Content::Text(
                "text ".repeat(1000),
            )),
            ..Default::default()
        };
        let most = PutDocumentsRequest {
            source: "s".into(),
            documents: vec![full; 100],
            wait_for_commit: true,
        };
        assert_eq!(within_bounds(&most.encode_to_vec()), Ok(()));
        // Not protobuf at all: refused.
        assert!(within_bounds(&[0xff; 16]).is_err());
        // A group (which prost skips in a field it does not know) does not hide what is around
        // it or in it (a later review), and a well-formed one is read.
        let mut grouped = empty.encode_to_vec();
        grouped.extend([0x9b, 0x06, 0x9c, 0x06]);
        assert!(within_bounds(&grouped).is_err());
        let mut small = PutDocumentsRequest {
            source: "s".into(),
            documents: vec![PushDocument::default(); 3],
            wait_for_commit: false,
        }
        .encode_to_vec();
        small.extend([0x9b, 0x06, 0x08, 0x01, 0x9c, 0x06]);
        assert_eq!(within_bounds(&small), Ok(()));
        // A group inside a document holding many empty allow entries.
        let mut doc = PushDocument {
            allow: vec![String::new(); MAX_NESTED_FIELDS],
            ..Default::default()
        }
        .encode_to_vec();
        doc.extend([0x9b, 0x06, 0x9c, 0x06]);
        let mut msg = vec![0x12];
        prost::encoding::encode_varint(doc.len() as u64, &mut msg);
        msg.extend(doc);
        assert!(within_bounds(&msg).is_err());
    }
}
