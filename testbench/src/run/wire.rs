//! The testbench's application protocol, spoken between client populations
//! and the server models.
//!
//! A request is a 16-byte header followed by `length` bytes of payload:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x534e` ("SN"), big-endian |
//! | 2 | 1 | kind: 0 a request, 1 a broker query |
//! | 3 | 1 | reserved, 0 |
//! | 4 | 4 | the client connection's number |
//! | 8 | 4 | payload bytes that follow |
//! | 12 | 4 | bytes the server must send back |
//!
//! Payload and response bytes follow a pattern derived from the connection
//! number and the offset, so each side checks every byte it receives: a
//! lost, duplicated or corrupted byte shows as a mismatch. A broker's
//! answer to a query is four bytes: the port of the server it names and
//! that server's processor.

/// Header length.
pub const HEADER_LEN: usize = 16;
const MAGIC: u16 = 0x534e;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Serve: read the payload, answer with `response` pattern bytes.
    Request,
    /// Broker: name a server (a four-byte answer).
    Query,
}

/// A request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What is asked.
    pub kind: Kind,
    /// The client connection.
    pub conn: u32,
    /// Payload bytes after the header.
    pub length: u32,
    /// Bytes to send back.
    pub response: u32,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        b[2] = match self.kind {
            Kind::Request => 0,
            Kind::Query => 1,
        };
        b[4..8].copy_from_slice(&self.conn.to_be_bytes());
        b[8..12].copy_from_slice(&self.length.to_be_bytes());
        b[12..16].copy_from_slice(&self.response.to_be_bytes());
        b
    }

    /// Parses a header; `None` when the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        if u16::from_be_bytes([b[0], b[1]]) != MAGIC || b[3] != 0 {
            return None;
        }
        let kind = match b[2] {
            0 => Kind::Request,
            1 => Kind::Query,
            _ => return None,
        };
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Some(Header {
            kind,
            conn: word(4),
            length: word(8),
            response: word(12),
        })
    }
}

/// The byte pattern of one direction of one connection: byte `o` is bits
/// 24..32 of `(o + conn·0x9e3779b9)·0x2545f491` (wrapping, 64-bit), XOR a
/// salt per direction. Consecutive bytes step the product by a constant,
/// so runs are made and checked with one addition per byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pattern {
    base: u64,
    salt: u8,
}

const PATTERN_STEP: u64 = 0x2545_f491;

impl Pattern {
    /// Connection `conn`'s request payload.
    pub fn request(conn: u32) -> Self {
        Pattern::new(conn, 0x35)
    }

    /// Connection `conn`'s responses (offsets count across every response
    /// of the connection).
    pub fn response(conn: u32) -> Self {
        Pattern::new(conn, 0xc3)
    }

    fn new(conn: u32, salt: u8) -> Self {
        Pattern {
            base: u64::from(conn).wrapping_mul(0x9e37_79b9),
            salt,
        }
    }

    fn state(&self, offset: u64) -> u64 {
        offset.wrapping_add(self.base).wrapping_mul(PATTERN_STEP)
    }

    /// Byte `offset`.
    pub fn byte(&self, offset: u64) -> u8 {
        (self.state(offset) >> 24) as u8 ^ self.salt
    }

    /// The next eight bytes from the eight lane states `x` (bytes `o` to
    /// `o + 7`), as a word in memory order; steps the lanes by eight.
    fn word(&self, x: &mut [u64; 8]) -> u64 {
        let mut bytes = [0u8; 8];
        for (b, x) in bytes.iter_mut().zip(x.iter_mut()) {
            *b = (*x >> 24) as u8 ^ self.salt;
            *x = x.wrapping_add(PATTERN_STEP.wrapping_mul(8));
        }
        u64::from_ne_bytes(bytes)
    }

    fn lanes(&self, offset: u64) -> [u64; 8] {
        std::array::from_fn(|j| self.state(offset.wrapping_add(j as u64)))
    }

    /// Fills `out` with the bytes from `offset` on.
    pub fn fill(&self, out: &mut [u8], offset: u64) {
        let mut x = self.lanes(offset);
        let mut words = out.chunks_exact_mut(8);
        for w in &mut words {
            w.copy_from_slice(&self.word(&mut x).to_ne_bytes());
        }
        let rest = words.into_remainder();
        let n = rest.len();
        rest.copy_from_slice(&self.word(&mut x).to_ne_bytes()[..n]);
    }

    /// Counts the bytes of `got` that differ from the pattern at `offset`.
    pub fn mismatches(&self, got: &[u8], offset: u64) -> u64 {
        let mut x = self.lanes(offset);
        let mut bad = 0u64;
        let mut words = got.chunks_exact(8);
        for w in &mut words {
            let diff = u64::from_ne_bytes(w.try_into().expect("eight bytes")) ^ self.word(&mut x);
            if diff != 0 {
                bad += u64::from(differing_bytes(diff));
            }
        }
        let rest = words.remainder();
        let expected = self.word(&mut x).to_ne_bytes();
        bad += rest.iter().zip(expected).filter(|&(&g, e)| g != e).count() as u64;
        bad
    }
}

