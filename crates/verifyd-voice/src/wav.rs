//! Just enough WAV: read 16-bit PCM (the prompt clips, espeak-ng output, a handset's
//! recording), mix to mono and resample to the 8 kHz of G.711.

use std::f64::consts::PI;

/// Decoded 16-bit PCM audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcm {
    /// Samples per second.
    pub rate: u32,
    /// Mono samples (multi-channel input is averaged).
    pub samples: Vec<i16>,
}

/// Why a WAV could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    /// Not RIFF/WAVE, or a chunk is cut short.
    #[error("not a WAV file: {0}")]
    Malformed(&'static str),
    /// Not 16-bit integer PCM.
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
}

/// Parses a WAV file holding 16-bit PCM.
///
/// A `data` chunk whose size is 0 or runs past the end of the buffer is read to the end:
/// streaming writers (`espeak-ng --stdout`, a recorder that was killed) never fix the size up.
///
/// # Errors
/// [`WavError`] for anything but RIFF/WAVE with 16-bit PCM (format 1, or `WAVE_FORMAT_EXTENSIBLE`).
pub fn parse(bytes: &[u8]) -> Result<Pcm, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::Malformed("no RIFF/WAVE header"));
    }
    let mut pos = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let size = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body = pos + 8;
        if id == b"fmt " {
            let chunk = bytes
                .get(body..body + 16)
                .ok_or(WavError::Malformed("short fmt chunk"))?;
            let u16_at = |i: usize| u16::from_le_bytes([chunk[i], chunk[i + 1]]);
            let rate = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            format = Some((u16_at(0), u16_at(2), rate, u16_at(14)));
        } else if id == b"data" {
            let (tag, channels, rate, bits) =
                format.ok_or(WavError::Malformed("data before fmt"))?;
            // 1: PCM; 0xFFFE: WAVE_FORMAT_EXTENSIBLE (sndfile writes it for some layouts).
            if !(tag == 1 || tag == 0xFFFE) || bits != 16 {
                return Err(WavError::Unsupported(format!(
                    "format tag {tag}, {bits} bits per sample"
                )));
            }
            if channels == 0 || rate == 0 {
                return Err(WavError::Malformed("zero channels or rate"));
            }
            let end = if size == 0 || body + size > bytes.len() {
                bytes.len()
            } else {
                body + size
            };
            let frame = 2 * usize::from(channels);
            let samples = bytes[body..end]
                .chunks_exact(frame)
                .map(|f| {
                    let sum: i32 = f
                        .chunks_exact(2)
                        .map(|s| i32::from(i16::from_le_bytes([s[0], s[1]])))
                        .sum();
                    (sum / i32::from(channels)) as i16
                })
                .collect();
            return Ok(Pcm { rate, samples });
        }
        // Chunks are padded to an even size.
        pos = body.saturating_add(size + (size & 1));
    }
    Err(WavError::Malformed("no data chunk"))
}

impl Pcm {
    /// The same audio at `rate`, through a windowed-sinc low-pass at 90 % of the lower
    /// Nyquist frequency (so 22.05 kHz speech keeps everything up to 3.6 kHz at 8 kHz).
    pub fn resample(&self, rate: u32) -> Pcm {
        if rate == self.rate || self.samples.is_empty() {
            return Pcm {
                rate,
                samples: self.samples.clone(),
            };
        }
        const HALF_TAPS: i64 = 16;
        let step = f64::from(self.rate) / f64::from(rate);
        // Cut-off in cycles per input sample.
        let cutoff = 0.45 * f64::from(rate.min(self.rate)) / f64::from(self.rate);
        let out_len = ((self.samples.len() as f64) / step).floor() as usize;
        let mut out = Vec::with_capacity(out_len);
        for n in 0..out_len {
            let t = n as f64 * step;
            let centre = t.floor() as i64;
            let mut acc = 0.0;
            for k in centre - HALF_TAPS + 1..=centre + HALF_TAPS {
                let Some(&x) = usize::try_from(k).ok().and_then(|k| self.samples.get(k)) else {
                    continue;
                };
                let d = t - k as f64;
                let sinc = if d.abs() < 1e-9 {
                    2.0 * cutoff
                } else {
                    (2.0 * PI * cutoff * d).sin() / (PI * d)
                };
                // Hann window over ±HALF_TAPS input samples.
                let w = 0.5 + 0.5 * (PI * d / HALF_TAPS as f64).cos();
                acc += f64::from(x) * sinc * w;
            }
            out.push(acc.round().clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16);
        }
        Pcm { rate, samples: out }
    }

