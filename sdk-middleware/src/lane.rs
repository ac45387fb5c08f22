//! The lane: traffic colouring for mesh lane routing. A lane header read on ingress rides in
//! baggage and in the request's [`Context`], and is written again on every outbound call made
//! while serving that request, so a mesh VirtualService can route on it at every hop.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::baggage::BaggageExt;
use opentelemetry::{Context, KeyValue, StringValue, Value};

use crate::config::Settings;
use crate::metrics::OTHER;

/// The lane headers of one request, in the configured order; the first one names the lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lane {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Lane {
    /// Reads the configured lane headers, falling back to baggage entries named like them
    /// (a caller that carries the lane only in baggage). Values that are empty, longer than
    /// the limit or not visible ASCII are ignored.
    pub(crate) fn from_request(
        settings: &Settings,
        headers: &HeaderMap,
        cx: &Context,
    ) -> Option<Lane> {
        let baggage = cx.baggage();
        let mut found = Vec::new();
        for name in &settings.lane_headers {
            let from_header = headers.get(name).cloned();
            let from_baggage = || {
                baggage
                    .get(name.as_str())
                    .and_then(|value| HeaderValue::from_str(value.as_str()).ok())
            };
            let Some(value) = from_header.or_else(from_baggage) else {
                continue;
            };
            if is_valid_lane(&value, settings.lane_value_max_bytes) {
                found.push((name.clone(), value));
            }
        }
        (!found.is_empty()).then_some(Lane { headers: found })
    }

    /// The lane's name: the value of the first configured header present.
    pub fn name(&self) -> &str {
        self.headers
            .first()
            .and_then(|(_, value)| value.to_str().ok())
            .unwrap_or_default()
    }

    /// `cx` with this lane attached, and carried in its baggage for propagators to send on.
    pub(crate) fn attach_to(self, cx: &Context) -> Context {
        let baggage = cx.baggage();
        let missing: Vec<KeyValue> = self
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let value = value.to_str().ok()?;
                let carried = baggage
                    .get(name.as_str())
                    .is_some_and(|carried| carried.as_str() == value);
                (!carried).then(|| KeyValue::new(name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        // Usually the caller's baggage already carries the lane, and is passed on as it is.
        if missing.is_empty() {
            return cx.with_value(self);
        }
        let mut merged: Vec<KeyValue> = baggage
            .iter()
            .map(|(key, (value, _))| KeyValue::new(key.clone(), value.clone()))
            .collect();
        merged.extend(missing);
        cx.with_baggage(merged).with_value(self)
    }

    /// Writes the lane headers, replacing any the caller set.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

fn is_valid_lane(value: &HeaderValue, max_bytes: usize) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max_bytes
        && bytes.iter().all(|byte| byte.is_ascii_graphic())
}

/// Bounds the lane metric label, so a caller inventing lanes cannot grow the series count:
/// the configured lanes keep their name, or, when none are configured, the first `limit`
/// distinct ones do. Every other lane is `_OTHER`.
#[derive(Debug)]
pub(crate) struct LaneLabels {
    limit: usize,
    known: RwLock<HashSet<Arc<str>>>,
}

impl LaneLabels {
    pub(crate) fn new(settings: &Settings) -> Self {
        let configured: HashSet<Arc<str>> = settings
            .lane_label_values
            .iter()
            .map(|lane| Arc::from(lane.as_str()))
            .collect();
        // A configured list is complete: no lane seen later is added to it.
        let limit = if configured.is_empty() {
            settings.lane_label_limit
        } else {
            configured.len()
        };
        LaneLabels {
            limit,
            known: RwLock::new(configured),
        }
    }

    pub(crate) fn label(&self, lane: &Lane) -> Value {
        let name = lane.name();
        if let Some(known) = self.read().get(name) {
            return Value::String(StringValue::from(known.clone()));
        }
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = known.get(name) {
            return Value::String(StringValue::from(existing.clone()));
        }
        if known.len() >= self.limit {
            return Value::from(OTHER);
        }
        let interned: Arc<str> = Arc::from(name);
        known.insert(interned.clone());
        Value::String(StringValue::from(interned))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashSet<Arc<str>>> {
        // A panic while holding the lock cannot leave the set half-updated.
        self.known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(headers: &[(&'static str, &str)], cx: &Context) -> Option<Lane> {
        let settings = Settings {
            lane_headers: vec![
                HeaderName::from_static("x-asm-prefer-tag"),
                HeaderName::from_static("x-lane"),
            ],
            lane_value_max_bytes: 16,
            ..Settings::default()
        };
        let map: HeaderMap = headers
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_str(value).expect("ascii"),
                )
            })
            .collect();
        Lane::from_request(&settings, &map, cx)
    }

    #[test]
    fn first_configured_header_names_the_lane() {
        let found = lane(
            &[("x-lane", "canary"), ("x-asm-prefer-tag", "blue")],
            &Context::new(),
        )
        .expect("lane");
        assert_eq!(found.name(), "blue");
        let mut out = HeaderMap::new();
        found.write_headers(&mut out);
        assert_eq!(
            (out["x-asm-prefer-tag"].as_bytes(), out["x-lane"].as_bytes()),
            (&b"blue"[..], &b"canary"[..])
        );
    }

    #[test]
    fn baggage_carries_the_lane_when_the_header_is_gone() {
        let cx = Context::new().with_baggage([KeyValue::new("x-asm-prefer-tag", "green")]);
        assert_eq!(lane(&[], &cx).expect("lane from baggage").name(), "green");
        let attached = lane(&[("x-lane", "red")], &Context::new())
            .expect("lane")
            .attach_to(&cx);
        assert_eq!(
            attached.baggage().get("x-lane").map(StringValue::as_str),
            Some("red")
        );
        assert_eq!(
            attached
                .baggage()
                .get("x-asm-prefer-tag")
                .map(StringValue::as_str),
            Some("green")
        );
        assert_eq!(attached.get::<Lane>().map(Lane::name), Some("red"));
    }

    #[test]
    fn invalid_values_are_ignored() {
        assert_eq!(
            lane(
                &[("x-asm-prefer-tag", "a-value-longer-than-16-bytes")],
                &Context::new()
            ),
            None
        );
        assert_eq!(
            lane(&[("x-asm-prefer-tag", "has space")], &Context::new()),
            None
        );
    }

    #[test]
    fn labels_past_the_limit_or_outside_the_list_are_other() {
        let labels = LaneLabels::new(&Settings {
            lane_label_limit: 2,
            ..Settings::default()
        });
        let names: Vec<String> = ["a", "b", "c", "a"]
            .iter()
            .map(|name| {
                labels
                    .label(&lane(&[("x-lane", name)], &Context::new()).expect("lane"))
                    .to_string()
            })
            .collect();
        assert_eq!(names, ["a", "b", "_OTHER", "a"]);

        let configured = LaneLabels::new(&Settings {
            lane_label_values: vec!["c".to_owned()],
            ..Settings::default()
        });
        let label = |name| {
            configured
                .label(&lane(&[("x-lane", name)], &Context::new()).expect("lane"))
                .to_string()
        };
        assert_eq!([label("a"), label("c")], ["_OTHER", "c"]);
    }
}
