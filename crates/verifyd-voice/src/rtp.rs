//! Sending one G.711 stream: 20 ms packets of 160 samples, paced by a ticker.
//!
//! RTP header (RFC 3550) via `rtp-rs`: version 2, the law's static payload type, a random
//! SSRC and initial sequence number and timestamp, the marker bit on the first packet
//! (start of a talk spurt), the timestamp advancing by 160 per packet. Packets go out of
//! the socket whose port the offer advertised (symmetric RTP). Nothing is read back.

use std::net::SocketAddr;
use std::time::Duration;

use rtp_rs::{RtpPacketBuilder, Seq};
use tokio::net::UdpSocket;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::g711::Law;

/// Samples (and payload bytes) per packet: 20 ms at 8 kHz.
pub(crate) const FRAME: usize = 160;
const PTIME: Duration = Duration::from_millis(20);

/// What the stream did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Played {
    /// Packets sent.
    pub(crate) packets: u32,
    /// Whether `stop` ended it before the last packet.
    pub(crate) interrupted: bool,
}

/// Sends `samples` to `remote` in real time, until the end or until `stop` fires.
///
/// # Errors
/// The socket's error if a send fails for any reason but a refused port (an ICMP
/// port-unreachable from an earlier packet, which a far end that has not opened its port
/// yet causes: the stream goes on).
pub(crate) async fn play(
    socket: &UdpSocket,
    remote: SocketAddr,
    law: Law,
    samples: &[i16],
    stop: &CancellationToken,
) -> std::io::Result<Played> {
    let mut payload: Vec<u8> = samples.iter().map(|&s| law.encode(s)).collect();
    let frames = payload.len().div_ceil(FRAME);
    payload.resize(frames * FRAME, law.silence());

    let ssrc: u32 = rand::random();
    let mut seq = Seq::from(rand::random::<u16>());
    let mut timestamp: u32 = rand::random();
    let mut packet = [0u8; 12 + FRAME];
    let mut ticker = tokio::time::interval_at(Instant::now(), PTIME);
    // A late tick is sent at once: the far end's clock is the timestamp, not arrival time.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut played = Played {
        packets: 0,
        interrupted: false,
    };
    for (i, chunk) in payload.chunks_exact(FRAME).enumerate() {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                played.interrupted = true;
                break;
            }
            _ = ticker.tick() => {}
        }
        let len = RtpPacketBuilder::new()
            .payload_type(law.payload_type())
            .ssrc(ssrc)
            .sequence(seq)
            .timestamp(timestamp)
            .marked(i == 0)
            .payload(chunk)
            .build_into(&mut packet)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        match socket.send_to(&packet[..len], remote).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
        played.packets += 1;
        seq = seq.next();
        timestamp = timestamp.wrapping_add(FRAME as u32);
    }
    Ok(played)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtp_rs::RtpReader;

    #[tokio::test]
    async fn packets_carry_160_encoded_samples_with_rising_seq_and_timestamp() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let samples: Vec<i16> = (0..400).map(|n| (n * 50) as i16).collect();
        let played = play(
            &tx,
            rx.local_addr().unwrap(),
            Law::A,
            &samples,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(
            played,
            Played {
                packets: 3,
                interrupted: false
            }
        );

        let mut buf = [0u8; 2048];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = rx.recv(&mut buf).await.unwrap();
            let p = RtpReader::new(&buf[..n]).unwrap();
            got.push((
                p.mark(),
                u16::from(p.sequence_number()),
                p.timestamp(),
                p.payload().to_vec(),
            ));
            assert_eq!(p.payload_type(), 8);
            assert_eq!(p.payload().len(), FRAME);
        }
        assert!(got[0].0 && !got[1].0 && !got[2].0);
        assert_eq!(got[1].1, got[0].1.wrapping_add(1));
        assert_eq!(got[2].2, got[0].2.wrapping_add(320));
        assert_eq!(got[0].3[5], Law::A.encode(250));
        // The last frame is padded with silence.
        assert_eq!(got[2].3[159], Law::A.silence());
    }

    #[tokio::test]
    async fn stop_ends_the_stream_early() {
        let rx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        let played = play(&tx, rx.local_addr().unwrap(), Law::Mu, &[0; 8000], &stop)
            .await
            .unwrap();
        assert_eq!(
            played,
            Played {
                packets: 0,
                interrupted: true
            }
        );
    }
}
