//! `kubeAPIQPS`/`kubeAPIBurst`: every request to the API server takes a token from one bucket,
//! as client-go's rate limiter in the upstream kubelet's client (a watch takes one when it
//! starts, not per event). The event writer has a client of its own limited by
//! `eventRecordQPS`/`eventBurst`, as upstream's separate event client.
//!
//! The limit is a layer of `kube`'s own tower stack: `kube` puts a buffer in front of the stack,
//! whose single worker drives `poll_ready`, so requests queue there in order while the bucket
//! refills and no caller can bypass it.
use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use tokio::time::Sleep;

use crate::clock::TokenBucket;
use crate::config::ApiRate;

/// The layer: one bucket shared by every service it wraps.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    bucket: Arc<Mutex<TokenBucket>>,
}

impl RateLimitLayer {
    /// At most `rate` (a rate of zero: no limit; see [`ApiRate::client`] for `kubeAPIQPS`).
    #[must_use]
    pub fn new(rate: ApiRate) -> Self {
        let bucket = TokenBucket::new(f64::from(rate.qps), rate.burst);
        Self {
            bucket: Arc::new(Mutex::new(bucket)),
        }
    }
}

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            bucket: self.bucket.clone(),
            wait: None,
            permitted: false,
        }
    }
}

/// A service whose readiness waits for a token.
pub struct RateLimited<S> {
    inner: S,
    bucket: Arc<Mutex<TokenBucket>>,
    /// The wait for the token reserved, while the bucket is in debt.
    wait: Option<Pin<Box<Sleep>>>,
    /// A token is held for the next call.
    permitted: bool,
}

impl<S, R> tower::Service<R> for RateLimited<S>
where
    S: tower::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.permitted {
            if self.wait.is_none() {
                let now = tokio::time::Instant::now();
                let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
                let wait = bucket.reserve(now);
                drop(bucket);
                if !wait.is_zero() {
                    self.wait = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
            if let Some(wait) = self.wait.as_mut() {
                if wait.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.wait = None;
            }
            self.permitted = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.permitted = false;
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{Layer, Service};

    use super::*;

    /// A service that answers at once (no API server needed to test the limit).
    struct Echo;

    impl Service<u32> for Echo {
        type Response = u32;
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<u32, Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: u32) -> Self::Future {
            std::future::ready(Ok(request))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_burst_wait_for_the_rate() {
        let layer = RateLimitLayer::new(ApiRate { qps: 5, burst: 3 });
        let mut service = layer.layer(Echo);
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for request in 0..8 {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .unwrap();
            assert_eq!(service.call(request).await.unwrap(), request);
            times.push(start.elapsed());
        }
        // Three at once, then one every 200 ms.
        assert!(times[..3].iter().all(|t| *t == Duration::ZERO), "{times:?}");
        assert_eq!(times[3], Duration::from_millis(200));
        assert_eq!(times[7], Duration::from_secs(1));
    }
}
