//! Touches to the SDP str0m writes, for clients other than browsers.
//!
//! str0m puts the ICE candidates only in the first m-section (they are the same for every
//! section under BUNDLE) and never writes `a=end-of-candidates`. A client that reads the
//! candidates of another section — aiortc under `max-bundle` reads the section of its first
//! transport, which need not be the first one — then has none and waits in `checking`
//! forever. So every section that is not rejected gets the candidates and
//! `a=end-of-candidates` (the server trickles nothing: these are all it has). Text in, text
//! out; no I/O.

/// `sdp` with the candidate lines of its sections repeated in every accepted m-section,
/// each section ending its candidates with `a=end-of-candidates`.
pub fn candidates_in_every_section(sdp: &str) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = sdp.lines().collect();
    let mut candidates: Vec<&str> = Vec::new();
    for line in &lines {
        if line.starts_with("a=candidate:") && !candidates.contains(line) {
            candidates.push(line);
        }
    }
    if candidates.is_empty() {
        return sdp.to_string();
    }
    let mut out = String::with_capacity(sdp.len() + candidates.len() * 120);
    let mut section: Option<Vec<&str>> = None;
    let flush = |out: &mut String, section: Vec<&str>| {
        // `m=<media> 0 …` is a rejected section: no transport, no candidates.
        let rejected = section
            .first()
            .and_then(|m| m.split_whitespace().nth(1))
            .is_some_and(|port| port == "0");
        for l in &section {
            if !l.starts_with("a=candidate:") && *l != "a=end-of-candidates" {
                out.push_str(l);
                out.push_str(eol);
            }
        }
        if !rejected {
            for c in &candidates {
                out.push_str(c);
                out.push_str(eol);
            }
            out.push_str("a=end-of-candidates");
            out.push_str(eol);
        }
    };
    for line in lines {
        if line.starts_with("m=") {
            if let Some(done) = section.take() {
                flush(&mut out, done);
            }
            section = Some(vec![line]);
        } else if let Some(s) = section.as_mut() {
            s.push(line);
        } else {
            out.push_str(line);
            out.push_str(eol);
        }
    }
    if let Some(done) = section.take() {
        flush(&mut out, done);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STR0M_STYLE: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        a=group:BUNDLE 0 1 2\r\na=ice-lite\r\n\
        m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
        a=candidate:1 1 udp 2130706175 127.0.0.1 7882 typ host\r\n\
        a=candidate:2 1 tcp 1518280447 127.0.0.1 7881 typ host tcptype passive\r\n\
        a=ice-ufrag:abcd\r\na=mid:0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=mid:1\r\n\
        m=video 0 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n";

    fn section(sdp: &str, mid: &str) -> String {
        sdp.split("m=")
            .find(|s| s.contains(&format!("a=mid:{mid}\r\n")))
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_accepted_section_gets_the_candidates_and_their_end() {
        let out = candidates_in_every_section(STR0M_STYLE);
        for mid in ["0", "1"] {
            let s = section(&out, mid);
            assert!(
                s.contains("a=candidate:1 1 udp 2130706175 127.0.0.1 7882 typ host\r\n"),
                "{s}"
            );
            assert!(s.contains("tcptype passive\r\n"), "{s}");
            assert_eq!(s.matches("a=candidate:").count(), 2, "{s}");
            assert!(s.ends_with("a=end-of-candidates\r\n"), "{s}");
        }
        let rejected = section(&out, "2");
        assert!(!rejected.contains("a=candidate"), "{rejected}");
        assert!(out.starts_with("v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n"));
        // Idempotent: a second pass changes nothing.
        assert_eq!(candidates_in_every_section(&out), out);
    }

    #[test]
    fn an_sdp_without_candidates_is_left_alone() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n";
        assert_eq!(candidates_in_every_section(sdp), sdp);
    }
}
