//! Content negotiation as the Prometheus client libraries do it: which
//! exposition format a scrape's `Accept` prefers, and whether its
//! `Accept-Encoding` takes gzip; q-values count, `q=0` refuses.

/// The elements of a header list (`Accept`, `Accept-Encoding`), lowercased,
/// each with its q-value (1 if not given; an unreadable one makes the element
/// unacceptable). Parameters other than q are dropped.
fn weighted(header: &str) -> Vec<(String, f32)> {
    header
        .split(',')
        .filter_map(|element| {
            let mut parts = element.split(';');
            let value = parts.next()?.trim().to_ascii_lowercase();
            if value.is_empty() {
                return None;
            }
            let q = parts
                .filter_map(|param| {
                    let (name, q) = param.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("q").then(|| q.trim())
                })
                .next_back()
                .map_or(Some(1.0), |q| q.parse::<f32>().ok())
                .filter(|q| (0.0..=1.0).contains(q))
                .unwrap_or(0.0);
            Some((value, q))
        })
        .collect()
}

/// The highest q of the elements that are one of `names`, if any is.
fn quality(elements: &[(String, f32)], names: &[&str]) -> Option<f32> {
    elements
        .iter()
        .filter(|(value, _)| names.contains(&value.as_str()))
        .map(|(_, q)| *q)
        .reduce(f32::max)
}

/// OpenMetrics only when the scraper names it, acceptable (q > 0) and liked
/// at least as much as the text format (`text/plain`, `text/*`, `*/*`);
/// otherwise the default, text 0.0.4.
pub fn wants_openmetrics(accept: &str) -> bool {
    let elements = weighted(accept);
    let openmetrics = quality(&elements, &["application/openmetrics-text"]).unwrap_or(0.0);
    let text = quality(&elements, &["text/plain", "text/*", "*/*"]).unwrap_or(0.0);
    openmetrics > 0.0 && openmetrics >= text
}

/// gzip when acceptable: named with q > 0, or not named and `*` is.
pub fn accepts_gzip(accept_encoding: &str) -> bool {
    let elements = weighted(accept_encoding);
    quality(&elements, &["gzip"])
        .or_else(|| quality(&elements, &["*"]))
        .is_some_and(|q| q > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_honours_q_values() {
        for (accept, openmetrics) in [
            ("", false),
            ("*/*", false),
            ("text/plain", false),
            ("application/openmetrics-text", true),
            ("application/openmetrics-text; version=1.0.0", true),
            ("Application/OpenMetrics-Text;Version=1.0.0", true),
            ("application/openmetrics-text;q=0, text/plain", false),
            ("application/openmetrics-text; q=0", false),
            (
                "application/openmetrics-text;q=0.5, text/plain;q=0.9",
                false,
            ),
            ("application/openmetrics-text;q=0.9, text/plain;q=0.5", true),
            ("application/openmetrics-text;q=0.5, */*", false),
            ("application/openmetrics-text, text/plain", true),
            ("application/openmetrics-text;q=zero", false),
            ("application/openmetrics-text;q=2", false),
            // What Prometheus sends.
            (
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                true,
            ),
            ("text/plain;version=0.0.4;q=1,*/*;q=0.1", false),
        ] {
            assert_eq!(wants_openmetrics(accept), openmetrics, "Accept: {accept}");
        }
        for (encoding, gzip) in [
            ("", false),
            ("gzip", true),
            ("GZIP", true),
            ("deflate, gzip;q=0.5", true),
            ("gzip;q=0", false),
            ("gzip; q=0.0, identity", false),
            ("*", true),
            ("*;q=0", false),
            ("gzip;q=0, *", false),
            ("identity", false),
            ("gzipped", false),
        ] {
            assert_eq!(accepts_gzip(encoding), gzip, "Accept-Encoding: {encoding}");
        }
    }
}
