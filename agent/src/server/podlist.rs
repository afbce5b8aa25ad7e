//! The `GET /pods` body: the pods as upstream's `encodePods` writes a `v1.PodList`, and the
//! last body kept until the list changes.
//!
//! Pollers read `/pods` far more often than a pod's status changes (the density bench's driver
//! every 10 ms, `kubectl get --raw` loops, node-problem tooling), so the body is encoded once per
//! change of the list ([`PodsProvider::generation`]) and every poll in between gets the same
//! bytes without cloning, sorting or encoding 110 pods again.

use std::sync::{Arc, Mutex, PoisonError};

use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Pod;

use crate::status::store::PodsProvider;

/// The last `/pods` body and the generation of the list it was encoded from; clones share it.
#[derive(Debug, Clone, Default)]
pub struct PodListCache(Arc<Mutex<Option<(u64, Bytes)>>>);

impl PodListCache {
    /// The body for `pods` as it is now: the kept one while the list's generation is the one
    /// it was encoded at, else encoded afresh (and kept). A provider without generations is
    /// encoded every time.
    pub fn body(&self, pods: &dyn PodsProvider) -> Result<Bytes, serde_json::Error> {
        let Some(generation) = pods.generation() else {
            return encode_pod_list(&pods.pods()).map(Bytes::from);
        };
        // Held while encoding, so pollers arriving together encode the list once.
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, body)) = kept.as_ref()
            && *at == generation
        {
            return Ok(body.clone());
        }
        // The list is read after its generation: it is that generation's or newer, and a newer
        // one has a new generation, so what is kept under `generation` is never served stale.
        let body = Bytes::from(encode_pod_list(&pods.pods())?);
        *kept = Some((generation, body.clone()));
        Ok(body)
    }
}

/// `encodePods`: the `v1.PodList` JSON upstream's kubelet serves for `pods`. Its items carry no
/// `apiVersion` or `kind`.
///
/// Each pod is written straight to the output: k8s-openapi writes a `Pod`'s `apiVersion` and
/// `kind` first, so they are cut as the leading bytes. Going through a `serde_json::Value` to
/// drop them instead was most of the answer's time (165 of about 220 µs for 110 small pods, now
/// 26: every string copied, every object built as a map); a pod that does not start as
/// expected still takes that way.
pub fn encode_pod_list(pods: &[Pod]) -> Result<Vec<u8>, serde_json::Error> {
    const TYPE_META: &[u8] = br#"{"apiVersion":"v1","kind":"Pod""#;
    let mut out = br#"{"kind":"PodList","apiVersion":"v1","metadata":{},"items":["#.to_vec();
    for (index, pod) in pods.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        let start = out.len();
        serde_json::to_writer(&mut out, pod)?;
        let item = &out[start..];
        if item.starts_with(TYPE_META) {
            // `{"apiVersion":"v1","kind":"Pod",` becomes `{`; a pod of nothing else `{}`.
            let end = start
                + TYPE_META.len()
                + usize::from(out.get(start + TYPE_META.len()) == Some(&b','));
            out.drain(start + 1..end);
        } else {
            out.truncate(start);
            let mut value = serde_json::to_value(pod)?;
            if let Some(fields) = value.as_object_mut() {
                fields.remove("apiVersion");
                fields.remove("kind");
            }
            serde_json::to_writer(&mut out, &value)?;
        }
    }
    out.extend_from_slice(b"]}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    /// A test double of the status store: a list, its generation, and how often it was read.
    #[derive(Default)]
    struct Listed {
        pods: Mutex<(u64, Vec<Pod>)>,
        reads: AtomicUsize,
    }

    impl Listed {
        fn set(&self, generation: u64, names: &[&str]) {
            let pods = names
                .iter()
                .map(|name| Pod {
                    metadata: ObjectMeta {
                        name: Some((*name).to_owned()),
                        ..ObjectMeta::default()
                    },
                    ..Pod::default()
                })
                .collect();
            *self.pods.lock().unwrap() = (generation, pods);
        }
    }

    impl PodsProvider for Listed {
        fn pods(&self) -> Vec<Pod> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.pods.lock().unwrap().1.clone()
        }

        fn generation(&self) -> Option<u64> {
            Some(self.pods.lock().unwrap().0)
        }
    }

    #[test]
    fn the_body_is_encoded_once_per_generation() {
        let (cache, listed) = (PodListCache::default(), Listed::default());
        listed.set(1, &["a"]);
        let first = cache.body(&listed).unwrap();
        assert_eq!(cache.body(&listed).unwrap(), first);
        assert_eq!(
            cache.clone().body(&listed).unwrap(),
            first,
            "clones share it"
        );
        assert_eq!(listed.reads.load(Ordering::SeqCst), 1);
        listed.set(2, &["a", "b"]);
        let second = cache.body(&listed).unwrap();
        assert_eq!(second, encode_pod_list(&listed.pods()).unwrap());
        assert!(String::from_utf8_lossy(&second).contains(r#""name":"b""#));
        assert_eq!(listed.reads.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_provider_without_generations_is_encoded_every_time() {
        let cache = PodListCache::default();
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        let provider = move || {
            counted.fetch_add(1, Ordering::SeqCst);
            vec![Pod::default()]
        };
        let first = cache.body(&provider).unwrap();
        assert_eq!(cache.body(&provider).unwrap(), first);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