/// The non-zero bytes of `w`.
fn differing_bytes(w: u64) -> u32 {
    w.to_ne_bytes().iter().filter(|&&b| b != 0).count() as u32
}

/// Fills `out` with the pattern starting at `offset`.
pub fn fill(out: &mut [u8], offset: u64, byte: impl Fn(u64) -> u8) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = byte(offset + i as u64);
    }
}

/// Counts the bytes of `got` that differ from the pattern at `offset`.
pub fn mismatches(got: &[u8], offset: u64, byte: impl Fn(u64) -> u8) -> u64 {
    got.iter()
        .enumerate()
        .filter(|&(i, &b)| b != byte(offset + i as u64))
        .count() as u64
}

/// Reads requests from a byte stream, header by header, checking payloads.
#[derive(Debug, Default)]
pub struct RequestReader {
    header: Vec<u8>,
    current: Option<Header>,
    /// Payload bytes of the current request read so far.
    got: u32,
    /// Payload offset across the connection's requests.
    offset: u64,
    /// Payload bytes that did not match the pattern.
    pub corrupt: u64,
}

/// What [`RequestReader::feed`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// A whole request (its header), with the request bytes it had.
    Complete(Header),
    /// Bytes that are no request header: the peer does not speak the protocol.
    Garbage,
}

impl RequestReader {
    /// Takes `data`; returns the requests completed in it, in order.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<Read>) {
        while !data.is_empty() {
            match self.current {
                None => {
                    let need = HEADER_LEN - self.header.len();
                    let take = need.min(data.len());
                    self.header.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.header.len() == HEADER_LEN {
                        match Header::decode(&self.header) {
                            Some(h) => {
                                self.header.clear();
                                self.got = 0;
                                if h.length == 0 {
                                    out.push(Read::Complete(h));
                                } else {
                                    self.current = Some(h);
                                }
                            }
                            None => {
                                self.header.clear();
                                out.push(Read::Garbage);
                                return;
                            }
                        }
                    }
                }
                Some(h) => {
                    let left = (h.length - self.got) as usize;
                    let take = left.min(data.len());
                    let conn = h.conn;
                    self.corrupt += Pattern::request(conn).mismatches(&data[..take], self.offset);
                    self.offset += take as u64;
                    self.got += take as u32;
                    data = &data[take..];
                    if self.got == h.length {
                        self.current = None;
                        out.push(Read::Complete(h));
                    }
                }
            }
        }
    }
}

/// Bytes waiting to go out on a connection: pattern responses and literal
/// bytes, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    parts: std::collections::VecDeque<Part>,
    /// Response-pattern offset of the next response byte.
    offset: u64,
}

#[derive(Debug)]
enum Part {
    Pattern {
        conn: u32,
        left: u64,
    },
    Bytes(Vec<u8>),
    Generated {
        byte: fn(u64) -> u8,
        offset: u64,
        left: u64,
    },
}

