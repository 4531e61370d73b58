//! `Accept-Language` negotiation and per-locale message templates.

use std::collections::BTreeMap;

/// The placeholder replaced by the code in every template.
pub const CODE_PLACEHOLDER: &str = "{{CODE}}";

/// Message templates by locale (`en-US` → `Your verification code is {{CODE}}.`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Templates {
    /// The locale used when nothing in `Accept-Language` matches.
    pub default_locale: String,
    /// Templates keyed by locale tag as configured.
    pub by_locale: BTreeMap<String, String>,
}

impl Templates {
    /// Picks the locale for an `Accept-Language` header value: the highest-`q` tag with an
    /// exact template (case-insensitive), else one sharing its language (`sv` → `sv-SE`),
    /// else the default locale. Returns the chosen locale and its template.
    pub fn negotiate(&self, accept_language: Option<&str>) -> (String, String) {
        for tag in accept_language
            .map(parse_accept_language)
            .unwrap_or_default()
        {
            if let Some((locale, template)) = self.lookup(&tag) {
                return (locale.clone(), template.clone());
            }
        }
        let template = self
            .by_locale
            .get(&self.default_locale)
            .cloned()
            .unwrap_or_else(|| format!("Your verification code is {CODE_PLACEHOLDER}."));
        (self.default_locale.clone(), template)
    }

    fn lookup(&self, tag: &str) -> Option<(&String, &String)> {
        if let Some(hit) = self
            .by_locale
            .iter()
            .find(|(locale, _)| locale.eq_ignore_ascii_case(tag))
        {
            return Some(hit);
        }
        let lang = tag.split('-').next().unwrap_or(tag);
        // Prefer the default locale when it shares the language, then the first match.
        let same_lang = |locale: &&String| {
            locale
                .split('-')
                .next()
                .is_some_and(|l| l.eq_ignore_ascii_case(lang))
        };
        if same_lang(&&self.default_locale)
            && let Some(t) = self.by_locale.get_key_value(&self.default_locale)
        {
            return Some(t);
        }
        self.by_locale.iter().find(|(locale, _)| same_lang(locale))
    }
}

/// Renders a template with the code.
pub fn render(template: &str, code: &str) -> String {
    template.replace(CODE_PLACEHOLDER, code)
}

/// Parses an `Accept-Language` value into tags ordered by preference (`q` descending,
/// header order among equals). `*` and `q=0` entries are dropped.
pub fn parse_accept_language(value: &str) -> Vec<String> {
    let mut tags: Vec<(u16, usize, String)> = value
        .split(',')
        .enumerate()
        .filter_map(|(i, part)| {
            let mut pieces = part.split(';');
            let tag = pieces.next()?.trim();
            if tag.is_empty() || tag == "*" || tag.len() > 35 {
                return None;
            }
            let mut q = 1000u16;
            for p in pieces {
                if let Some(v) = p.trim().strip_prefix("q=") {
                    q = (v.trim().parse::<f32>().ok()?.clamp(0.0, 1.0) * 1000.0) as u16;
                }
            }
            (q > 0).then(|| (q, i, tag.to_string()))
        })
        .collect();
    tags.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    tags.into_iter().map(|(_, _, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        let mut by_locale = BTreeMap::new();
        by_locale.insert("en-US".into(), "Your code is {{CODE}}.".into());
        by_locale.insert("sv-SE".into(), "Din kod är {{CODE}}.".into());
        by_locale.insert("es-ES".into(), "Tu código es {{CODE}}.".into());
        Templates {
            default_locale: "en-US".into(),
            by_locale,
        }
    }

    #[test]
    fn exact_match_wins() {
        assert_eq!(templates().negotiate(Some("sv-SE")).0, "sv-SE");
        assert_eq!(templates().negotiate(Some("SV-se")).0, "sv-SE");
    }

    #[test]
    fn language_match_falls_back_to_a_sibling_locale() {
        assert_eq!(templates().negotiate(Some("es-MX")).0, "es-ES");
        assert_eq!(templates().negotiate(Some("en-GB")).0, "en-US");
    }

    #[test]
    fn q_values_order_preferences() {
        assert_eq!(
            templates().negotiate(Some("de-DE, sv;q=0.5, es;q=0.9")).0,
            "es-ES"
        );
        assert_eq!(templates().negotiate(Some("sv;q=0")).0, "en-US");
    }

    #[test]
    fn unknown_or_missing_header_gives_default() {
        assert_eq!(templates().negotiate(Some("ja-JP")).0, "en-US");
        assert_eq!(templates().negotiate(None).0, "en-US");
        assert_eq!(templates().negotiate(Some(";;,,")).0, "en-US");
    }

    #[test]
    fn render_replaces_every_placeholder() {
        assert_eq!(render("{{CODE}} / {{CODE}}", "1234"), "1234 / 1234");
    }
}
