//! The OCI side of an image: config, manifest and index JSON (serialised in declaration order,
//! so reproducibly), content-addressed blobs and the image-layout tarball holding them.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::archive::{Node, write_tar};
use super::layer::Layer;
use super::{FORMAT_VERSION, ImageSpec, sha256_hex};

const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// The config's fixed `created` timestamp.
const CREATED: &str = "1970-01-01T00:00:00Z";

const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    media_type: String,
    pub(super) digest: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Manifest {
    schema_version: u32,
    media_type: String,
    pub(super) config: Descriptor,
    pub(super) layers: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Index {
    schema_version: u32,
    media_type: String,
    pub(super) manifests: Vec<Descriptor>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct ImageConfig {
    created: String,
    architecture: String,
    os: String,
    config: RunConfig,
    rootfs: RootFs,
    history: Vec<History>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    working_dir: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct History {
    created: String,
    created_by: String,
}

/// The OCI image-layout tarball for `spec` and its manifest digest.
pub(super) fn image_layout(spec: &ImageSpec, layer: &Layer) -> anyhow::Result<(Vec<u8>, String)> {
    let platform = Platform {
        architecture: oci_architecture()?.to_owned(),
        os: "linux".to_owned(),
    };
    let to_strings = |args: &[&str]| args.iter().map(|&arg| arg.to_owned()).collect::<Vec<_>>();
    let config = ImageConfig {
        created: CREATED.to_owned(),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        config: RunConfig {
            env: to_strings(spec.env),
            entrypoint: spec.entrypoint.map(to_strings),
            cmd: spec.cmd.map(to_strings),
            working_dir: "/".to_owned(),
        },
        rootfs: RootFs {
            kind: "layers".to_owned(),
            diff_ids: vec![layer.digest.clone()],
        },
        history: vec![History {
            created: CREATED.to_owned(),
            created_by: format!("cargo xtask images ({FORMAT_VERSION})"),
        }],
    };
    let config_json = serde_json::to_vec(&config).context("serialising image config")?;
    let config_digest = format!("sha256:{}", sha256_hex(&config_json));

    let manifest = Manifest {
        schema_version: 2,
        media_type: MEDIA_MANIFEST.to_owned(),
        config: descriptor(MEDIA_CONFIG, &config_digest, config_json.len()),
        layers: vec![descriptor(MEDIA_LAYER, &layer.digest, layer.tar.len())],
    };
    let manifest_json = serde_json::to_vec(&manifest).context("serialising image manifest")?;
    let manifest_digest = format!("sha256:{}", sha256_hex(&manifest_json));

    let mut manifest_descriptor = descriptor(MEDIA_MANIFEST, &manifest_digest, manifest_json.len());
    manifest_descriptor.platform = Some(platform);
    manifest_descriptor.annotations = BTreeMap::from([
        (ANNOTATION_IMAGE_NAME.to_owned(), spec.name.to_owned()),
        (
            ANNOTATION_REF_NAME.to_owned(),
            tag_of(spec.name)?.to_owned(),
        ),
    ]);
    let index = Index {
        schema_version: 2,
        media_type: MEDIA_INDEX.to_owned(),
        manifests: vec![manifest_descriptor],
    };
    let index_json = serde_json::to_vec(&index).context("serialising image index")?;

    let blob_path = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let nodes = BTreeMap::from([
        ("blobs".to_owned(), Node::Dir { mode: 0o755 }),
        ("blobs/sha256".to_owned(), Node::Dir { mode: 0o755 }),
        (
            blob_path(&layer.digest),
            Node::File {
                mode: 0o644,
                data: &layer.tar,
            },
        ),
        (
            blob_path(&config_digest),
            Node::File {
                mode: 0o644,
                data: &config_json,
            },
        ),
        (
            blob_path(&manifest_digest),
            Node::File {
                mode: 0o644,
                data: &manifest_json,
            },
        ),
        (
            "index.json".to_owned(),
            Node::File {
                mode: 0o644,
                data: &index_json,
            },
        ),
        (
            "oci-layout".to_owned(),
            Node::File {
                mode: 0o644,
                data: OCI_LAYOUT.as_bytes(),
            },
        ),
    ]);
    let tarball =
        write_tar(&nodes).with_context(|| format!("writing the image layout of {}", spec.name))?;
    Ok((tarball, manifest_digest))
}

fn descriptor(media_type: &str, digest: &str, size: usize) -> Descriptor {
    Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.to_owned(),
        size: size as u64,
        platform: None,
        annotations: BTreeMap::new(),
    }
}

/// The tag of an image name (`registry/repo:tag`).
fn tag_of(name: &str) -> anyhow::Result<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) if !tag.is_empty() => Ok(tag),
        _ => bail!("image name {name} has no tag"),
    }
}

