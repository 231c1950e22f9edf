//! The UDP fast path's wire format: answers encoded once, when a name's node is built, and a
//! query answered by copying them behind its own header and question.
//!
//! Only the common case is answered here: one `IN` question for `A` or `AAAA` of a name the
//! zone holds (`<name>.vm.`, `<name>.<host>.vm.`, `<host>.vm.`), a plain query (QR=0, opcode
//! QUERY, no answer or authority records), with no EDNS or with an EDNS version 0 OPT record
//! whose options are well formed and that does not ask for DNSSEC. The answer is what the
//! hickory handler gives for the same query: NOERROR, AA, RD and CD copied, the records
//! (owner name compressed to the question) or, when the name has none of that type, no answer
//! and the SOA in the authority section; an OPT record with the requester's payload size (at
//! least 512) when the query had one. Anything else — another type or class, a name the zone
//! does not hold (NXDOMAIN), DNSSEC, a response that would not fit — returns `None` and goes
//! to hickory.

use std::net::IpAddr;

/// DNS header length.
const HEADER: usize = 12;
/// Type A.
const TYPE_A: u16 = 1;
/// Type AAAA.
const TYPE_AAAA: u16 = 28;
/// Type OPT.
const TYPE_OPT: u16 = 41;
/// Class IN.
const CLASS_IN: u16 = 1;
/// The largest UDP response without EDNS.
const PLAIN_UDP_MAX: u16 = 512;
/// A compression pointer to the question's name, which always starts right after the header.
const QUESTION_NAME_POINTER: [u8; 2] = [0xC0, 12];

/// The encoded resource records of one type at one name, ready to follow a question.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedSet {
    /// How many records.
    pub count: u16,
    /// The records, each with its owner as a pointer to the question's name.
    pub bytes: Box<[u8]>,
}

/// A name's pre-encoded A and AAAA answers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedAnswers {
    /// The A records (empty: none).
    pub a: EncodedSet,
    /// The AAAA records (empty: none).
    pub aaaa: EncodedSet,
}

impl EncodedAnswers {
    /// Encodes the addresses `addrs` with `ttl`, in order, each distinct address once (as a
    /// record set holds it).
    pub fn new<'a>(ttl: u32, addrs: impl IntoIterator<Item = &'a IpAddr>) -> Self {
        let mut seen: Vec<IpAddr> = Vec::new();
        let (mut a, mut aaaa) = (Vec::new(), Vec::new());
        let (mut na, mut naaaa) = (0u16, 0u16);
        for addr in addrs {
            if seen.contains(addr) {
                continue;
            }
            seen.push(*addr);
            let (out, n, rtype, rdata): (_, _, _, Vec<u8>) = match addr {
                IpAddr::V4(v4) => (&mut a, &mut na, TYPE_A, v4.octets().to_vec()),
                IpAddr::V6(v6) => (&mut aaaa, &mut naaaa, TYPE_AAAA, v6.octets().to_vec()),
            };
            out.extend_from_slice(&QUESTION_NAME_POINTER);
            out.extend_from_slice(&rtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&ttl.to_be_bytes());
            // An address is 4 or 16 bytes.
            out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(u16::MAX).to_be_bytes());
            out.extend_from_slice(&rdata);
            *n = n.saturating_add(1);
        }
        Self {
            a: EncodedSet {
                count: na,
                bytes: a.into(),
            },
            aaaa: EncodedSet {
                count: naaaa,
                bytes: aaaa.into(),
            },
        }
    }
}

