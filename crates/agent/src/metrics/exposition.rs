//! The two text formats Prometheus reads, written from one model: the classic text format
//! (`text/plain; version=0.0.4`, what `promtool check metrics` checks) and OpenMetrics 1.0
//! (`application/openmetrics-text`). Neither Rust client writes both from one set of families,
//! and the difference is small: where the help and type go for a counter, `# UNIT`, `# EOF`.

use std::fmt::Write;

/// What a family is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
    Histogram,
}

/// A sample's value: counts are written as integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Value {
    Float(f64),
    Count(u64),
}

pub(crate) type Labels = Vec<(&'static str, String)>;

/// One sample: its name is the family's and `suffix` (`_total`, `_bucket`, `_sum`, `_count`, or
/// nothing).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub suffix: &'static str,
    pub labels: Labels,
    pub value: Value,
}

/// A metric family. `name` ends with the unit's name where there is a unit, and is a
/// counter's name without `_total`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub unit: Option<&'static str>,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Which text a scrape gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Classic,
    OpenMetrics,
}

impl Format {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The format an `Accept` header asks for: OpenMetrics when it weighs
/// `application/openmetrics-text` at least as much as the classic text, else the classic text
/// (also without the header, as Prometheus's own client libraries do).
pub(crate) fn negotiate(accept: Option<&str>) -> Format {
    let (mut openmetrics, mut classic) = (0.0f32, 0.0f32);
    for range in accept.unwrap_or("").split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .filter(|q| q.is_finite())
            .unwrap_or(1.0)
            .clamp(0.0, 1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
            "text/plain" | "text/*" | "*/*" => classic = classic.max(quality),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= classic {
        Format::OpenMetrics
    } else {
        Format::Classic
    }
}

/// The text of `families` in `format`. Families without samples are left out.
pub(crate) fn encode(families: &[Family], format: Format) -> String {
    let mut out = String::with_capacity(4096);
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        // A classic counter is named with `_total` in its help and type lines.
        let described = match (format, family.kind) {
            (Format::Classic, Kind::Counter) => format!("{}_total", family.name),
            _ => family.name.to_owned(),
        };
        let kind = match family.kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        };
        let help = escape(family.help, format == Format::OpenMetrics);
        let _ = writeln!(out, "# HELP {described} {help}");
        let _ = writeln!(out, "# TYPE {described} {kind}");
        if let (Format::OpenMetrics, Some(unit)) = (format, family.unit) {
            let _ = writeln!(out, "# UNIT {described} {unit}");
        }
        for sample in &family.samples {
            out.push_str(family.name);
            out.push_str(sample.suffix);
            if !sample.labels.is_empty() {
                out.push('{');
                for (i, (name, value)) in sample.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{name}=\"{}\"", escape(value, true));
                }
                out.push('}');
            }
            out.push(' ');
            match sample.value {
                Value::Count(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Float(v) => out.push_str(&number(v)),
            }
            out.push('\n');
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// A float as both formats write it: `42.0`, `0.025`, `+Inf`, `NaN`.
pub(crate) fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v:?}")
    }
}

/// Escapes a label value (`\`, `"`, newline) or a help text (`\`, newline, and `"` in
/// OpenMetrics).
fn escape(text: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<Family> {
        vec![
            Family {
                name: "x_steps",
                help: "Steps \\ \"done\".",
                unit: None,
                kind: Kind::Counter,
                samples: vec![Sample {
                    suffix: "_total",
                    labels: vec![("role", "a\"b\\c\nd".to_owned())],
                    value: Value::Count(7),
                }],
            },
            Family {
                name: "x_power_watts",
                help: "Power.",
                unit: Some("watts"),
                kind: Kind::Gauge,
                samples: vec![Sample {
                    suffix: "",
                    labels: vec![],
                    value: Value::Float(f64::INFINITY),
                }],
            },
            Family {
                name: "x_empty",
                help: "Nothing.",
                unit: None,
                kind: Kind::Gauge,
                samples: vec![],
            },
        ]
    }

    #[test]
    fn classic_names_a_counter_with_total_and_has_no_unit_or_eof() {
        assert_eq!(
            encode(&families(), Format::Classic),
            "# HELP x_steps_total Steps \\\\ \"done\".\n# TYPE x_steps_total counter\n\
             x_steps_total{role=\"a\\\"b\\\\c\\nd\"} 7\n\
             # HELP x_power_watts Power.\n# TYPE x_power_watts gauge\nx_power_watts +Inf\n"
        );
    }

    #[test]
    fn openmetrics_names_the_counter_family_and_ends_with_eof() {
        assert_eq!(
            encode(&families(), Format::OpenMetrics),
            "# HELP x_steps Steps \\\\ \\\"done\\\".\n# TYPE x_steps counter\n\
             x_steps_total{role=\"a\\\"b\\\\c\\nd\"} 7\n\
             # HELP x_power_watts Power.\n# TYPE x_power_watts gauge\n\
             # UNIT x_power_watts watts\nx_power_watts +Inf\n# EOF\n"
        );
    }

    #[test]
    fn accept_headers_choose_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, format) in [
            (None, Format::Classic),
            (Some(""), Format::Classic),
            (Some("text/plain; version=0.0.4"), Format::Classic),
            (Some("*/*"), Format::Classic),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("APPLICATION/OpenMetrics-Text; q=0.9, text/plain; q=0.1"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.2,text/plain"),
                Format::Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Classic),
            (
                Some("application/openmetrics-text;q=NaN"),
                Format::OpenMetrics,
            ),
            (Some(";;;,,,q=2"), Format::Classic),
        ] {
            assert_eq!(negotiate(accept), format, "{accept:?}");
        }
    }

    #[test]
    fn numbers_read_back_as_prometheus_writes_them() {
        assert_eq!(number(42.0), "42.0");
        assert_eq!(number(0.025), "0.025");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(536870912.0), "536870912.0");
    }
}
