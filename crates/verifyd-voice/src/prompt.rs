//! What a callout says: "your code is" and the digits, as 8 kHz PCM.
//!
//! Two sources:
//! - **Recorded prompts** for one language ([`crate::SipTrunkConfig::prompts_dir`], by default
//!   Debian's `asterisk-core-sounds-en-wav`): `digits/0.wav` … `digits/9.wav`, and optionally
//!   `your-code-is.wav` for the introduction. Loaded once at start, trimmed of leading and
//!   trailing silence.
//! - **espeak-ng** for every other locale (and for the introduction when the prompt
//!   directory has none): each digit and the introduction are synthesised once per voice,
//!   resampled from 22.05 kHz to 8 kHz and cached. The code itself never reaches espeak-ng:
//!   only the words "0" … "9" and the introduction do, so the spoken result is the same
//!   concatenation of clips as with recorded prompts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::wav::{self, Pcm};

/// The sample rate of G.711.
pub(crate) const RATE: u32 = 8000;

/// Samples quieter than this (in absolute value) count as silence when trimming clips.
const TRIM_THRESHOLD: i16 = 200;
/// Silence kept around a trimmed clip: 20 ms.
const TRIM_MARGIN: usize = 160;

/// The introduction, by language subtag, for espeak-ng.
const INTROS: &[(&str, &str)] = &[
    ("da", "Din kode er"),
    ("de", "Ihr Code lautet"),
    ("en", "Your code is"),
    ("es", "Su código es"),
    ("fi", "Koodisi on"),
    ("fr", "Votre code est"),
    ("it", "Il suo codice è"),
    ("nb", "Din kode er"),
    ("nl", "Uw code is"),
    ("no", "Din kode er"),
    ("pl", "Twój kod to"),
    ("pt", "O seu código é"),
    ("sv", "Din kod är"),
];

/// One language's clips, 8 kHz mono.
#[derive(Debug)]
pub(crate) struct PromptSet {
    /// "Your code is"; empty when there is none.
    intro: Vec<i16>,
    /// "0" … "9".
    digits: [Vec<i16>; 10],
}

/// How the clips are laid out in time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    /// Silence before the first word (the far end's jitter buffer eats the first ~100 ms).
    pub(crate) leading: Duration,
    /// Silence after the introduction and between digits.
    pub(crate) digit_gap: Duration,
    /// Silence between two repetitions.
    pub(crate) repeat_gap: Duration,
    /// Silence after the last digit, before the BYE.
    pub(crate) trailing: Duration,
    /// How many times the code is said.
    pub(crate) repeats: u32,
}

fn silence(d: Duration) -> impl Iterator<Item = i16> {
    std::iter::repeat_n(0, (d.as_secs_f64() * f64::from(RATE)).round() as usize)
}

impl PromptSet {
    /// The whole announcement for `code` (ASCII digits only; anything else is skipped).
    pub(crate) fn announce(&self, code: &str, layout: &Layout) -> Vec<i16> {
        let mut out: Vec<i16> = silence(layout.leading).collect();
        for round in 0..layout.repeats.max(1) {
            if round > 0 {
                out.extend(silence(layout.repeat_gap));
            }
            if !self.intro.is_empty() {
                out.extend_from_slice(&self.intro);
                out.extend(silence(layout.digit_gap));
            }
            for (i, d) in code.bytes().filter(u8::is_ascii_digit).enumerate() {
                if i > 0 {
                    out.extend(silence(layout.digit_gap));
                }
                out.extend_from_slice(&self.digits[usize::from(d - b'0')]);
            }
        }
        out.extend(silence(layout.trailing));
        out
    }
}

/// Why prompts could not be loaded or synthesised.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// A clip file could not be read or is not 16-bit PCM WAV.
    #[error("prompt {path}: {reason}")]
    Clip {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// espeak-ng failed or is missing.
    #[error("espeak-ng: {0}")]
    Speech(String),
}

/// All prompt sources of one channel.
#[derive(Debug)]
pub(crate) struct Prompts {
    /// The recorded set and the language subtag it serves.
    recorded: Option<(String, Arc<PromptSet>)>,
    /// The espeak-ng executable.
    espeak: PathBuf,
    /// Synthesised sets by locale (lower case). A std mutex: only looked up and inserted,
    /// never held across an `.await` (two concurrent first callouts in a new locale may
    /// both synthesise; the second insert wins, which is harmless).
    synthesised: Mutex<HashMap<String, Arc<PromptSet>>>,
}

/// The language subtag of a BCP 47 tag, lower case (`en-US` → `en`).
fn language(locale: &str) -> String {
    locale
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn intro_text(lang: &str) -> Option<&'static str> {
    INTROS.iter().find(|(l, _)| *l == lang).map(|(_, t)| *t)
}

async fn read_clip(path: &Path) -> Result<Vec<i16>, PromptError> {
    let clip_err = |reason: String| PromptError::Clip {
        path: path.to_owned(),
        reason,
    };
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|e| clip_err(e.to_string()))?;
    let pcm = wav::parse(&bytes).map_err(|e| clip_err(e.to_string()))?;
    Ok(pcm.resample(RATE).trim(TRIM_THRESHOLD, TRIM_MARGIN).samples)
}

