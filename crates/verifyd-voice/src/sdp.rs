//! The SDP we offer and the two facts we read from an answer (RFC 4566, RFC 3264).

use std::net::{IpAddr, SocketAddr};

use crate::g711::Law;

/// The RFC 4733 `telephone-event` payload type we offer.
const TELEPHONE_EVENT_PT: u8 = 101;

/// An audio offer: PCMU and PCMA (in that order of preference) plus `telephone-event`,
/// 20 ms packets, `sendrecv` (a `sendonly` offer makes some handsets record nothing).
pub(crate) fn offer(media: SocketAddr, session_id: u64) -> String {
    let ip = media.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mu = Law::Mu.payload_type();
    let a = Law::A.payload_type();
    format!(
        "v=0\r\n\
         o=verifyd {session_id} {session_id} IN {family} {ip}\r\n\
         s=verifyd\r\n\
         c=IN {family} {ip}\r\n\
         t=0 0\r\n\
         m=audio {port} RTP/AVP {mu} {a} {TELEPHONE_EVENT_PT}\r\n\
         a=rtpmap:{mu} PCMU/8000\r\n\
         a=rtpmap:{a} PCMA/8000\r\n\
         a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/8000\r\n\
         a=fmtp:{TELEPHONE_EVENT_PT} 0-16\r\n\
         a=ptime:20\r\n\
         a=sendrecv\r\n",
        port = media.port(),
    )
}

/// What an answer says about where and how to send audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    /// The far end's RTP address: the audio section's `c=` (or the session's) and its port.
    pub(crate) rtp: SocketAddr,
    /// The first G.711 law in the answer's payload list.
    pub(crate) law: Law,
}

/// What an unusable answer lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AnswerError {
    /// An `m=audio` line with a non-zero port.
    #[error("the answer has no active audio stream")]
    Audio,
    /// A usable `c=` line.
    #[error("the answer has no connection address")]
    Address,
    /// PCMU or PCMA.
    #[error("the answer accepts neither PCMU nor PCMA")]
    Codec,
}

/// Reads the first audio stream of an SDP answer.
pub(crate) fn parse_answer(sdp: &str) -> Result<Answer, AnswerError> {
    let mut session_addr: Option<IpAddr> = None;
    let mut audio: Option<(u16, Vec<u8>, Option<IpAddr>)> = None;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            if audio.is_some() {
                break;
            }
            let mut parts = m.split_whitespace();
            in_audio = parts.next() == Some("audio");
            if in_audio {
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0);
                let _proto = parts.next();
                let pts = parts.filter_map(|p| p.parse().ok()).collect();
                audio = Some((port, pts, None));
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            // c=IN IP4 192.0.2.1 (a multicast "/ttl" suffix is dropped).
            let addr = c
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next())
                .and_then(|a| a.parse().ok());
            match (&mut audio, in_audio) {
                (Some((_, _, media_addr)), true) => *media_addr = addr,
                (None, _) => session_addr = addr,
                _ => {}
            }
        }
    }
    let (port, pts, media_addr) = audio.ok_or(AnswerError::Audio)?;
    if port == 0 {
        return Err(AnswerError::Audio);
    }
    let ip = media_addr
        .or(session_addr)
        .filter(|ip| !ip.is_unspecified())
        .ok_or(AnswerError::Address)?;
    let law = pts
        .iter()
        .find_map(|&pt| Law::from_payload_type(pt))
        .ok_or(AnswerError::Codec)?;
    Ok(Answer {
        rtp: SocketAddr::new(ip, port),
        law,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_lists_both_laws_and_sendrecv() {
        let sdp = offer("127.0.0.1:40002".parse().unwrap(), 7);
        assert!(sdp.contains("c=IN IP4 127.0.0.1\r\n"));
        assert!(sdp.contains("m=audio 40002 RTP/AVP 0 8 101\r\n"));
        assert!(sdp.contains("a=ptime:20\r\n"));
        assert!(sdp.contains("a=sendrecv\r\n"));
        assert!(offer("[::1]:5004".parse().unwrap(), 1).contains("c=IN IP6 ::1\r\n"));
    }

    #[test]
    fn reads_baresips_answer() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40010 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n";
        let answer = parse_answer(sdp).unwrap();
        assert_eq!(answer.rtp, "127.0.0.1:40010".parse().unwrap());
        assert_eq!(answer.law, Law::Mu);
    }

    #[test]
    fn a_media_level_address_and_pcma_win() {
        let sdp = "v=0\nc=IN IP4 192.0.2.1\nm=audio 5000 RTP/AVP 8 0\nc=IN IP4 127.0.0.2\n\
                   m=video 5002 RTP/AVP 96\nc=IN IP4 192.0.2.9\n";
        let answer = parse_answer(sdp).unwrap();
        assert_eq!(answer.rtp, "127.0.0.2:5000".parse().unwrap());
        assert_eq!(answer.law, Law::A);
    }

    #[test]
    fn unusable_answers_are_told_apart() {
        assert_eq!(
            parse_answer("v=0\nc=IN IP4 1.2.3.4\n"),
            Err(AnswerError::Audio)
        );
        assert_eq!(
            parse_answer("c=IN IP4 1.2.3.4\nm=audio 0 RTP/AVP 0\n"),
            Err(AnswerError::Audio)
        );
        assert_eq!(
            parse_answer("m=audio 5000 RTP/AVP 0\n"),
            Err(AnswerError::Address)
        );
        assert_eq!(
            parse_answer("c=IN IP4 1.2.3.4\nm=audio 5000 RTP/AVP 9 18\n"),
            Err(AnswerError::Codec)
        );
    }
}
