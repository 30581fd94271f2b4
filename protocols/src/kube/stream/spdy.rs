//! SPDY/3.1 as Kubernetes streams use it (kubectl's SPDY exec, attach and port-forward, and the
//! SPDY tunnelled in WebSocket by kubectl ≥ 1.31), one direction at a time.
//!
//! The client opens one SPDY stream per Kubernetes stream with `SYN_STREAM`, whose header block
//! (zlib, one compression context per direction, primed with SPDY/3's dictionary) names it:
//! `streamtype` is `stdin`, `stdout`, `stderr`, `error` or `resize` for exec and attach, `data`
//! or `error` with a `port` header for port-forward. Data frames then carry the stream's bytes
//! either way; the server never opens a stream. So the server's direction learns its streams
//! from the client's: the caller hands [`SpdyDecoder::take_opened`] of the client's decoder to
//! [`SpdyDecoder::note_opened`] of the server's before it forwards those bytes.
//!
//! Every header block of a direction (`SYN_STREAM`, `SYN_REPLY`, `HEADERS`) is inflated, in
//! order, to keep that direction's zlib context in step. Bounds: control frames up to
//! [`MAX_CONTROL_FRAME`] bytes, data frames up to [`MAX_DATA_FRAME`], a header block up to
//! [`MAX_HEADER_BLOCK`] bytes once inflated, [`MAX_STREAMS`] streams.

use std::collections::HashMap;

use flate2::{Decompress, FlushDecompress};

use super::{StreamChunk, StreamError, StreamKind};

/// The largest control frame (its 8-byte header aside).
pub const MAX_CONTROL_FRAME: usize = 64 << 10;
/// The largest data frame (its 8-byte header aside).
pub const MAX_DATA_FRAME: usize = 1 << 20;
/// The largest header block, inflated.
pub const MAX_HEADER_BLOCK: usize = 64 << 10;
/// The most streams open at once in one direction (a stream is forgotten once that direction
/// ends it with `FLAG_FIN` or resets it).
pub const MAX_STREAMS: usize = 1024;
/// The most name/value pairs in one header block.
const MAX_HEADER_PAIRS: usize = 64;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
/// `FLAG_FIN`: the sender's half of the stream ends with this frame.
const FLAG_FIN: u8 = 0x01;
const HEADERS: u16 = 8;

/// Reads one direction's SPDY/3.1 frames into Kubernetes stream chunks.
pub struct SpdyDecoder {
    from_client: bool,
    buf: Vec<u8>,
    inflate: Decompress,
    streams: HashMap<u32, StreamKind>,
    opened: Vec<(u32, StreamKind)>,
    /// The highest stream id this direction opened.
    last_opened: u32,
}

