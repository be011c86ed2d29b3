//! Templates and the stylesheet: read and parsed once at start. A file in `--templates-dir`
//! replaces the built-in template of the same name (or adds one an override can include), and a
//! `style.css` there replaces the built-in stylesheet.

use std::path::Path;

use anyhow::Context;
use axum::body::Bytes;
use minijinja::Environment;
use serde::Serialize;
use sha2::{Digest, Sha256};

const BUILT_IN_CSS: &str = include_str!("../../static/style.css");
const BUILT_IN: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("home.html", include_str!("../../templates/home.html")),
    ("intro.html", include_str!("../../templates/intro.html")),
    ("notice.html", include_str!("../../templates/notice.html")),
    ("admin_login.html", include_str!("../../templates/admin_login.html")),
    ("admin.html", include_str!("../../templates/admin.html")),
    ("error.html", include_str!("../../templates/error.html")),
    ("confirm.html", include_str!("../../templates/confirm.html")),
    ("unsubscribe.html", include_str!("../../templates/unsubscribe.html")),
    ("left.html", include_str!("../../templates/left.html")),
    ("admin_subscriber.html", include_str!("../../templates/admin_subscriber.html")),
    ("admin_import.html", include_str!("../../templates/admin_import.html")),
    ("admin_token_created.html", include_str!("../../templates/admin_token_created.html")),
    ("admin_webhook.html", include_str!("../../templates/admin_webhook.html")),
    ("admin_webhook_created.html", include_str!("../../templates/admin_webhook_created.html")),
    ("admin_delete_matching.html", include_str!("../../templates/admin_delete_matching.html")),
    ("confirmation.txt", include_str!("../../templates/confirmation.txt")),
    ("confirmation.html", include_str!("../../templates/confirmation.html")),
    ("admin_announcements.html", include_str!("../../templates/admin_announcements.html")),
    ("admin_announcement.html", include_str!("../../templates/admin_announcement.html")),
    ("admin_announcement_send.html", include_str!("../../templates/admin_announcement_send.html")),
    ("archive.html", include_str!("../../templates/archive.html")),
    ("announcement.txt", include_str!("../../templates/announcement.txt")),
    ("announcement.html", include_str!("../../templates/announcement.html")),
];

/// Templates with no built-in copy that an override directory may add: their presence turns a
/// feature on (the welcome mail).
const OPTIONAL: &[(&str, &str)] = &[("welcome.txt", ""), ("welcome.html", "")];

pub struct Templates {
    env: Environment<'static>,
    stylesheet: Stylesheet,
    consent_version: String,
}

/// The site's CSS and the content-addressed path pages link to, so browsers can keep it forever.
pub struct Stylesheet {
    pub css: Bytes,
    pub fingerprinted_path: String,
}

impl Stylesheet {
    fn new(css: String) -> Self {
        let digest = Sha256::digest(css.as_bytes());
        let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        Self { css: Bytes::from(css), fingerprinted_path: format!("/static/style.{short}.css") }
    }
}

impl Templates {
    /// Built-in templates, then the override directory's; `list_name` is a global of every
    /// template.
    pub fn load(override_dir: Option<&Path>, list_name: &str) -> anyhow::Result<Self> {
        let mut env = Environment::new();
        // As Jinja2's ChainableUndefined: `a.b` of a missing `a` is empty rather than an error,
        // so the check of every template at start can render them without data.
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        env.add_global("list_name", list_name.to_owned());
        for (name, source) in BUILT_IN {
            env.add_template(name, source).with_context(|| format!("built-in template {name}"))?;
        }
        let mut css = BUILT_IN_CSS.to_owned();
        for (name, source) in override_files(override_dir)? {
            if name == "style.css" {
                css = source;
            } else {
                env.add_template_owned(name.clone(), source)
                    .with_context(|| format!("parsing {name}"))?;
            }
        }
        env.add_filter("plural", plural);
        env.add_filter("grouped", grouped);
        let stylesheet = Stylesheet::new(css);
        // A path we made ourselves: safe to print unescaped.
        env.add_global(
            "stylesheet",
            minijinja::Value::from_safe_string(stylesheet.fingerprinted_path.clone()),
        );
        let mut templates = Self { env, stylesheet, consent_version: String::new() };
        // Catch a broken override (bad syntax, a missing include) now rather than on a
        // visitor's request.
        for (name, _) in BUILT_IN.iter().chain(OPTIONAL) {
            if templates.has(name) {
                templates.render(name, minijinja::context! {})?;
            }
        }
        let intro = templates.render("intro.html", minijinja::context! {})?;
        let digest = Sha256::digest(intro.trim().as_bytes());
        templates.consent_version = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(templates)
    }

    /// Whether a template of this name exists (built in, or added by the override directory).
    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    /// A short hash of the consent text the signup form shows (the rendered `intro.html`), kept
    /// with every signup as evidence of what the person agreed to.
    pub fn consent_version(&self) -> &str {
        &self.consent_version
    }

    pub fn stylesheet(&self) -> &Stylesheet {
        &self.stylesheet
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> anyhow::Result<String> {
        self.env
            .get_template(name)
            .and_then(|template| {
                template.render(minijinja::Value::from(minijinja::value::Serde(&context)))
            })
            .with_context(|| format!("rendering {name}"))
    }
}

/// `{{ n|plural("subscriber", "subscribers") }}`: the word that agrees with the count. (A
/// translation brings its own rules with its own templates.)
/// (An undefined count, as in the check of every template at start, is "many".)
fn plural(count: Option<u64>, one: String, many: String) -> String {
    if count == Some(1) { one } else { many }
}

/// `{{ n|grouped }}`: 1000000 as 1,000,000, so large counts can be read at a glance.
fn grouped(count: Option<u64>) -> String {
    let digits = count.unwrap_or_default().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Every regular, non-hidden file in the override directory, as (file name, contents).
fn override_files(dir: Option<&Path>) -> anyhow::Result<Vec<(String, String)>> {
    let Some(dir) = dir else {
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry.with_context(|| format!("reading {}", dir.display()))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let source = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((name.to_owned(), source));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_words() {
        let templates = Templates::load(None, "our list").unwrap();
        let render = |n: u64| {
            templates
                .env
                .render_str(
                    "{{ n|grouped }} {{ n|plural('match', 'matches') }}",
                    minijinja::context! { n },
                )
                .unwrap()
        };
        assert_eq!(render(0), "0 matches");
        assert_eq!(render(1), "1 match");
        assert_eq!(render(2), "2 matches");
        assert_eq!(render(1000), "1,000 matches");
        assert_eq!(render(1_000_000), "1,000,000 matches");
        assert_eq!(grouped(Some(100)), "100");
        assert_eq!(grouped(Some(12_345)), "12,345");
    }
}