impl Prompts {
    /// Loads the recorded set from `dir` (for `locale`'s language), if any.
    ///
    /// # Errors
    /// [`PromptError`] when a digit clip is missing or unreadable, or when the directory has
    /// no `your-code-is.wav` and espeak-ng cannot say the introduction.
    pub(crate) async fn load(
        dir: Option<&Path>,
        locale: &str,
        espeak: PathBuf,
    ) -> Result<Self, PromptError> {
        let mut prompts = Prompts {
            recorded: None,
            espeak,
            synthesised: Mutex::new(HashMap::new()),
        };
        if let Some(dir) = dir {
            let mut digits: [Vec<i16>; 10] = Default::default();
            for (d, clip) in digits.iter_mut().enumerate() {
                *clip = read_clip(&dir.join("digits").join(format!("{d}.wav"))).await?;
            }
            let lang = language(locale);
            let own_intro = dir.join("your-code-is.wav");
            let intro = if tokio::fs::try_exists(&own_intro).await.unwrap_or(false) {
                read_clip(&own_intro).await?
            } else if let Some(text) = intro_text(&lang) {
                prompts.say(&prompts.voice(locale).await?, text).await?
            } else {
                Vec::new()
            };
            prompts.recorded = Some((lang, Arc::new(PromptSet { intro, digits })));
        }
        Ok(prompts)
    }

    /// The set to speak `locale` with: the recorded one for its language, else espeak-ng.
    ///
    /// # Errors
    /// [`PromptError::Speech`] when espeak-ng is needed and fails.
    pub(crate) async fn for_locale(&self, locale: &str) -> Result<Arc<PromptSet>, PromptError> {
        let lang = language(locale);
        if let Some((recorded_lang, set)) = &self.recorded
            && (lang == *recorded_lang || lang.is_empty())
        {
            return Ok(set.clone());
        }
        let key = locale.to_ascii_lowercase();
        if let Some(set) = self
            .synthesised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(set.clone());
        }
        let voice = self.voice(locale).await?;
        let mut digits: [Vec<i16>; 10] = Default::default();
        for (d, clip) in digits.iter_mut().enumerate() {
            *clip = self.say(&voice, &d.to_string()).await?;
        }
        let intro = match intro_text(&lang) {
            Some(text) => self.say(&voice, text).await?,
            None => Vec::new(),
        };
        let set = Arc::new(PromptSet { intro, digits });
        self.synthesised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, set.clone());
        Ok(set)
    }

    /// The espeak-ng voice for `locale`: the full tag if espeak-ng knows it (`pt-br`), else
    /// the language (`sv`).
    async fn voice(&self, locale: &str) -> Result<String, PromptError> {
        let full = locale.replace('_', "-").to_ascii_lowercase();
        let lang = language(locale);
        for candidate in [full, lang] {
            if !candidate.is_empty() && self.synthesise(&candidate, "0").await.is_ok() {
                return Ok(candidate);
            }
        }
        Err(PromptError::Speech(format!(
            "no voice for locale {locale:?}"
        )))
    }

    /// `text` in `voice`, 8 kHz, trimmed.
    async fn say(&self, voice: &str, text: &str) -> Result<Vec<i16>, PromptError> {
        let pcm = self.synthesise(voice, text).await?;
        Ok(pcm.resample(RATE).trim(TRIM_THRESHOLD, TRIM_MARGIN).samples)
    }

    /// Runs espeak-ng with the text on stdin (never on the command line) and WAV on stdout.
    async fn synthesise(&self, voice: &str, text: &str) -> Result<Pcm, PromptError> {
        let speech = |e: String| PromptError::Speech(e);
        let mut child = tokio::process::Command::new(&self.espeak)
            .args(["-v", voice, "-s", "150", "--stdout", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                speech(format!(
                    "cannot run {}: {e} (apt-get install espeak-ng)",
                    self.espeak.display()
                ))
            })?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| speech("no stdin".into()))?;
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .await
            .map_err(|e| speech(e.to_string()))?;
        drop(stdin);
        let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
            .await
            .map_err(|_| speech("timed out".into()))?
            .map_err(|e| speech(e.to_string()))?;
        if !output.status.success() {
            return Err(speech(format!("voice {voice:?}: {}", output.status)));
        }
        wav::parse(&output.stdout).map_err(|e| speech(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> PromptSet {
        PromptSet {
            intro: vec![7; 3],
            digits: std::array::from_fn(|d| vec![d as i16 + 100; 2]),
        }
    }

    #[test]
    fn the_announcement_repeats_intro_and_digits_with_gaps() {
        let layout = Layout {
            leading: Duration::from_micros(250),   // 2 samples
            digit_gap: Duration::from_micros(125), // 1 sample
            repeat_gap: Duration::from_micros(375),
            trailing: Duration::from_micros(125),
            repeats: 2,
        };
        let once = [7, 7, 7, 0, 104, 104, 0, 102, 102];
        let mut want = vec![0, 0];
        want.extend(once);
        want.extend([0, 0, 0]);
        want.extend(once);
        want.push(0);
        assert_eq!(set().announce("42", &layout), want);
    }

    #[test]
    fn locales_reduce_to_their_language() {
        assert_eq!(language("en-US"), "en");
        assert_eq!(language("pt_BR"), "pt");
        assert_eq!(language(""), "");
        assert_eq!(intro_text("sv"), Some("Din kod är"));
        assert_eq!(intro_text("xx"), None);
    }
}
