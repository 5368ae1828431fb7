//! Kubernetes names as metric labels: `namespace`, `pod` and `container`, the names people
//! filter dashboards by. Container ids and pod uids stay out (a new series at every restart);
//! the `cgroup` label already tells series apart.
use std::fmt;

use prometheus_client::encoding::{EncodeLabel as _, EncodeLabelSet, LabelSetEncoder};

use crate::event::Labels;

/// Each label is left out when unknown, so cgroups outside Kubernetes keep the label sets
/// they always had.
#[derive(Clone, Debug, Default, Hash, PartialEq, Eq)]
pub struct PodNames {
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
}

impl PodNames {
    pub fn of(labels: Option<&Labels>) -> Self {
        let Some(labels) = labels else {
            return Self::default();
        };
        Self {
            namespace: labels.namespace.clone(),
            pod: labels.pod.clone(),
            container: labels.container.clone(),
        }
    }
}

impl EncodeLabelSet for PodNames {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        for (key, value) in [
            ("namespace", &self.namespace),
            ("pod", &self.pod),
            ("container", &self.container),
        ] {
            if let Some(value) = value {
                (key, value.as_str()).encode(encoder.encode_label())?;
            }
        }
        Ok(())
    }
}
