//! The trace context a host's desired state carries to its agent (`SignedState.traceparents`,
//! by stack): the span of the rollout host step or the stack apply that gave a stack a
//! revision, so the agent's `apply` span joins the server's trace. Kept in memory, bounded and
//! short-lived: it only links traces (a host that connects an hour later applies untraced).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a link is offered to a host that has not yet received its state.
const LINK_TTL: Duration = Duration::from_secs(3600);
/// The most links kept (the oldest go first).
const MAX_LINKS: usize = 100_000;

/// Key: (host id, or "" for every host of the stack; stack; revision).
type Key = (String, String, String);

#[derive(Debug, Default)]
pub struct Links(Mutex<HashMap<Key, (String, Instant)>>);

impl Links {
    /// Link `host`'s (None: every host's) apply of `revision` of `stack` to `span`; nothing when
    /// spans are not exported.
    pub fn record(&self, host: Option<&str>, stack: &str, revision: &str, span: &tracing::Span) {
        let Some(tp) = noco_proto::otel::traceparent(span) else {
            return;
        };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if all.len() >= MAX_LINKS {
            all.retain(|_, (_, at)| now.duration_since(*at) < LINK_TTL);
            if all.len() >= MAX_LINKS
                && let Some(oldest) = all
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(
            (
                host.unwrap_or_default().to_string(),
                stack.to_string(),
                revision.to_string(),
            ),
            (tp, now),
        );
    }

    /// Whether nothing is linked (spans are not exported, or nothing happened lately).
    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// The traceparents for a host's state, by stack: its own link first, else the stack's.
    pub fn for_host<'a>(
        &self,
        host_id: &str,
        stacks: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> HashMap<String, String> {
        let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if all.is_empty() {
            return HashMap::new();
        }
        let now = Instant::now();
        let mut out = HashMap::new();
        for (stack, revision) in stacks {
            let key = |h: &str| (h.to_string(), stack.to_string(), revision.to_string());
            let found = all.get(&key(host_id)).or_else(|| all.get(&key("")));
            if let Some((tp, at)) = found
                && now.duration_since(*at) < LINK_TTL
            {
                out.insert(stack.to_string(), tp.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_linked_when_spans_are_not_exported() {
        let links = Links::default();
        let span = tracing::info_span!("x");
        links.record(Some("h1"), "shop", "sha256:1", &span);
        assert!(links.for_host("h1", [("shop", "sha256:1")]).is_empty());
    }

    #[test]
    fn a_host_gets_its_own_link_else_the_stacks_and_only_for_that_revision() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let links = Links::default();
            let apply = tracing::info_span!("stack.apply");
            let step = tracing::info_span!("host_step");
            links.record(None, "shop", "sha256:2", &apply);
            links.record(Some("h1"), "shop", "sha256:2", &step);
            let tp = |s: &tracing::Span| noco_proto::otel::traceparent(s).unwrap_or_default();
            assert!(tp(&apply).starts_with("00-"), "{}", tp(&apply));
            let h1 = links.for_host("h1", [("shop", "sha256:2"), ("blog", "sha256:9")]);
            assert_eq!(h1, HashMap::from([("shop".to_string(), tp(&step))]));
            let h2 = links.for_host("h2", [("shop", "sha256:2")]);
            assert_eq!(h2, HashMap::from([("shop".to_string(), tp(&apply))]));
            assert!(links.for_host("h2", [("shop", "sha256:3")]).is_empty());
        });
    }
}