/// The OCI architecture of the host (the busybox copied into the images is the host's).
fn oci_architecture() -> anyhow::Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        "riscv64" => Ok("riscv64"),
        "s390x" => Ok("s390x"),
        "powerpc64" => Ok("ppc64le"),
        other => bail!("no oci architecture name known for host architecture {other}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::images::test_support::{Entry, Parsed, blob, build, image, parse};
    use crate::images::{PAUSE_IMAGE, TEST_IMAGE};

    #[test]
    fn layout_is_valid_oci() {
        let dir = tempfile::tempdir().unwrap();
        for built in build(dir.path()) {
            let Parsed {
                layout,
                index,
                manifest,
                config,
            } = parse(&built);
            let names: Vec<&String> = layout.keys().collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(
                layout["oci-layout"].data,
                br#"{"imageLayoutVersion":"1.0.0"}"#
            );

            let blobs: Vec<(&String, &Entry)> = layout
                .iter()
                .filter(|(path, _)| path.starts_with("blobs/sha256/"))
                .collect();
            assert_eq!(blobs.len(), 3, "{}: manifest, config and layer", built.name);
            for (path, entry) in blobs {
                assert_eq!(entry.kind, tar::EntryType::Regular);
                assert_eq!(
                    path.trim_start_matches("blobs/sha256/"),
                    sha256_hex(&entry.data)
                );
            }

            assert_eq!(index.schema_version, 2);
            assert_eq!(index.manifests.len(), 1);
            let descriptor = &index.manifests[0];
            assert_eq!(descriptor.media_type, MEDIA_MANIFEST);
            assert_eq!(descriptor.digest, built.digest);
            assert_eq!(descriptor.annotations[ANNOTATION_IMAGE_NAME], built.name);
            assert_eq!(descriptor.annotations[ANNOTATION_REF_NAME], "1");
            assert_eq!(descriptor.size, blob(&layout, &built.digest).len() as u64);

            assert_eq!(manifest.schema_version, 2);
            assert_eq!(manifest.media_type, MEDIA_MANIFEST);
            assert_eq!(manifest.config.media_type, MEDIA_CONFIG);
            assert_eq!(manifest.layers.len(), 1);
            let layer = &manifest.layers[0];
            assert_eq!(layer.media_type, MEDIA_LAYER);
            assert_eq!(layer.size, blob(&layout, &layer.digest).len() as u64);
            assert_eq!(config.rootfs.kind, "layers");
            assert_eq!(config.rootfs.diff_ids, vec![layer.digest.clone()]);
            assert_eq!(config.architecture, oci_architecture().unwrap());
            assert_eq!(config.os, "linux");
            assert_eq!(config.config.env, vec!["PATH=/bin".to_owned()]);
        }
    }

    #[test]
    fn image_commands() {
        let dir = tempfile::tempdir().unwrap();
        let images = build(dir.path());
        let test = parse(image(&images, TEST_IMAGE)).config.config;
        assert_eq!(test.entrypoint, None);
        assert_eq!(test.cmd, Some(vec!["/bin/sh".to_owned()]));
        let pause = parse(image(&images, PAUSE_IMAGE)).config.config;
        let entrypoint = pause.entrypoint.unwrap();
        assert_eq!(entrypoint[..2], ["/bin/sh".to_owned(), "-c".to_owned()]);
        assert!(entrypoint[2].contains("trap 'exit 0' TERM INT"));
        assert_eq!(pause.cmd, None);
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of(PAUSE_IMAGE).unwrap(), "1");
        assert_eq!(tag_of("localhost:5000/a/b:v2").unwrap(), "v2");
        assert!(tag_of("localhost:5000/a/b").is_err());
    }
}