impl std::fmt::Debug for SpdyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpdyDecoder")
            .field("from_client", &self.from_client)
            .field("buffered", &self.buf.len())
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl SpdyDecoder {
    /// A decoder for the frames the client (`true`) or the server (`false`) sends.
    #[must_use]
    pub fn new(from_client: bool) -> Self {
        Self {
            from_client,
            buf: Vec::new(),
            inflate: Decompress::new(true),
            streams: HashMap::new(),
            opened: Vec::new(),
            last_opened: 0,
        }
    }

    /// The streams this direction opened since the last call (the client's direction only).
    pub fn take_opened(&mut self) -> Vec<(u32, StreamKind)> {
        std::mem::take(&mut self.opened)
    }

    /// Learns a stream the other direction opened.
    pub fn note_opened(&mut self, id: u32, kind: StreamKind) {
        if self.streams.len() < MAX_STREAMS {
            self.streams.insert(id, kind);
        }
    }

    /// Takes the next bytes; answers the payload chunks they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<StreamChunk>, StreamError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut pos = 0;
        let buf = std::mem::take(&mut self.buf);
        let result = loop {
            match self.frame(&buf[pos..], &mut out) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.buf = buf;
        self.buf.drain(..pos);
        result.map(|()| out)
    }

    /// Reads the frame at the start of `buf`: `None` until it is all there, else its length.
    fn frame(
        &mut self,
        buf: &[u8],
        out: &mut Vec<StreamChunk>,
    ) -> Result<Option<usize>, StreamError> {
        let Some(head) = buf.get(..8) else {
            return Ok(None);
        };
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let control = word & 0x8000_0000 != 0;
        let limit = if control {
            MAX_CONTROL_FRAME
        } else {
            MAX_DATA_FRAME
        };
        if len > limit {
            return Err(StreamError::SpdyTooLong { len, limit });
        }
        if control {
            let version = ((word >> 16) & 0x7FFF) as u16;
            if version != 3 {
                return Err(StreamError::SpdyVersion(version));
            }
        }
        let Some(body) = buf.get(8..8 + len) else {
            return Ok(None);
        };
        let fin = head[4] & FLAG_FIN != 0;
        if control {
            self.control((word & 0xFFFF) as u16, fin, body)?;
        } else {
            self.data(word & 0x7FFF_FFFF, fin, body, out)?;
        }
        Ok(Some(8 + len))
    }

    fn data(
        &mut self,
        id: u32,
        fin: bool,
        body: &[u8],
        out: &mut Vec<StreamChunk>,
    ) -> Result<(), StreamError> {
        let Some(&kind) = self.streams.get(&id) else {
            return Err(StreamError::SpdyUnknownStream(id));
        };
        if fin {
            // This direction is done with the stream: data after it is an error.
            self.streams.remove(&id);
        }
        if !body.is_empty() {
            out.push(StreamChunk {
                kind,
                data: body.to_vec(),
            });
        }
        Ok(())
    }

    fn control(&mut self, kind: u16, fin: bool, body: &[u8]) -> Result<(), StreamError> {
        match kind {
            SYN_STREAM => {
                let (Some(id), Some(block)) = (stream_id(body), body.get(10..)) else {
                    return Err(short("SYN_STREAM", body));
                };
                let headers = self.headers(block)?;
                self.open(id, fin, &headers)
            }
            RST_STREAM => {
                let Some(id) = stream_id(body) else {
                    return Err(short("RST_STREAM", body));
                };
                self.streams.remove(&id);
                Ok(())
            }
            SYN_REPLY | HEADERS => {
                let (Some(_), Some(block)) = (stream_id(body), body.get(4..)) else {
                    return Err(short("SYN_REPLY/HEADERS", body));
                };
                self.headers(block).map(drop)
            }
            // SETTINGS, PING, GOAWAY, WINDOW_UPDATE and unknown control frames
            // carry no stream bytes (SPDY says to ignore the unknown ones).
            _ => Ok(()),
        }
    }

    /// Registers a stream the client opened, classified by its headers (`fin`: the client sends
    /// nothing on it, so only the server's direction keeps it).
    fn open(
        &mut self,
        id: u32,
        fin: bool,
        headers: &[(String, String)],
    ) -> Result<(), StreamError> {
        // Client-initiated streams are odd; the server opens none.
        if !self.from_client || id == 0 || id.is_multiple_of(2) {
            return Err(StreamError::SpdyStreamId(id));
        }
        // Stream ids only grow: one at or below the last is a stream opened again.
        if id <= self.last_opened {
            return Err(StreamError::SpdyReopened(id));
        }
        if self.streams.len() >= MAX_STREAMS {
            return Err(StreamError::SpdyTooManyStreams);
        }
        let kind = classify(id, headers)?;
        self.last_opened = id;
        if !fin {
            self.streams.insert(id, kind);
        }
        self.opened.push((id, kind));
        Ok(())
    }

    /// Inflates a header block in this direction's zlib context and reads its pairs.
    fn headers(&mut self, block: &[u8]) -> Result<Vec<(String, String)>, StreamError> {
        let raw = self.inflate_block(block)?;
        parse_pairs(&raw)
    }

    fn inflate_block(&mut self, mut input: &[u8]) -> Result<Vec<u8>, StreamError> {
        let mut out = Vec::with_capacity(MAX_HEADER_BLOCK + 1);
        while !input.is_empty() {
            let (before_in, before_out) = (self.inflate.total_in(), out.len());
            let result = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = usize::try_from(self.inflate.total_in() - before_in).unwrap_or(0);
            input = input.get(used..).unwrap_or_default();
            match result {
                Ok(_) if used == 0 && out.len() == before_out => {
                    return Err(StreamError::SpdyInflate("no progress".into()));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| StreamError::SpdyInflate(format!("dictionary: {e}")))?;
                }
                Err(e) => return Err(StreamError::SpdyInflate(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(StreamError::SpdyHeaderBlockTooLong);
            }
        }
        Ok(out)
    }
}

fn short(frame: &'static str, body: &[u8]) -> StreamError {
    StreamError::SpdyShort {
        frame,
        len: body.len(),
    }
}

fn stream_id(body: &[u8]) -> Option<u32> {
    let b = body.get(..4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7FFF_FFFF)
}

/// The Kubernetes stream a `SYN_STREAM`'s headers name.
fn classify(id: u32, headers: &[(String, String)]) -> Result<StreamKind, StreamError> {
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let Some(kind) = get("streamtype") else {
        return Err(StreamError::SpdyNoStreamType(id));
    };
    let port = || {
        get("port")
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or(StreamError::SpdyPort(id))
    };
    Ok(match kind.as_str() {
        "stdin" => StreamKind::Stdin,
        "stdout" => StreamKind::Stdout,
        "stderr" => StreamKind::Stderr,
        "resize" => StreamKind::Resize,
        "error" if get("port").is_some() => StreamKind::PortError(port()?),
        "error" => StreamKind::Error,
        "data" => StreamKind::PortData(port()?),
        other => {
            return Err(StreamError::SpdyStreamType {
                id,
                kind: other.chars().take(32).collect(),
            });
        }
    })
}

/// Reads an inflated header block: a 32-bit count, then 32-bit-length-prefixed names and values.
fn parse_pairs(raw: &[u8]) -> Result<Vec<(String, String)>, StreamError> {
    let mut at = 0;
    let mut next = |n: usize| {
        let s = raw
            .get(at..at + n)
            .ok_or(StreamError::SpdyHeaderBlock("cut short"))?;
        at += n;
        Ok::<_, StreamError>(s)
    };
    let word = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = word(next(4)?);
    if count > MAX_HEADER_PAIRS {
        return Err(StreamError::SpdyHeaderBlock("too many headers"));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let name_len = word(next(4)?);
        let name = text(next(name_len)?)?;
        let value_len = word(next(4)?);
        let value = text(next(value_len)?)?;
        if name.is_empty() {
            return Err(StreamError::SpdyHeaderBlock("empty header name"));
        }
        pairs.push((name.to_ascii_lowercase(), value));
    }
    if at != raw.len() {
        return Err(StreamError::SpdyHeaderBlock("bytes after the last header"));
    }
    Ok(pairs)
}

fn text(bytes: &[u8]) -> Result<String, StreamError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StreamError::SpdyHeaderBlock("header not UTF-8"))
}

