//! Finding the peer a datagram belongs to, with map lookups only.
//!
//! A STUN binding request names our ICE username fragment (`USERNAME = ours:theirs`), which
//! identifies the peer; every other datagram (DTLS, SRTP, SRTCP) is matched by its source
//! address, learned from that peer's STUN checks. This is how a browser that hides its host
//! addresses behind mDNS names still connects: the address its checks come from is the one
//! that counts. Each peer may have a few addresses (bounded), all dropped when it goes.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::PeerId;

/// Most remote addresses one peer may be known by.
pub const MAX_ADDRS_PER_PEER: usize = 8;

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;

/// Whether the datagram looks like STUN (RFC 5389 header with the magic cookie).
pub fn is_stun(d: &[u8]) -> bool {
    d.len() >= 20 && d[0] < 2 && d[4..8] == STUN_MAGIC
}

/// Our ufrag from a STUN message's USERNAME attribute (`ours:theirs`), if present.
pub fn stun_local_ufrag(d: &[u8]) -> Option<&str> {
    if !is_stun(d) {
        return None;
    }
    let len = u16::from_be_bytes([d[2], d[3]]) as usize;
    let body = d.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let kind = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + alen)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next();
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// The maps from ufrag and address to peer.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, PeerId>,
    by_addr: HashMap<SocketAddr, PeerId>,
    addrs: HashMap<PeerId, Vec<SocketAddr>>,
}

impl Demux {
    /// Registers a peer's local ufrag.
    pub fn add_peer(&mut self, peer: PeerId, ufrag: String) {
        self.by_ufrag.insert(ufrag, peer);
    }

    /// The peer whose local ufrag is `ufrag`.
    pub fn peer_by_ufrag(&self, ufrag: &str) -> Option<PeerId> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// After an ICE restart: `peer`'s checks name `new` from now on (its addresses stay
    /// known until the new checks replace them).
    pub fn rename(&mut self, peer: PeerId, old: &str, new: String) {
        if self.by_ufrag.get(old) == Some(&peer) {
            self.by_ufrag.remove(old);
        }
        self.by_ufrag.insert(new, peer);
    }

    /// Forgets a peer and every address it was known by.
    pub fn remove_peer(&mut self, peer: PeerId, ufrag: &str) {
        if self.by_ufrag.get(ufrag) == Some(&peer) {
            self.by_ufrag.remove(ufrag);
        }
        for addr in self.addrs.remove(&peer).unwrap_or_default() {
            if self.by_addr.get(&addr) == Some(&peer) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// The peer a datagram from `source` belongs to.
    pub fn lookup(&self, source: SocketAddr, datagram: &[u8]) -> Option<PeerId> {
        if let Some(ufrag) = stun_local_ufrag(datagram) {
            return self.by_ufrag.get(ufrag).copied();
        }
        self.by_addr.get(&source).copied()
    }

    /// Remembers that `peer` sends from `source` (after the peer accepted a STUN check from
    /// it). An address that moves to another peer is taken from the old one; a peer's oldest
    /// address is forgotten past [`MAX_ADDRS_PER_PEER`].
    pub fn learn(&mut self, peer: PeerId, source: SocketAddr) {
        match self.by_addr.insert(source, peer) {
            Some(old) if old == peer => return,
            Some(old) => {
                if let Some(list) = self.addrs.get_mut(&old) {
                    list.retain(|a| *a != source);
                }
            }
            None => {}
        }
        let list = self.addrs.entry(peer).or_default();
        list.push(source);
        if list.len() > MAX_ADDRS_PER_PEER {
            let gone = list.remove(0);
            if self.by_addr.get(&gone) == Some(&peer) {
                self.by_addr.remove(&gone);
            }
        }
    }

    /// Number of peers known by ufrag.
    pub fn peer_count(&self) -> usize {
        self.by_ufrag.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plenary_sfu::ParticipantKey;

    fn stun_with_username(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        // A PRIORITY attribute first, so the parser has to skip one.
        attr.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut d = vec![0x00, 0x01];
        d.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        d.extend_from_slice(&STUN_MAGIC);
        d.extend_from_slice(&[7; 12]);
        d.extend_from_slice(&attr);
        d
    }

    #[test]
    fn parses_our_ufrag_from_username() {
        let d = stun_with_username("srv1:cli9x");
        assert_eq!(stun_local_ufrag(&d), Some("srv1"));
        assert_eq!(stun_local_ufrag(&d[..22]), None, "truncated");
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None, "RTP is not STUN");
    }

    #[test]
    fn stun_goes_by_ufrag_then_media_by_address() {
        let mut m = Demux::default();
        let a = ParticipantKey(1);
        let b = ParticipantKey(2);
        m.add_peer(a, "ua".into());
        m.add_peer(b, "ub".into());
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(m.lookup(src, &stun_with_username("ub:x")), Some(b));
        assert_eq!(m.lookup(src, &[0x80, 0, 0, 0]), None, "unknown address");
        m.learn(b, src);
        assert_eq!(m.lookup(src, &[0x80, 0, 0, 0]), Some(b));
        // The address moves to a (e.g. a NAT reused the port).
        m.learn(a, src);
        assert_eq!(m.lookup(src, &[0x80]), Some(a));
        m.remove_peer(b, "ub");
        assert_eq!(
            m.lookup(src, &[0x80]),
            Some(a),
            "b's removal keeps a's address"
        );
        // An ICE restart gives a a new ufrag: checks naming the old one find nobody.
        m.rename(a, "ua", "ua2".into());
        assert_eq!(m.lookup(src, &stun_with_username("ua:x")), None);
        assert_eq!(m.lookup(src, &stun_with_username("ua2:y")), Some(a));
        assert_eq!(m.peer_by_ufrag("ua2"), Some(a));
        m.remove_peer(a, "ua2");
        assert_eq!(m.lookup(src, &[0x80]), None);
        assert_eq!(m.peer_count(), 0);
    }

    #[test]
    fn addresses_per_peer_are_bounded() {
        let mut m = Demux::default();
        let a = ParticipantKey(1);
        m.add_peer(a, "ua".into());
        for port in 0..20u16 {
            m.learn(a, SocketAddr::from(([127, 0, 0, 1], 6000 + port)));
        }
        let first = SocketAddr::from(([127, 0, 0, 1], 6000));
        let last = SocketAddr::from(([127, 0, 0, 1], 6019));
        assert_eq!(m.lookup(first, &[0x80]), None);
        assert_eq!(m.lookup(last, &[0x80]), Some(a));
        assert_eq!(m.by_addr.len(), MAX_ADDRS_PER_PEER);
    }
}
