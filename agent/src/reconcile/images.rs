//! Making a container's image present per its `imagePullPolicy`, as upstream's image manager
//! (`pkg/kubelet/images/image_manager.go`) does: `Never` uses only local images, `IfNotPresent`
//! pulls when absent, `Always` pulls every time; failed pulls back off (10 s doubling to 300 s)
//! and show as `ErrImagePull`, then `ImagePullBackOff` while waiting.
use kernlet_cri::v1;

use super::{backoff::Backoff, state::Nanos, state::Waiting};
use crate::cri::Cri;
use crate::event::{Scoped, go_duration, reason};

/// Outcome of making an image present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Present; the runtime's image reference (digest or id) to create the container from.
    Ready(String),
    /// Not available; the container waits with this reason, and may try again at `retry_at`.
    Waiting {
        waiting: Waiting,
        retry_at: Option<Nanos>,
    },
}

fn waiting(reason: &str, message: String, retry_at: Option<Nanos>) -> ImageOutcome {
    ImageOutcome::Waiting {
        waiting: Waiting {
            reason: reason.to_owned(),
            message,
        },
        retry_at,
    }
}

/// Makes `image` present for a container of pod `uid` with `policy` (`Always`,
/// `IfNotPresent`, `Never`). Pull backoff is per pod and image, as upstream keys it. The
/// container's events are upstream's: `Pulling`, `Pulled`, `Failed`, `BackOff`,
/// `ErrImageNeverPull`.
pub async fn ensure_image(
    runtime: &dyn Cri,
    pulls: &mut Backoff,
    (uid, image, policy): (&str, &str, &str),
    now: Nanos,
    events: &Scoped<'_>,
) -> ImageOutcome {
    let present = match image_ref(runtime, image).await {
        Ok(found) => found,
        Err(error) => {
            let message = format!("failed to inspect image {image:?}: {error}");
            return waiting("ErrImageInspect", message, None);
        }
    };
    match (policy, present) {
        ("Never" | "IfNotPresent", Some((reference, _))) => {
            let message = format!("Container image {image:?} already present on machine");
            events.normal(reason::PULLED, message);
            return ImageOutcome::Ready(reference);
        }
        ("Never", None) => {
            let message =
                format!("Container image {image:?} is not present with pull policy of Never");
            events.warning(reason::ERR_IMAGE_NEVER_PULL, message.clone());
            return waiting("ErrImageNeverPull", message, None);
        }
        _ => {}
    }
    let key = format!("{uid}_{image}");
    if let Some(until) = pulls.blocked_since_update(&key, now) {
        let message = format!("Back-off pulling image {image:?}");
        events.normal(reason::BACK_OFF, message.clone());
        return waiting("ImagePullBackOff", message, Some(until));
    }
    let request = v1::PullImageRequest {
        image: Some(v1::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        ..Default::default()
    };
    events.normal(reason::PULLING, format!("Pulling image {image:?}"));
    let started = tokio::time::Instant::now();
    match runtime.pull_image(request).await {
        Ok(response) => {
            let took = go_duration(started.elapsed());
            // Pulls are not queued here, so the wait is the pull.
            let size = match image_ref(runtime, image).await {
                Ok(Some((_, size))) => format!(" Image size: {size} bytes."),
                _ => String::new(),
            };
            let message = format!(
                "Successfully pulled image {image:?} in {took} ({took} including waiting).{size}"
            );
            events.normal(reason::PULLED, message);
            ImageOutcome::Ready(response.image_ref)
        }
        Err(error) => {
            events.warning(
                reason::FAILED,
                format!("Failed to pull image {image:?}: {error}"),
            );
            pulls.next(&key, now);
            let retry_at = pulls.blocked_since_update(&key, now);
            waiting(
                "ErrImagePull",
                format!("failed to pull image {image:?}: {error}"),
                retry_at,
            )
        }
    }
}

/// The runtime's reference for `image` and its size when it is present locally.
async fn image_ref(
    runtime: &dyn Cri,
    image: &str,
) -> Result<Option<(String, u64)>, crate::cri::CriError> {
    let request = v1::ImageStatusRequest {
        image: Some(v1::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        verbose: false,
    };
    let status = runtime.image_status(request).await?;
    Ok(status.image.map(|i| (i.id, i.size)))
}
