//! Rough HTML to text: good enough for tokens, not for display.

/// What an HTML part yields.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Html {
    /// The visible text, entities decoded.
    pub text: String,
    /// `href`/`src` attribute values.
    pub links: Vec<String>,
    /// Names of the elements used, lower case, each once.
    pub tags: Vec<String>,
}

/// Elements that do not break a word: spam splits words with them
/// (`V<b></b>iagra`), so they are removed without leaving a space.
const INLINE: &[&str] = &[
    "b", "i", "u", "s", "em", "strong", "font", "span", "small", "big", "sub", "sup", "strike",
];

/// Longest part of a link kept, in characters.
const MAX_LINK: usize = 1024;

/// Strips tags, comments, scripts and styles and decodes entities.
pub fn strip(html: &str) -> Html {
    let mut out = Html::default();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        push_text(&mut out.text, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(comment) = rest.strip_prefix("<!--") {
            rest = comment.find("-->").map_or("", |end| &comment[end + 3..]);
            continue;
        }
        let end = rest.find('>').unwrap_or(rest.len());
        let tag = &rest[1..end];
        rest = rest.get(end + 1..).unwrap_or("");
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if name.is_empty() {
            out.text.push(' ');
            continue;
        }
        if !tag.starts_with('/') {
            if (name == "script" || name == "style") && !tag.ends_with('/') {
                let close = format!("</{name}");
                rest = find_ignore_case(rest, &close).map_or("", |i| &rest[i..]);
            }
            links(tag, &mut out.links);
            if name.len() <= 10 && !out.tags.contains(&name) {
                out.tags.push(name.clone());
            }
        }
        if !INLINE.contains(&name.as_str()) {
            out.text.push(' ');
        }
    }
    push_text(&mut out.text, rest);
    out
}

fn find_ignore_case(haystack: &str, needle: &str) -> Option<usize> {
    haystack
        .as_bytes()
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Collects the values of `href=` and `src=` attributes in a tag.
fn links(tag: &str, out: &mut Vec<String>) {
    let lower = tag.to_ascii_lowercase();
    for attr in ["href", "src"] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(attr) {
            let start = from + i + attr.len();
            from = start;
            let after = lower[start..].trim_start();
            let Some(value) = after.strip_prefix('=') else {
                continue;
            };
            let value = value.trim_start();
            let offset = tag.len() - value.len();
            let value = &tag[offset..];
            let link = match value.chars().next() {
                Some(q @ ('"' | '\'')) => value[1..].split(q).next().unwrap_or(""),
                _ => value.split(char::is_whitespace).next().unwrap_or(""),
            };
            // Only the start of a link matters; bound the work per link.
            let end = link
                .char_indices()
                .nth(MAX_LINK)
                .map_or(link.len(), |(i, _)| i);
            out.push(decode_entities(&link[..end]));
        }
    }
}

fn push_text(out: &mut String, text: &str) {
    out.push_str(&decode_entities(text));
}

/// Decodes `&amp;`, `&#233;`, `&#xE9;` and the common named entities;
/// unknown ones become a space.
pub fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let end = rest
            .char_indices()
            .take(10)
            .find(|&(_, c)| c == ';')
            .map(|(i, _)| i);
        let Some(end) = end else {
            out.push('&');
            continue;
        };
        let entity = &rest[..end];
        let c = if let Some(num) = entity.strip_prefix('#') {
            let n = match num.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => num.parse().ok(),
            };
            n.and_then(char::from_u32)
        } else {
            match entity.to_ascii_lowercase().as_str() {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "euro" => Some('€'),
                "pound" => Some('£'),
                "shy" | "zwnj" | "zwj" => Some('\u{ad}'),
                _ => Some(' '),
            }
        };
        match c {
            // A soft hyphen or zero-width joiner hides nothing from us.
            Some('\u{ad}') => {}
            Some(c) => out.push(c),
            None => out.push(' '),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_markup() {
        let h = strip(
            "<html><head><style>p { color: red }</style><script>var x = 1;</script></head>\
             <body><p>Buy <b>V</b>ia<font color=red>gra</font> now!<!-- hidden words -->\
             <a href=\"http://pills.example.ru/buy?a=1&amp;b=2\">Click</a>\
             <img src='http://track.example/p.gif'>&nbsp;caf&eacute;&#233; &#x41;&amp;B</p>",
        );
        let words: Vec<&str> = h.text.split_whitespace().collect();
        assert_eq!(words, ["Buy", "Viagra", "now!", "Click", "caf", "é", "A&B"]);
        assert_eq!(
            h.links,
            [
                "http://pills.example.ru/buy?a=1&b=2",
                "http://track.example/p.gif"
            ]
        );
        assert_eq!(
            h.tags,
            [
                "html", "head", "style", "script", "body", "p", "b", "font", "a", "img"
            ]
        );
    }

    #[test]
    fn unterminated_constructs() {
        assert_eq!(strip("a <!-- never closed").text.trim(), "a");
        assert_eq!(strip("a <b never closed").text.trim(), "a");
        assert_eq!(strip("fish & chips &").text, "fish & chips &");
    }
}