/// The SOA of the zone as one authority record (owner `vm.` written out), for NODATA answers.
pub fn encode_soa(
    ttl: u32,
    mname: &str,
    rname: &str,
    serial: u32,
    timers: [i32; 3],
    minimum: u32,
) -> Box<[u8]> {
    let mut rdata = Vec::new();
    push_name(&mut rdata, mname);
    push_name(&mut rdata, rname);
    rdata.extend_from_slice(&serial.to_be_bytes());
    for t in timers {
        rdata.extend_from_slice(&t.to_be_bytes());
    }
    rdata.extend_from_slice(&minimum.to_be_bytes());
    let mut out = Vec::new();
    push_name(&mut out, banger_proto::dns::ZONE);
    out.extend_from_slice(&6u16.to_be_bytes()); // SOA
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    // Two names of at most 255 bytes and 20 bytes of numbers.
    out.extend_from_slice(&u16::try_from(rdata.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(&rdata);
    out.into()
}

/// The lowercase wire form of a dotted name (`web.vm.` → `\x03web\x02vm\x00`), the key the fast
/// path looks names up by.
pub fn wire_key(fqdn: &str) -> WireKey {
    let mut out = Vec::with_capacity(fqdn.len() + 2);
    push_name(&mut out, &fqdn.to_ascii_lowercase());
    WireKey::new(&out)
}

/// How many bytes of a [`WireKey`] are stored inline (`<name>.<host>.vm.` with a 20-byte VM name
/// and a 20-byte host id fits).
const INLINE_KEY: usize = 46;

/// A name in wire form as a map key: inline when short (no pointer to follow, so comparing it
/// with the question reads the entry's own cache line), boxed otherwise. Hashes and compares as
/// the byte slice, so a map keyed by it is looked up with a `&[u8]`.
#[derive(Debug, Clone)]
pub enum WireKey {
    /// Up to [`INLINE_KEY`] bytes.
    Inline {
        /// How many bytes of `bytes` are the name.
        len: u8,
        /// The name, then zeroes.
        bytes: [u8; INLINE_KEY],
    },
    /// A longer name.
    Boxed(Box<[u8]>),
}

impl WireKey {
    /// The key of `name` (wire form).
    pub fn new(name: &[u8]) -> Self {
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..name.len()].copy_from_slice(name);
                Self::Inline { len, bytes }
            }
            _ => Self::Boxed(name.into()),
        }
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Boxed(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for WireKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for WireKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for WireKey {}

impl std::hash::Hash for WireKey {
    /// As the slice hashes: `Borrow<[u8]>` requires it.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

fn push_name(out: &mut Vec<u8>, dotted: &str) {
    for label in dotted.split('.').filter(|l| !l.is_empty()) {
        // Labels of names the zone forms are validated to at most 63 bytes.
        let len = label.len().min(63);
        out.push(u8::try_from(len).unwrap_or(63));
        out.extend_from_slice(&label.as_bytes()[..len]);
    }
    out.push(0);
}

/// What a query asks, when the fast path can answer it.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'q> {
    /// The question's name, lowercased, in wire form (in the caller's buffer).
    pub key: &'q [u8],
    /// Where the question ends in the query.
    pub question_end: usize,
    /// A (false) or AAAA (true).
    pub aaaa: bool,
    /// The requester's EDNS payload size when the query carried an OPT record.
    pub edns_payload: Option<u16>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Parses `query` for the fast path, writing the lowercased name into `key_buf`; `None` when
/// the query is anything but the plain case the fast path answers.
pub fn parse<'k>(query: &[u8], key_buf: &'k mut [u8; 256]) -> Option<Parsed<'k>> {
    if query.len() < HEADER + 5 {
        return None;
    }
    let (flags_hi, flags_lo) = (query[2], query[3]);
    // QR=0, opcode 0 (QUERY), AA=0, TC=0; Z=0 and RCODE 0 (AD and CD may be set).
    if flags_hi & 0xFE != 0 || flags_lo & 0x4F != 0 {
        return None;
    }
    if u16_at(query, 4)? != 1 || u16_at(query, 6)? != 0 || u16_at(query, 8)? != 0 {
        return None;
    }
    let additional = u16_at(query, 10)?;
    if additional > 1 {
        return None;
    }
    let mut at = HEADER;
    let mut key_len = 0;
    loop {
        let len_byte = *query.get(at)?;
        let len = usize::from(len_byte);
        if len == 0 {
            key_buf[key_len] = 0;
            key_len += 1;
            at += 1;
            break;
        }
        // A compression pointer or a reserved label type: not in a plain query.
        if len > 63 || key_len + len + 2 > key_buf.len() {
            return None;
        }
        let label = query.get(at + 1..at + 1 + len)?;
        key_buf[key_len] = len_byte;
        for (dst, src) in key_buf[key_len + 1..key_len + 1 + len]
            .iter_mut()
            .zip(label)
        {
            *dst = src.to_ascii_lowercase();
        }
        key_len += 1 + len;
        at += 1 + len;
    }
    let aaaa = match u16_at(query, at)? {
        TYPE_A => false,
        TYPE_AAAA => true,
        _ => return None,
    };
    if u16_at(query, at + 2)? != CLASS_IN {
        return None;
    }
    let question_end = at + 4;
    let edns_payload = if additional == 1 {
        Some(parse_opt(query, question_end)?)
    } else {
        if question_end != query.len() {
            return None;
        }
        None
    };
    Some(Parsed {
        key: &key_buf[..key_len],
        question_end,
        aaaa,
        edns_payload,
    })
}

/// The payload size of the OPT record at `at`, when it is the last thing in `query`, version 0,
/// without DNSSEC OK, with well-formed options.
fn parse_opt(query: &[u8], at: usize) -> Option<u16> {
    // Root owner, type OPT.
    if *query.get(at)? != 0 || u16_at(query, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(query, at + 3)?;
    let (ext_rcode, version) = (*query.get(at + 5)?, *query.get(at + 6)?);
    let flags = u16_at(query, at + 7)?;
    if ext_rcode != 0 || version != 0 || flags != 0 {
        return None;
    }
    let rdlen = usize::from(u16_at(query, at + 9)?);
    let start = at + 11;
    if start + rdlen != query.len() {
        return None;
    }
    let mut o = start;
    while o < query.len() {
        let len = usize::from(u16_at(query, o + 2)?);
        o += 4 + len;
    }
    (o == query.len()).then_some(payload)
}

/// Writes the response to `query` (parsed as `parsed`) into `out`: `answers` when the name has
/// records of the asked type, else no answer and `soa` in the authority section. `false` when
/// the response would not fit the requester's UDP size (hickory answers, truncating).
pub fn respond(
    query: &[u8],
    parsed: &Parsed<'_>,
    answers: &EncodedAnswers,
    soa: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let set = if parsed.aaaa {
        &answers.aaaa
    } else {
        &answers.a
    };
    let (ancount, nscount, body): (u16, u16, &[u8]) = if set.count > 0 {
        (set.count, 0, &set.bytes)
    } else {
        (0, 1, soa)
    };
    const OPT_LEN: usize = 11;
    let len = parsed.question_end
        + body.len()
        + if parsed.edns_payload.is_some() {
            OPT_LEN
        } else {
            0
        };
    let limit = usize::from(
        parsed
            .edns_payload
            .map_or(PLAIN_UDP_MAX, |p| p.max(PLAIN_UDP_MAX)),
    );
    if len > limit {
        return false;
    }
    out.clear();
    out.extend_from_slice(&query[..2]);
    // QR, AA, RD as asked; CD as asked; RCODE NOERROR.
    out.push(0x84 | (query[2] & 0x01));
    out.push(query[3] & 0x10);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&nscount.to_be_bytes());
    out.extend_from_slice(&u16::from(parsed.edns_payload.is_some()).to_be_bytes());
    out.extend_from_slice(&query[HEADER..parsed.question_end]);
    out.extend_from_slice(body);
    if let Some(payload) = parsed.edns_payload {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&payload.max(PLAIN_UDP_MAX).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_server::proto::op::{Edns, Message, MessageType, Query, ResponseCode};
    use hickory_server::proto::rr::{Name, RData, RecordType};
    use hickory_server::proto::serialize::binary::BinDecodable as _;

    fn query(name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0xBEEF;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            m.edns = Some(e);
        }
        m.to_vec().unwrap()
    }

    fn answers() -> EncodedAnswers {
        let addrs: Vec<IpAddr> = vec![
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
        ];
        EncodedAnswers::new(5, &addrs)
    }

    fn soa() -> Box<[u8]> {
        encode_soa(
            7,
            "localhost.",
            "nobody.invalid.",
            42,
            [3600, 600, 86400],
            7,
        )
    }

    #[test]
    fn an_a_query_is_answered_from_the_encoded_records() {
        let q = query("WeB.Vm.", RecordType::A, false);
        let mut buf = [0u8; 256];
        let p = parse(&q, &mut buf).unwrap();
        assert_eq!(p.key, wire_key("web.vm.").as_bytes());
        let mut out = Vec::new();
        assert!(respond(&q, &p, &answers(), &soa(), &mut out));
        let m = Message::from_bytes(&out).unwrap();
        assert_eq!(m.metadata.id, 0xBEEF);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert!(m.metadata.authoritative && m.metadata.recursion_desired);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries[0].name().to_string(), "WeB.Vm.");
        let got: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(got, ["10.0.0.2", "10.0.0.3"]);
        assert!(m.answers.iter().all(|r| r.ttl == 5));
        assert!(m.edns.is_none());
    }

    #[test]
    fn aaaa_of_an_ipv4_name_is_nodata_with_the_soa() {
        let q = query("web.vm.", RecordType::AAAA, true);
        let mut buf = [0u8; 256];
        let p = parse(&q, &mut buf).unwrap();
        let mut out = Vec::new();
        assert!(respond(&q, &p, &answers(), &soa(), &mut out));
        let m = Message::from_bytes(&out).unwrap();
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        let RData::SOA(s) = &m.authorities[0].data else {
            panic!("not an SOA: {:?}", m.authorities[0]);
        };
        assert_eq!(s.serial, 42);
        assert_eq!(m.authorities[0].ttl, 7);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    }

    #[test]
    fn a_wire_key_hashes_and_compares_as_its_bytes_inline_or_boxed() {
        use std::hash::BuildHasher as _;
        let long = format!("{}.{}.vm.", "a".repeat(40), "b".repeat(40));
        for fqdn in ["web.vm.", "WEB.lab1.VM.", long.as_str()] {
            let key = wire_key(fqdn);
            let mut expected = Vec::new();
            push_name(&mut expected, &fqdn.to_ascii_lowercase());
            assert_eq!(key.as_bytes(), &expected[..], "{fqdn}");
            assert_eq!(
                matches!(key, WireKey::Inline { .. }),
                expected.len() <= INLINE_KEY,
                "{fqdn}"
            );
            let hasher = foldhash::fast::RandomState::default();
            assert_eq!(
                hasher.hash_one(&key),
                hasher.hash_one(&expected[..]),
                "{fqdn}"
            );
            let map: std::collections::HashMap<WireKey, u8, _> =
                std::iter::once((key.clone(), 1)).collect::<std::collections::HashMap<_, _>>();
            assert_eq!(map.get(&expected[..]), Some(&1), "{fqdn}");
        }
        assert_ne!(wire_key("web.vm."), wire_key("webs.vm."));
    }

    #[test]
    fn other_queries_are_left_to_hickory() {
        let mut buf = [0u8; 256];
        for q in [
            query("web.vm.", RecordType::TXT, false),
            query("web.vm.", RecordType::ANY, false),
            {
                let mut q = query("web.vm.", RecordType::A, false);
                q[2] |= 0x80; // a response
                q
            },
            {
                let mut q = query("web.vm.", RecordType::A, false);
                q.push(0); // trailing garbage
                q
            },
            {
                let mut q = query("web.vm.", RecordType::A, true);
                let n = q.len();
                q[n - 4] = 0x80; // DNSSEC OK
                q
            },
            query("web.vm.", RecordType::A, false)[..14].to_vec(),
        ] {
            assert!(parse(&q, &mut buf).is_none(), "{q:?}");
        }
    }
}
