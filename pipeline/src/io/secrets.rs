//! Secrets kept out of everything tailgate writes or prints: passwords in URLs and
//! connection strings, and client settings that hold credentials. Results, reports,
//! summaries and error messages name what was used with its secrets replaced by `***`.

use std::collections::BTreeMap;

/// What a secret is replaced with.
pub const HIDDEN: &str = "***";

/// `url` with its password hidden: the `user:password@` of a URL, a `password=` query
/// parameter, and the `password=` of a `key=value` connection string.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let (Some(s), Some(at)) = (out.find("://"), out.rfind('@'))
        && at > s
        && let Some(colon) = out[s + 3..at].find(':')
    {
        out.replace_range(s + 3 + colon + 1..at, HIDDEN);
    }
    hide_values(&out, "password=")
}

/// `text` with the value after every `key` (up to `&`, `;`, whitespace or the end) hidden.
fn hide_values(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.to_ascii_lowercase().find(key) {
        let starts_word = i == 0 || rest[..i].ends_with(['?', '&', ';', ' ', '\t']);
        let (head, tail) = rest.split_at(i + key.len());
        out.push_str(head);
        if !starts_word {
            rest = tail;
            continue;
        }
        let quoted = tail.starts_with('\'');
        let end = if quoted {
            tail[1..].find('\'').map_or(tail.len(), |j| j + 2)
        } else {
            tail.find(['&', ';', ' ', '\t']).unwrap_or(tail.len())
        };
        out.push_str(HIDDEN);
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Whether a librdkafka setting holds a credential (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`, ...).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.ends_with("key.pem")
        || k == "ssl_key"
        || k == "sasl.oauthbearer.config"
        || k.contains("jaas")
}

/// `settings` with the values of the secret ones hidden.
pub fn redact_settings(settings: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    settings.iter().map(|(k, v)| (k.clone(), if is_secret(k) { HIDDEN.to_owned() } else { v.clone() })).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_hidden_in_every_form() {
        for (url, shown) in [
            ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("postgres://u@h/db?sslmode=require&password=secret", "postgres://u@h/db?sslmode=require&password=***"),
            ("postgres://h/db?password=secret&user=u", "postgres://h/db?password=***&user=u"),
            ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
            ("host=h password='se cret' dbname=d", "host=h password=*** dbname=d"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("/tmp/cache.sqlite", "/tmp/cache.sqlite"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("secret") || !url.contains("secret"), "{url}");
        }
    }

    #[test]
    fn credentials_among_client_settings_are_hidden_and_the_rest_kept() {
        let settings: BTreeMap<String, String> = [
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "hunter2"),
            ("sasl.oauthbearer.client.secret", "hunter2"),
            ("ssl.key.pem", "-----BEGIN PRIVATE KEY-----"),
            ("sasl.username", "alice"),
            ("linger.ms", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let shown = redact_settings(&settings);
        assert!(shown.values().all(|v| v != "hunter2" && !v.contains("PRIVATE")), "{shown:?}");
        assert_eq!((shown["sasl.username"].as_str(), shown["linger.ms"].as_str()), ("alice", "5"));
    }
}