/// Encodes SPDY/3.1 frames as a client or server would: for tests, fuzzing and tools. One
/// encoder per direction (the header compression context is per direction).
pub struct SpdyEncoder {
    deflate: flate2::Compress,
}

impl Default for SpdyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SpdyEncoder {
    #[must_use]
    pub fn new() -> Self {
        let mut deflate = flate2::Compress::new(flate2::Compression::default(), true);
        // Cannot fail on a fresh stream with a valid dictionary.
        let _ = deflate.set_dictionary(DICTIONARY);
        Self { deflate }
    }

    /// A `SYN_STREAM` opening `id` with `headers`.
    #[must_use]
    pub fn syn_stream(&mut self, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        body.extend(self.block(headers));
        control(SYN_STREAM, &body)
    }

    /// A `SYN_REPLY` for `id` with `headers`.
    #[must_use]
    pub fn syn_reply(&mut self, id: u32, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend(self.block(headers));
        control(SYN_REPLY, &body)
    }

    /// A data frame on `id` (`fin` closes the sender's half).
    #[must_use]
    pub fn data(id: u32, data: &[u8], fin: bool) -> Vec<u8> {
        let mut out = (id & 0x7FFF_FFFF).to_be_bytes().to_vec();
        out.push(u8::from(fin));
        out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(data);
        out
    }

    /// A `RST_STREAM` of `id` (status 5, CANCEL).
    #[must_use]
    pub fn rst_stream(id: u32) -> Vec<u8> {
        let mut body = id.to_be_bytes().to_vec();
        body.extend_from_slice(&5u32.to_be_bytes());
        control(RST_STREAM, &body)
    }

    /// A `PING` with `id`.
    #[must_use]
    pub fn ping(id: u32) -> Vec<u8> {
        control(6, &id.to_be_bytes())
    }

    fn block(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = (headers.len() as u32).to_be_bytes().to_vec();
        for (n, v) in headers {
            for s in [n, v] {
                raw.extend_from_slice(&(s.len() as u32).to_be_bytes());
                raw.extend_from_slice(s.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = raw.as_slice();
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(input, &mut out, flate2::FlushCompress::Sync);
            let used = usize::try_from(self.deflate.total_in() - before).unwrap_or(0);
            input = &input[used..];
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn control(kind: u16, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80, 3];
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// SPDY/3's zlib dictionary for header blocks (1423 bytes, from the SPDY/3 specification).
const DICTIONARY: &[u8] = b"\
\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-range\
s\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcach\
e-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-enc\
oding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content\
-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-t\
ype\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modifie\
d-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-\
since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06ser\
ver\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\
\x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\
\x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\
\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-al\
ive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840941041141\
2413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanen\
tly400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 N\
ot Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:0\
0:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif\
,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzi\
p,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

#[cfg(test)]
#[path = "spdy_tests.rs"]
mod tests;