    /// Drops leading and trailing near-silence (below `threshold`), keeping `margin` samples
    /// of it on each side.
    pub fn trim(&self, threshold: i16, margin: usize) -> Pcm {
        let loud = |s: &i16| s.unsigned_abs() > threshold.unsigned_abs();
        let Some(first) = self.samples.iter().position(loud) else {
            return Pcm {
                rate: self.rate,
                samples: Vec::new(),
            };
        };
        let last = self.samples.iter().rposition(loud).unwrap_or(first);
        let start = first.saturating_sub(margin);
        let end = (last + 1 + margin).min(self.samples.len());
        Pcm {
            rate: self.rate,
            samples: self.samples[start..end].to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(channels: u16, rate: u32, samples: &[i16], data_size: Option<u32>) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"LIST");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(b"abc\0");
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_size.unwrap_or(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn reads_mono_and_mixes_stereo_skipping_odd_chunks() {
        let mono = parse(&wav(1, 8000, &[1, -2, 300], None)).unwrap();
        assert_eq!(
            mono,
            Pcm {
                rate: 8000,
                samples: vec![1, -2, 300]
            }
        );
        let stereo = parse(&wav(2, 16000, &[10, 20, -4, -6], None)).unwrap();
        assert_eq!(
            stereo,
            Pcm {
                rate: 16000,
                samples: vec![15, -5]
            }
        );
    }

    #[test]
    fn a_streamed_data_size_is_read_to_the_end() {
        let streamed = parse(&wav(1, 22050, &[5, 6, 7], Some(0x7fff_f000))).unwrap();
        assert_eq!(streamed.samples, vec![5, 6, 7]);
        let zero = parse(&wav(1, 22050, &[5, 6], Some(0))).unwrap();
        assert_eq!(zero.samples, vec![5, 6]);
    }

    #[test]
    fn rejects_what_is_not_16_bit_pcm() {
        assert!(parse(b"RIFF\0\0\0\0WAVE").is_err());
        let mut eight_bit = wav(1, 8000, &[0], None);
        eight_bit[34] = 8;
        assert!(matches!(parse(&eight_bit), Err(WavError::Unsupported(_))));
    }

    #[test]
    fn resampling_keeps_a_tone_in_band_and_its_length() {
        let tone: Vec<i16> = (0..22050)
            .map(|n| (10000.0 * (2.0 * PI * 1000.0 * n as f64 / 22050.0).sin()) as i16)
            .collect();
        let out = Pcm {
            rate: 22050,
            samples: tone,
        }
        .resample(8000);
        assert_eq!(out.rate, 8000);
        assert!((7990..=8000).contains(&out.samples.len()));
        let peak = out.samples[100..7900]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((9000..=11000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn trim_keeps_the_loud_part_and_a_margin() {
        let pcm = Pcm {
            rate: 8000,
            samples: vec![0, 1, 0, 900, -900, 2, 0, 0],
        };
        assert_eq!(pcm.trim(10, 1).samples, vec![0, 900, -900, 2]);
        assert!(
            Pcm {
                rate: 8000,
                samples: vec![0; 4]
            }
            .trim(10, 1)
            .samples
            .is_empty()
        );
    }
}