impl Outbox {
    /// Queues `n` response bytes of connection `conn`.
    pub fn pattern(&mut self, conn: u32, n: u64) {
        if n > 0 {
            self.parts.push_back(Part::Pattern { conn, left: n });
        }
    }
    /// Queues literal bytes.
    pub fn bytes(&mut self, b: Vec<u8>) {
        if !b.is_empty() {
            self.parts.push_back(Part::Bytes(b));
        }
    }
    /// Queues `n` bytes made by `byte` from offset 0 of this part (offsets
    /// count within the part, not across the connection).
    pub fn generated(&mut self, byte: fn(u64) -> u8, n: u64) {
        if n > 0 {
            self.parts.push_back(Part::Generated {
                byte,
                offset: 0,
                left: n,
            });
        }
    }
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
    /// Sends as much as `send` takes (it returns bytes taken, 0 when full);
    /// returns the bytes sent, or the first error.
    pub fn drain<E>(&mut self, mut send: impl FnMut(&[u8]) -> Result<usize, E>) -> Result<u64, E> {
        let mut sent = 0u64;
        let mut buf = [0u8; 4096];
        while let Some(part) = self.parts.front_mut() {
            let n = match part {
                Part::Pattern { conn, left } => {
                    let len = (*left).min(buf.len() as u64) as usize;
                    let c = *conn;
                    Pattern::response(c).fill(&mut buf[..len], self.offset);
                    let n = send(&buf[..len])?;
                    self.offset += n as u64;
                    *left -= n as u64;
                    if *left == 0 {
                        self.parts.pop_front();
                    }
                    n
                }
                Part::Bytes(b) => {
                    let n = send(b)?;
                    b.drain(..n);
                    if b.is_empty() {
                        self.parts.pop_front();
                    }
                    n
                }
                Part::Generated { byte, offset, left } => {
                    let len = (*left).min(buf.len() as u64) as usize;
                    fill(&mut buf[..len], *offset, *byte);
                    let n = send(&buf[..len])?;
                    *offset += n as u64;
                    *left -= n as u64;
                    if *left == 0 {
                        self.parts.pop_front();
                    }
                    n
                }
            };
            sent += n as u64;
            if n == 0 {
                break;
            }
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The pattern's definition, byte by byte.
    fn reference(conn: u32, offset: u64, salt: u8) -> u8 {
        let x = offset
            .wrapping_add(u64::from(conn).wrapping_mul(0x9e37_79b9))
            .wrapping_mul(0x2545_f491);
        (x >> 24) as u8 ^ salt
    }

    proptest! {
        #[test]
        fn pattern_runs_match_the_definition_and_count_every_flip(
            conn in any::<u32>(),
            offset in any::<u64>(),
            len in 0usize..600,
            flips in proptest::collection::btree_set(0usize..600, 0..20),
        ) {
            for (p, salt) in [(Pattern::request(conn), 0x35), (Pattern::response(conn), 0xc3)] {
                let mut run = vec![0u8; len];
                p.fill(&mut run, offset);
                for (i, &b) in run.iter().enumerate() {
                    let o = offset.wrapping_add(i as u64);
                    prop_assert_eq!(b, reference(conn, o, salt));
                    prop_assert_eq!(p.byte(o), b);
                }
                prop_assert_eq!(p.mismatches(&run, offset), 0);
                let mut bad = run.clone();
                let flipped = flips.iter().filter(|&&i| i < len).count();
                for &i in flips.iter().filter(|&&i| i < len) {
                    bad[i] ^= 0x5a;
                }
                prop_assert_eq!(p.mismatches(&bad, offset), flipped as u64);
            }
        }
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let h = Header {
            kind: Kind::Query,
            conn: 77,
            length: 48,
            response: 1024,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        let mut bad = h.encode();
        bad[0] = 0;
        assert_eq!(Header::decode(&bad), None);
        bad = h.encode();
        bad[2] = 9;
        assert_eq!(Header::decode(&bad), None);
        assert_eq!(Header::decode(&h.encode()[..10]), None);
    }

    #[test]
    fn reader_finds_requests_split_anywhere_and_counts_corruption() {
        let mut stream = Vec::new();
        for (i, len) in [0u32, 5, 300].iter().enumerate() {
            let h = Header {
                kind: Kind::Request,
                conn: 9,
                length: *len,
                response: i as u32,
            };
            stream.extend_from_slice(&h.encode());
            let off: u64 = [0u64, 0, 5][i];
            let mut p = vec![0u8; *len as usize];
            Pattern::request(9).fill(&mut p, off);
            stream.extend_from_slice(&p);
        }
        for split in [1usize, 7, 16, 17, 1000] {
            let mut r = RequestReader::default();
            let mut out = Vec::new();
            for chunk in stream.chunks(split) {
                r.feed(chunk, &mut out);
            }
            assert_eq!(out.len(), 3, "split {split}");
            assert_eq!(r.corrupt, 0);
        }
        let mut bad = stream.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        let mut r = RequestReader::default();
        let mut out = Vec::new();
        r.feed(&bad, &mut out);
        assert_eq!(r.corrupt, 1);
    }

    #[test]
    fn outbox_sends_in_order_through_a_narrow_window() {
        let mut o = Outbox::default();
        o.bytes(vec![1, 2, 3]);
        o.pattern(4, 10_000);
        let mut got = Vec::new();
        while !o.is_empty() {
            o.drain(|b: &[u8]| -> Result<usize, ()> {
                let n = b.len().min(333);
                got.extend_from_slice(&b[..n]);
                Ok(n)
            })
            .unwrap();
        }
        assert_eq!(&got[..3], &[1, 2, 3]);
        assert_eq!(Pattern::response(4).mismatches(&got[3..], 0), 0);
        assert_eq!(got.len(), 10_003);
    }

    #[test]
    fn generated_parts_count_their_offsets_from_zero() {
        fn byte(o: u64) -> u8 {
            (o % 251) as u8
        }
        let mut o = Outbox::default();
        o.generated(byte, 5000);
        o.bytes(vec![9]);
        o.generated(byte, 300);
        let mut got = Vec::new();
        while !o.is_empty() {
            o.drain(|b: &[u8]| -> Result<usize, ()> {
                let n = b.len().min(777);
                got.extend_from_slice(&b[..n]);
                Ok(n)
            })
            .unwrap();
        }
        assert_eq!(got.len(), 5301);
        assert_eq!(mismatches(&got[..5000], 0, byte), 0);
        assert_eq!(got[5000], 9);
        assert_eq!(mismatches(&got[5001..], 0, byte), 0);
    }
}
