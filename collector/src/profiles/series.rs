//! Pyroscope's series names (`app{k=v,k2=v2}`) and the label selectors of profile queries
//! (`{service_name="cpu_burn", pod=~"web-.*"}`).

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{self, Expr};

/// The label that names the service, stored in its own `ServiceName` column.
pub const SERVICE_NAME: &str = "service_name";

/// An upload's series: its service and its other labels, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesName {
    pub service_name: String,
    pub labels: Vec<(String, String)>,
}

impl SeriesName {
    /// Parses `app{k=v,…}`. The service is the `service_name` label, else the application
    /// name without Pyroscope's profile-type suffix (`app.cpu` → `app`).
    pub fn parse(name: &str) -> Result<SeriesName, String> {
        let (app, labels_text) = match name.split_once('{') {
            Some((app, rest)) => {
                let inner = rest.strip_suffix('}').ok_or_else(|| format!("name {name:?} has no closing '}}'"))?;
                (app.trim(), Some(inner))
            }
            None => (name.trim(), None),
        };
        let mut labels = Vec::new();
        for pair in labels_text.into_iter().flat_map(|text| text.split(',')).map(str::trim).filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| format!("label {pair:?} in name {name:?} is not key=value"))?;
            let key = key.trim();
            if !is_label_name(key) {
                return Err(format!("invalid label name {key:?} in name {name:?}"));
            }
            if labels.iter().any(|(existing, _)| existing == key) {
                return Err(format!("label {key:?} appears twice in name {name:?}"));
            }
            labels.push((key.to_owned(), value.trim().to_owned()));
        }
        labels.sort();
        let service_name = match labels.iter().position(|(key, _)| key == SERVICE_NAME) {
            Some(index) => labels.remove(index).1,
            None => app.strip_suffix(".cpu").unwrap_or(app).to_owned(),
        };
        if service_name.is_empty() {
            return Err("the name parameter must name the application: name=app{k=v,...}".to_owned());
        }
        Ok(SeriesName { service_name, labels })
    }
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// A label selector, parsed with PromQL's grammar.
#[derive(Debug, Clone)]
pub struct Selector {
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// `{…}` with any of `=`, `!=`, `=~`, `!~`; `{}` or an empty text selects everything.
    pub fn parse(text: &str) -> Result<Selector, String> {
        let text = text.trim();
        if text.is_empty() || text == "{}" {
            return Ok(Selector { matchers: Vec::new() });
        }
        match parser::parse(text) {
            Ok(Expr::VectorSelector(selector)) if selector.name.is_none() => {
                Ok(Selector { matchers: selector.matchers.matchers })
            }
            Ok(_) => Err(format!("selector {text:?} must be a label selector such as {{service_name=\"app\"}}")),
            Err(error) => Err(format!("invalid selector {text:?}: {error}")),
        }
    }

    /// The selector as a SQL condition on `profile_samples` (`TRUE` when it selects all).
    /// A label that is absent matches as the empty string, as in PromQL.
    pub fn to_sql(&self) -> String {
        let conditions: Vec<String> = self
            .matchers
            .iter()
            .map(|matcher| {
                let column = if matcher.name == SERVICE_NAME {
                    "\"ServiceName\"".to_owned()
                } else {
                    format!("COALESCE(map_extract(\"Labels\", {})[1], '')", sql_string(&matcher.name))
                };
                let value = sql_string(&matcher.value);
                match &matcher.op {
                    MatchOp::Equal => format!("{column} = {value}"),
                    MatchOp::NotEqual => format!("{column} <> {value}"),
                    MatchOp::Re(_) => format!("{column} ~ {}", sql_string(&anchored(&matcher.value))),
                    MatchOp::NotRe(_) => format!("{column} !~ {}", sql_string(&anchored(&matcher.value))),
                }
            })
            .collect();
        if conditions.is_empty() { "TRUE".to_owned() } else { conditions.join(" AND ") }
    }
}

/// PromQL regexes match the whole value.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// A SQL string literal.
pub fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_carry_the_service_and_sorted_labels() {
        let series = SeriesName::parse("shop.cpu{pod=web-1,namespace=prod}").expect("valid");
        assert_eq!(series.service_name, "shop");
        assert_eq!(series.labels, vec![("namespace".into(), "prod".into()), ("pod".into(), "web-1".into())]);
        let series = SeriesName::parse("app{service_name=cpu_burn}").expect("valid");
        assert_eq!((series.service_name.as_str(), series.labels.len()), ("cpu_burn", 0));
        assert!(SeriesName::parse("app{pod}").is_err());
        assert!(SeriesName::parse("app{pod=a").is_err());
        assert!(SeriesName::parse("app{pod=a,pod=b}").is_err());
        assert!(SeriesName::parse("").is_err());
    }

    #[test]
    fn selectors_become_sql_conditions() {
        let selector = Selector::parse(r#"{service_name="cpu_burn", pod=~"web-.*", node!="n'1"}"#).expect("valid");
        assert_eq!(
            selector.to_sql(),
            r#""ServiceName" = 'cpu_burn' AND COALESCE(map_extract("Labels", 'pod')[1], '') ~ '^(?:web-.*)$' AND COALESCE(map_extract("Labels", 'node')[1], '') <> 'n''1'"#
        );
        assert_eq!(Selector::parse("{}").expect("valid").to_sql(), "TRUE");
        assert!(Selector::parse("rate(x[1m])").is_err());
        assert!(Selector::parse("{pod=}").is_err());
    }
}
