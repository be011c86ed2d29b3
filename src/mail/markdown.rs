//! An announcement's Markdown as the HTML part of its mail. Markdown lets raw HTML through;
//! here it arrives as text instead (escaped), so nothing in a body can add a script, a form or
//! a tracking pixel the owner did not write as Markdown. Links and images keep only the schemes
//! a mail reader should follow.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, html};

pub fn to_html(markdown: &str) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // A link with a refused scheme loses its target but keeps its words; its end goes with it.
    let mut dropped_links = Vec::new();
    let events = Parser::new_ext(markdown, options).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            let safe = safe_url(&dest_url, link_type);
            dropped_links.push(!safe);
            safe.then_some(Event::Start(Tag::Link { link_type, dest_url, title, id }))
        }
        Event::End(TagEnd::Link) => {
            (!dropped_links.pop().unwrap_or(false)).then_some(Event::End(TagEnd::Link))
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            if safe_url(&dest_url, link_type) {
                Some(Event::Start(Tag::Image { link_type, dest_url, title, id }))
            } else {
                Some(Event::Start(Tag::Image {
                    link_type,
                    dest_url: CowStr::Borrowed(""),
                    title,
                    id,
                }))
            }
        }
        other => Some(other),
    });
    let mut out = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut out, events);
    out
}

/// http, https and mailto; an autolinked e-mail address has no scheme written.
fn safe_url(url: &str, link_type: LinkType) -> bool {
    if link_type == LinkType::Email {
        return true;
    }
    let lower = url.trim_start().to_ascii_lowercase();
    ["http://", "https://", "mailto:"].iter().any(|scheme| lower.starts_with(scheme))
}

#[cfg(test)]
mod tests {
    use super::to_html;

    #[test]
    fn markdown_becomes_html() {
        let html = to_html("# News\n\nSome **bold** and a [link](https://example.com/a?b=1&c=2).");
        assert!(html.contains("<h1>News</h1>"), "{html}");
        assert!(html.contains("<strong>bold</strong>"));
        assert!(html.contains(r#"<a href="https://example.com/a?b=1&amp;c=2">link</a>"#), "{html}");
    }

    #[test]
    fn raw_html_arrives_as_text() {
        let html = to_html("Hi <script>alert(1)</script>\n\n<div onclick=\"x()\">block</div>\n");
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(!html.contains("<div"), "{html}");
        assert!(html.contains(r#"&lt;div onclick="x()"&gt;"#), "{html}");
    }

    #[test]
    fn only_safe_schemes_are_linked() {
        let html = to_html(
            "[click](javascript:alert(1)) and [mail](mailto:a@example.com) <b@example.com>",
        );
        assert!(!html.contains("javascript"), "{html}");
        assert!(html.contains("click"), "the words stay: {html}");
        assert!(html.contains(r#"<a href="mailto:a@example.com">mail</a>"#), "{html}");
        assert!(html.contains(r#"href="mailto:b@example.com""#), "{html}");
        let image = to_html("![x](data:text/html;base64,PHNjcmlwdD4=)");
        assert!(!image.contains("data:"), "{image}");
    }
}
